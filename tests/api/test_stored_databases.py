"""Stored Responses through the API on SQLite and on PostgreSQL: text PostgreSQL refuses raw (NUL) and
text beyond the BMP round-trip, and a chain continues on either."""

from __future__ import annotations

import httpx
import openai

from tests.api.scripted import ScriptedBackend, answer


async def test_a_chain_with_odd_text_on_each_database(db_appliance):
    real = db_appliance.services.backend
    db_appliance.services.backend = scripted = ScriptedBackend(answer("Noted \x00 💡."))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=db_appliance.app), base_url="http://appliance/v1")
    client = openai.AsyncOpenAI(
        api_key=db_appliance.tokens["user"], base_url="http://appliance/v1", http_client=http, max_retries=0
    )
    try:
        first = await client.responses.create(model="tiny", input="Keep a\x00b and 𝔘𝔫𝔦")
        second = await client.responses.create(model="tiny", input="Again", previous_response_id=first.id)
        assert [m["content"] for m in scripted.calls[-1].messages] == ["Keep a\x00b and 𝔘𝔫𝔦", "Noted \x00 💡.", "Again"]
        assert (await client.responses.retrieve(second.id)).previous_response_id == first.id
        (item,) = (await client.responses.input_items.list(first.id)).data
        assert item.content[0].text == "Keep a\x00b and 𝔘𝔫𝔦"
    finally:
        db_appliance.services.backend = real
