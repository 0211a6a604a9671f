"""Clients the cluster tests run inside a host's namespace, with the official openai SDK.

`python -m tests.cluster.clients BASE TOKEN MODEL plain N`: N short chat completions, one after another.
`python -m tests.cluster.clients BASE TOKEN MODEL streams K`: K long streams at once; prints `STREAMING` once
every one of them has received content (the moment the test kills a node), then lets each run to its end.
Either prints one JSON line last: per request its id (the audit's `request_id`), its outcome (`completed`, or
`error` with the error's code and HTTP status), when it ended, and the content chunks it received (streams).

The long streams are structured outputs whose one string must be at least `LONG_CHARS` long: the grammar
forbids the closing quote until then, so even the demo model, whose answers are a sentence, streams for
hundreds of tokens, and the test needs no timing to catch them mid-stream.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid

import httpx
import openai

LONG_CHARS = 6000
LONG = {
    "type": "json_schema",
    "json_schema": {
        "name": "story",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"story": {"type": "string", "minLength": LONG_CHARS}},
            "required": ["story"],
            "additionalProperties": False,
        },
    },
}
HELLO = [{"role": "user", "content": "hi"}]


def wait_ready(base: str) -> None:
    for _ in range(480):
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit("never ready")


def request_id(kind: str) -> str:
    """Our own id on each request: the appliance records it (the audit's `request_id`) and answers with it."""
    return f"{kind}-{uuid.uuid4().hex}"


def plain(client: openai.OpenAI, model: str, n: int) -> list[dict]:
    results = []
    for _ in range(n):
        rid = request_id("plain")
        client.chat.completions.create(model=model, messages=HELLO, max_tokens=4, extra_headers={"x-request-id": rid})
        results.append({"id": rid, "outcome": "completed", "at": time.time()})
    return results


def streams(client: openai.OpenAI, model: str, k: int) -> list[dict]:
    results: list[dict] = [{} for _ in range(k)]
    started = threading.Semaphore(0)

    def one(i: int) -> None:
        result = results[i]
        result.update(id=request_id("stream"), chunks=0)
        try:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Tell me a long story."}], stream=True,
                temperature=0, max_tokens=8000, response_format=LONG,  # type: ignore[arg-type]
                extra_headers={"x-request-id": result["id"]},
            )  # fmt: skip
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    result["chunks"] += 1
                    if result["chunks"] == 1:
                        started.release()
            result["outcome"] = "completed"
        except openai.APIError as exc:
            result.update(outcome="error", code=exc.code, status=getattr(exc, "status_code", None))
        finally:
            result["at"] = time.time()
            if result["chunks"] == 0:
                started.release()  # ended before any content: nothing to wait for

    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for _ in threads:
        started.acquire()
    print("STREAMING", flush=True)
    for t in threads:
        t.join()
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("token")
    p.add_argument("model")
    p.add_argument("kind", choices=("plain", "streams"))
    p.add_argument("count", type=int)
    args = p.parse_args()
    wait_ready(args.base)
    client = openai.OpenAI(base_url=args.base + "/v1", api_key=args.token, max_retries=0, timeout=600)
    run = plain if args.kind == "plain" else streams
    print(json.dumps(run(client, args.model, args.count)), flush=True)


if __name__ == "__main__":
    main()
