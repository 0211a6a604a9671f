"""The engine loads a bundle and generates with no network at all (inside `unshare -n`)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import clean_env, offline_argv, requires_unshare

SCRIPT = """
import asyncio, sys
from pathlib import Path
from appliance.engine import Engine, GenerationRequest, collect

async def main():
    engine = Engine.from_bundle(Path(sys.argv[1]))
    await engine.health()
    result = await collect(engine.generate(GenerationRequest(
        messages=[{"role": "user", "content": "Hello"}], max_tokens=12, temperature=0)))
    engine.close()
    print(result["finish"].finish_reason, result["finish"].usage.completion_tokens)

asyncio.run(main())
"""


@requires_unshare
def test_a_bundle_serves_tokens_inside_an_air_gap(tiny_bundle, tmp_path):
    env = clean_env(tmp_path, HF_HOME=str(tmp_path / "hf"), HOME=str(tmp_path))
    proc = subprocess.run(
        offline_argv([sys.executable, "-c", SCRIPT, str(tiny_bundle)]),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["length", "12"]
