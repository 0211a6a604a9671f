"""`appliance demo`: everything the README's run command needs, on a fresh machine, then `serve`.

Trains (once, cached) and signs the demo model with a local publisher key, trusts that key, imports and
activates the bundle, migrates the database, issues an admin key (printed once; earlier demo keys are
revoked), prints a curl and an `openai` SDK example that work as printed, and serves.

The demo model's code (`appliance.demo`, torch) lives in the checkout only, never in a serving wheel, so
it is imported here when the command runs, and its absence is a one-line error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from appliance.config import Settings

DEMO_KEY_NAME = "demo-admin"


def demo() -> None:
    """Set up the demo model and an admin key, print working examples, and serve."""
    from appliance import admin_actions
    from appliance.bundles import BundleMetadata, BundleStore, trusted_keys
    from appliance.cli.actions import console_actor
    from appliance.cli.serve import serve
    from appliance.config import get_settings
    from appliance.db import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    bundle = _demo_bundle(settings)
    meta = BundleMetadata.read(bundle)
    store = BundleStore(settings.model_store, workers=settings.hash_workers)
    trusted = trusted_keys(settings.trust_dir)
    actor = console_actor()
    if not (settings.model_store / meta.name / meta.version).exists():
        admin_actions.import_bundle(actor, store, bundle, trusted, allow_downgrade=True)
    if store.active().get(meta.name) != meta.version:
        admin_actions.activate_bundle(actor, store, meta.name, meta.version, trusted)
    token = _fresh_admin_key(settings)
    typer.echo(examples(settings, meta.name, token))
    serve()


def _demo_bundle(settings: Settings):
    try:
        from appliance.demo.model import ensure_demo_bundle
    except ImportError as exc:
        raise ApplianceError(
            f"the demo model is not part of this install: run `make run` from a checkout ({exc.name} is missing)"
        ) from exc
    from appliance import admin_actions
    from appliance.cli.actions import console_actor
    from appliance.signing import keys

    key_path = settings.keys_dir / "demo-publisher.key"
    if not key_path.exists():
        key = keys.generate_private_key()
        keys.write_private_key(key, key_path)
        admin_actions.trust_publisher(console_actor(), settings.trust_dir, key.public_key(), "demo-publisher.pub")
    return ensure_demo_bundle(settings.data_dir / "cache" / "demo", keys.load_private_key(key_path))


def _fresh_admin_key(settings: Settings) -> str:
    from sqlalchemy.orm import Session

    from appliance import admin_actions, apikeys
    from appliance.cli.actions import console_actor
    from appliance.db import make_engine

    engine = make_engine(settings.database_url)

    def sessions() -> Session:
        return Session(engine, expire_on_commit=False)

    actor = console_actor()
    with sessions() as session:
        old = [k.key_id for k in apikeys.list_keys(session) if k.name == DEMO_KEY_NAME and k.status == "active"]
    for key_id in old:
        admin_actions.revoke_key(actor, sessions, key_id)
    token, _ = admin_actions.create_key(actor, sessions, DEMO_KEY_NAME, "admin", at=datetime.now(UTC).isoformat())
    return token


def examples(settings: Settings, model: str, token: str) -> str:
    from appliance.demo.conversations import TOOLS

    base = f"http://{settings.host}:{settings.port}"
    return f"""
Admin API key (shown once; earlier demo keys are revoked): {token}

Try it once the server says it is serving:

  curl -s {base}/v1/chat/completions -H "Authorization: Bearer {token}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "{model}", "temperature": 0,
         "messages": [{{"role": "user", "content": "What is the capital of France?"}}]}}'

  .venv/bin/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="{token}")
reply = client.chat.completions.create(model="{model}", temperature=0,
                                       messages=[{{"role": "user", "content": "Who are you?"}}])
print(reply.choices[0].message.content)
tools = {json.dumps(TOOLS)}
call = client.chat.completions.create(model="{model}", tools=tools, temperature=0,
    messages=[{{"role": "user", "content": "What is the weather in Paris?"}}]).choices[0].message.tool_calls[0]
print(call.function.name, call.function.arguments)
PY

Audit log: .venv/bin/appliance audit list   |   verify: .venv/bin/appliance audit verify
"""
