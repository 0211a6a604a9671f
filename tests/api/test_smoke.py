async def test_chat_round_trip(client, appliance):
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["prompt_tokens"] > 0
