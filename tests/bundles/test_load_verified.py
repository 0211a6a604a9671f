"""What is loaded is what was verified: a file swapped in after the check is not the one the engine reads,
and one written in place, or linked or renamed over, while held throws the load away."""

from __future__ import annotations

import os
import threading

import pytest

from appliance.bundles import BundleStore
from appliance.bundles.metadata import BundleError
from appliance.engine import Engine, FinishEvent, GenerationRequest
from appliance.signing import keys
from appliance.signing.dsse import SignatureError


def _generate(engine: Engine) -> int:
    """Completion tokens of a 3-token greedy generation."""
    import asyncio

    async def run() -> int:
        async for event in engine.generate(GenerationRequest(prompt_tokens=[1, 2, 3], max_tokens=3, temperature=0)):
            if isinstance(event, FinishEvent):
                return event.usage.completion_tokens
        return 0

    return asyncio.run(run())


def test_a_model_swapped_after_verification_is_not_the_one_loaded(tmp_path, signed_tiny_bundle, publisher):
    store = BundleStore(tmp_path / "models", workers=2)
    trusted = [keys.load_public_key(publisher[1])]
    store.import_bundle(signed_tiny_bundle, trusted)
    stored = tmp_path / "models" / "tiny" / "1.0.0"
    model = next(p for p in stored.rglob("*.onnx"))
    with pytest.raises(BundleError, match="changed on disk while it was being loaded"):
        with store.loading("tiny", "1.0.0", trusted) as bundle:
            evil = model.with_name("swap")  # the attacker's moment: after the hash, before the load
            evil.write_bytes(b"not the verified model")
            os.replace(evil, model)
            engine = Engine.from_bundle(bundle.path)  # reads the held, verified inode
            try:
                assert _generate(engine) == 3
            finally:
                engine.close()  # and the rename (which could have hidden a write) throws the load away
    assert model.read_bytes() == b"not the verified model"  # the store's file really was replaced
    with pytest.raises(SignatureError, match="model.onnx does not match"), store.loading("tiny", "1.0.0", trusted):
        pass  # and the next load refuses it


def test_a_file_written_in_place_while_held_throws_the_load_away(bundle, data_dir, signer):
    store = BundleStore(data_dir / "models", workers=2)
    trusted = [signer[0].public_key()]
    store.import_bundle(bundle, trusted)
    stored = data_dir / "models" / "gpt-oss-test" / "1.0.0" / "onnx" / "model.onnx"
    with pytest.raises(BundleError, match="changed on disk while it was being loaded"):
        with store.loading("gpt-oss-test", "1.0.0", trusted) as held:
            assert (held.path / "onnx" / "model.onnx").read_bytes() == stored.read_bytes()
            with open(stored, "r+b") as f:
                f.write(b"\0")


def test_a_write_hidden_behind_a_new_link_throws_the_load_away(bundle, data_dir, signer):
    """Same size, mtime set back, and a hard link added: only ctime and the link count show the write, and
    a moved link count no longer excuses a moved ctime."""
    store = BundleStore(data_dir / "models", workers=2)
    trusted = [signer[0].public_key()]
    store.import_bundle(bundle, trusted)
    stored = data_dir / "models" / "gpt-oss-test" / "1.0.0" / "onnx" / "model.onnx"
    with pytest.raises(BundleError, match="model.onnx changed on disk while it was being loaded"):
        with store.loading("gpt-oss-test", "1.0.0", trusted):
            before = stored.stat()
            with open(stored, "r+b") as f:
                first = f.read(1)
                f.seek(0)
                f.write(bytes([first[0] ^ 0xFF]))
            os.utime(stored, ns=(before.st_atime_ns, before.st_mtime_ns))
            os.link(stored, stored.with_name("also"))
            after = stored.stat()
            assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_loads_take_turns_so_one_does_not_throw_another_away(bundle, data_dir, signer):
    """A second load of the same bundle links the same inodes; it waits until the first has removed its
    links, so neither sees the other's links move its files' link counts."""
    store = BundleStore(data_dir / "models", workers=2)
    trusted = [signer[0].public_key()]
    store.import_bundle(bundle, trusted)
    entered, outcome = threading.Event(), []

    def second() -> None:
        with store.loading("gpt-oss-test", "1.0.0", trusted) as held:
            entered.set()
            outcome.append((held.path / "onnx" / "model.onnx").is_file())

    with store.loading("gpt-oss-test", "1.0.0", trusted):
        other = threading.Thread(target=second)
        other.start()
        assert not entered.wait(1.0)  # the second waits for its turn
    other.join()
    assert outcome == [True]
    assert not any((data_dir / "models" / ".load").iterdir())
