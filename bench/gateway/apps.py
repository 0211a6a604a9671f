"""The two apps the gateway bench compares, and their set-up: the same shape, with and without the
appliance's auth, policy and audit. The model is a zero-cost stand-in that emits tokens as fast as it can."""

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.api.backend import ModelInfo, coalesce
from appliance.bundles import BundleStore, trusted_keys
from appliance.config import Settings
from appliance.db import make_engine, upgrade
from appliance.engine import FinishEvent, GenerationRequest, TextEvent, Usage
from appliance.serving.deployments import Gateway
from appliance.signing import keys


@serve.deployment(name="standin", ray_actor_options={"num_cpus": 0})
class StandInLLM:
    """Emits `max_tokens` one-token text events at no cost, coalesced exactly as the real LLM replica does."""

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[list]:
        async def events():
            for _ in range(request.max_tokens):
                yield TextEvent("final", "tok ")
            yield FinishEvent("length", Usage(8, request.max_tokens, 0))

        async for chunk in coalesce(events()):
            yield chunk

    async def describe(self) -> dict:
        return {"models": [ModelInfo("standin", "1.0.0", "cpu-fp32", 0)], "stats": {}, "pid": 0}

    async def ready(self) -> bool:
        return True


def full_app(settings: Settings):
    return Gateway.options(ray_actor_options={"num_cpus": 0}).bind(StandInLLM.bind(), settings.model_dump(mode="json"))


bare = FastAPI()


@serve.deployment(name="bare", ray_actor_options={"num_cpus": 0})
@serve.ingress(bare)
class BareIngress:
    """The same hop and streaming shape as the gateway, with no auth, policy or audit."""

    def __init__(self, llm) -> None:
        self.llm = llm.options(stream=True)

    @bare.post("/v1/chat/completions")
    async def chat(self, request: Request):
        body = await request.json()
        gen = GenerationRequest(messages=body["messages"], max_tokens=body.get("max_tokens", 16))
        chunks = self.llm.generate.remote(body["model"], gen)
        if body.get("stream"):

            async def sse():
                async for chunk in chunks:
                    text = "".join(e.text for e in chunk if isinstance(e, TextEvent))
                    yield "data: " + json.dumps({"choices": [{"delta": {"content": text}}]}) + "\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(sse(), media_type="text/event-stream")
        text = []
        async for chunk in chunks:
            text += [e.text for e in chunk if isinstance(e, TextEvent)]
        return JSONResponse({"choices": [{"message": {"content": "".join(text)}}]})


def bare_app():
    return BareIngress.bind(StandInLLM.bind())


def prepare(settings: Settings, policies: Path) -> str:
    """Policies with rate limits out of the way, a migrated database and an admin key."""
    shutil.copytree(policies, settings.policy_dir)
    access = yaml.safe_load((settings.policy_dir / "access.yaml").read_text())
    access["access"]["roles"]["admin"]["rate"] = {"requests_per_minute": 10**7, "tokens_per_minute": 10**9}
    (settings.policy_dir / "access.yaml").write_text(yaml.safe_dump(access))
    upgrade(settings.database_url)
    with Session(make_engine(settings.database_url)) as session:
        token, _ = apikeys.create_key(session, "bench", "admin")
    return token


def install_bundle(settings: Settings, bundle: Path, publisher: keys.PublicKey) -> tuple[str, str]:
    """Trust the bundle's signer, import and activate the bundle; returns an admin key and the model name."""
    meta = json.loads((bundle / "bundle.json").read_text())
    keys.write_public_key(publisher, settings.trust_dir / "publisher.pub")
    store = BundleStore(settings.model_store, workers=2)
    store.import_bundle(bundle, trusted_keys(settings.trust_dir))
    store.activate(meta["name"], meta["version"], trusted_keys(settings.trust_dir))
    with Session(make_engine(settings.database_url)) as session:
        token, _ = apikeys.create_key(session, "bench-e2e", "admin")
    return token, meta["name"]
