"""A small signed bundle (one multi-chunk file) and the keys around it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from appliance.bundles import BundleMetadata, sign_bundle
from appliance.signing import keys

LARGE = 20 * 1024 * 1024 + 123  # more than two hashing chunks, not a multiple of any


def make_bundle(
    folder: Path,
    key: keys.PrivateKey,
    *,
    name: str = "gpt-oss-test",
    version: str = "1.0.0",
    seed: int = 0,
    shard_size: int | None = None,
) -> Path:
    (folder / "onnx").mkdir(parents=True)
    rnd = __import__("random").Random(seed)
    (folder / "onnx" / "model.onnx.data").write_bytes(rnd.randbytes(LARGE))
    (folder / "onnx" / "model.onnx").write_bytes(rnd.randbytes(4096))
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    BundleMetadata(name=name, version=version, variant="tiny", precision="fp32", profile="cpu-fp32").write(folder)
    sign_bundle(folder, key, shard_size=shard_size, workers=2)
    return folder


@pytest.fixture(scope="session")
def signer(tmp_path_factory) -> tuple[keys.PrivateKey, Path, Path]:
    """(private key, private key file, public key file) of a trusted publisher."""
    d = tmp_path_factory.mktemp("keys")
    key = keys.generate_private_key()
    keys.write_private_key(key, d / "publisher.key")
    keys.write_public_key(key.public_key(), d / "publisher.pub")
    return key, d / "publisher.key", d / "publisher.pub"


@pytest.fixture(scope="session")
def template(tmp_path_factory, signer) -> Path:
    return make_bundle(tmp_path_factory.mktemp("tpl") / "bundle", signer[0])


@pytest.fixture
def bundle(tmp_path, template) -> Path:
    """A fresh copy of the signed template bundle, free to tamper with."""
    dest = tmp_path / "bundle"
    shutil.copytree(template, dest)
    return dest


@pytest.fixture
def data_dir(tmp_path, signer) -> Path:
    """An appliance data folder whose trust folder holds the publisher's key."""
    d = tmp_path / "var"
    (d / "trust").mkdir(parents=True)
    shutil.copy(signer[2], d / "trust" / "publisher.pub")
    return d


def store_is_empty(data_dir: Path) -> bool:
    models = data_dir / "models"
    if not models.exists():
        return True
    names = [p for p in models.iterdir() if p.is_dir() and p.name != ".tmp"]
    leftovers = list((models / ".tmp").iterdir()) if (models / ".tmp").exists() else []
    return not names and not [p for p in leftovers if p.name != "state.json"]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))
    os.sync()
