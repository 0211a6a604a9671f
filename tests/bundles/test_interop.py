"""Interoperability with OpenSSF's `model-signing` package, both ways, with an ECDSA P-256 key.

model-signing's key method supports elliptic-curve keys only, so Ed25519 bundles (our default) verify
with our tool alone; that is the one documented difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

model_signing = pytest.importorskip("model_signing")

from appliance.bundles import BundleMetadata  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


@pytest.fixture
def ec_keys(tmp_path) -> tuple[Path, Path]:
    run_cli(
        "bundle", "keygen", "--out", str(tmp_path / "ec.key"), "--kind", "ecdsa-p256", data_dir=tmp_path, check=True
    )
    return tmp_path / "ec.key", tmp_path / "ec.key.pub"


def _folder(path: Path) -> Path:
    (path / "onnx").mkdir(parents=True)
    (path / "onnx" / "model.onnx").write_bytes(b"\x08\x07" * 5000)
    BundleMetadata(name="interop", version="1.0.0", variant="tiny", precision="fp32", profile="cpu-fp32").write(path)
    return path


@pytest.mark.parametrize("shards", [None, "4096"])
def test_ours_verifies_with_model_signing(tmp_path, ec_keys, shards):
    folder = _folder(tmp_path / "m")
    args = ["bundle", "sign", str(folder), "--key", str(ec_keys[0])] + (["--shard-size", shards] if shards else [])
    run_cli(*args, data_dir=tmp_path, check=True)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=ec_keys[1]).verify(
        folder, folder / "model.sig"
    )


@pytest.mark.parametrize("shards", [None, 4096])
def test_model_signing_verifies_with_ours(tmp_path, ec_keys, shards):
    folder = _folder(tmp_path / "m")
    hashing = model_signing.hashing.Config()
    if shards:
        hashing = hashing.use_shard_serialization(shard_size=shards)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=ec_keys[0]).set_hashing_config(
        hashing.set_ignored_paths(paths=["model.sig"])
    ).sign(folder, folder / "model.sig")
    out = run_cli("bundle", "verify", str(folder), "--trust", str(ec_keys[1]), data_dir=tmp_path, check=True)
    assert out.stdout.startswith("OK interop 1.0.0")


def test_model_signing_rejects_a_tampered_bundle_of_ours(tmp_path, ec_keys):
    folder = _folder(tmp_path / "m")
    run_cli("bundle", "sign", str(folder), "--key", str(ec_keys[0]), data_dir=tmp_path, check=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="mismatch"):
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=ec_keys[1]).verify(
            folder, folder / "model.sig"
        )
