"""The demo model as a signed bundle: trained once, cached, rebuilt only when what it is made from changes.

The cache is keyed by a hash of the training code, the conversations, the checkpoint writer and the seed,
so a stale model is never served and an unchanged one is never retrained. Nothing here touches a
network: the vocabulary comes from an installed wheel and training runs locally.

Two models are made so: the demo chat model (`CHAT`, from `conversations.py`) and the demo classifier
(`CLASSIFIER`, from `safeguard.py`, the stand-in for gpt-oss-safeguard), the second in its own `safeguard/`
folder under the cache.

Layout under `cache_dir` (one model at a time; entries for older keys are removed):

    <key>/checkpoint/          the trained model in the published gpt-oss layout (MXFP4 experts)
    <key>/training.txt         what training reported (steps, loss, exact match)
    <key>/bundle-<signer>/     the cpu-fp32 bundle signed by that key

Every folder appears by rename from a temporary sibling, under an exclusive lock, so concurrent callers
wait for one build and an interrupted one leaves nothing that looks finished.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from appliance.demo import safeguard
from appliance.demo.conversations import VERSION
from appliance.errors import ApplianceError
from appliance.signing.keys import PrivateKey, key_hint

BUNDLE_NAME = "gpt-oss-demo"
BUNDLE_VERSION = "1.0.0"
PROFILE = "cpu-fp32"
_SOURCES = ("train.py", "conversations.py", "checkpoint.py", "tokenizer.py")
_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DemoModel:
    """One trained demo model: its bundle name, the module of its examples, its folder under the cache."""

    bundle_name: str
    examples: str
    folder: str = ""

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*_SOURCES, f"{self.examples}.py")))


CHAT = DemoModel(BUNDLE_NAME, "conversations")
CLASSIFIER = DemoModel(safeguard.BUNDLE_NAME, "safeguard", folder="safeguard")


class DemoModelError(ApplianceError):
    """The demo model cannot be trained or built here."""


def model_key(seed: int | None = None, model: DemoModel = CHAT) -> str:
    """SHA-256 over the demo package's sources that shape the checkpoint, and the seed."""
    from appliance.demo import train

    digest = hashlib.sha256(f"seed={train.SEED if seed is None else seed}\n".encode())
    package = resources.files("appliance.demo")
    for name in model.sources:
        digest.update(name.encode() + b"\0" + package.joinpath(name).read_bytes())
    return digest.hexdigest()


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_checkpoint(entry: Path, model: DemoModel, log: Callable[[str], None]) -> Path:
    try:
        from appliance.demo.checkpoint import write_checkpoint
        from appliance.demo.train import SEED, train
    except ModuleNotFoundError as exc:
        raise DemoModelError(
            f"training the demo model needs the build extra ({exc.name} is missing): pip install 'appliance[build]'"
        ) from exc
    result = train(examples=model.examples, log=log)
    if result.train_exact < 1.0:
        raise DemoModelError(f"{model.bundle_name} did not learn its conversations ({result.summary()})")
    work = entry / f".checkpoint-{uuid.uuid4().hex[:8]}"
    try:
        write_checkpoint(work, result.config, result.state_dict)
        (entry / "training.txt").write_text(f"conversations v{VERSION}, seed {SEED}: {result.summary()}\n")
        work.rename(entry / "checkpoint")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return entry / "checkpoint"


def ensure_demo_bundle(
    cache_dir: Path, key: PrivateKey, *, model: DemoModel = CHAT, log: Callable[[str], None] = lambda line: None
) -> Path:
    """The signed bundle folder of `model`, trained and built on first use, then taken from the cache."""
    from appliance.bundles.build import build_bundle

    digest = model_key(model=model)
    cache_dir = cache_dir / model.folder if model.folder else cache_dir
    with _locked(cache_dir):
        for stale in cache_dir.iterdir():
            if stale.is_dir() and _KEY.fullmatch(stale.name) and stale.name != digest:
                shutil.rmtree(stale)
        entry = cache_dir / digest
        entry.mkdir(exist_ok=True)
        for debris in entry.glob(".*"):  # what a killed build left; nobody else builds while we hold the lock
            shutil.rmtree(debris, ignore_errors=True)
        bundle = entry / f"bundle-{key_hint(key.public_key())[:16]}"
        if bundle.is_dir():
            return bundle
        checkpoint = entry / "checkpoint"
        if not checkpoint.is_dir():
            log(f"training {model.bundle_name} (first run only, about a minute)")
            _train_checkpoint(entry, model, log)
        log(f"converting {model.bundle_name} to a signed {PROFILE} bundle")
        return build_bundle(
            checkpoint, bundle, profile=PROFILE, name=model.bundle_name, version=BUNDLE_VERSION, key=key
        )
