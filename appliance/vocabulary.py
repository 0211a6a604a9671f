"""The o200k vocabulary, shipped inside every bundle so harmony never reaches for the network.

`openai_harmony.load_harmony_encoding` downloads `o200k_base.tiktoken` unless `TIKTOKEN_ENCODINGS_BASE`
names a folder that holds it; servers on air-gapped clusters die at start exactly there. The file comes
from the `bpe-openai` wheel (MIT) at build time and is checked against the SHA-256 harmony itself expects.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from openai_harmony import HarmonyEncoding


VOCAB_FILE = "o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
_ENV_LOCK = threading.Lock()
# tiktoken's o200k_base pre-tokenisation pattern: the tokenizer files of a bundle carry it, and llguidance
# tokenises forced text with it.
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)


class VocabularyError(ApplianceError):
    """The o200k vocabulary is missing or is not the file harmony expects."""


def vocabulary_bytes() -> bytes:
    """`o200k_base.tiktoken` from the bpe-openai wheel, verified."""
    try:
        packed = resources.files("bpe_openai").joinpath("data", f"{VOCAB_FILE}.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise VocabularyError(
            "the bpe-openai==0.1.4 package (it carries the o200k vocabulary) is not installed"
        ) from exc
    data = gzip.decompress(packed)
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise VocabularyError("the o200k vocabulary inside bpe-openai has an unexpected SHA-256")
    return data


def write_vocabulary(folder: Path) -> Path:
    """Write the verified vocabulary file into `folder`."""
    path = folder / VOCAB_FILE
    path.write_bytes(vocabulary_bytes())
    return path


def load_harmony(folder: Path) -> HarmonyEncoding:
    """The harmony gpt-oss encoding, read from `folder/o200k_base.tiktoken` with no network.

    The hash is checked here first so a tampered or truncated file yields our one-line error rather than
    harmony's download attempt; the environment variable is set under a lock because harmony reads it at
    load time only.
    """
    from openai_harmony import HarmonyEncodingName, HarmonyError, load_harmony_encoding

    path = folder / VOCAB_FILE
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise VocabularyError(f"{path} cannot be read: {exc.strerror}") from exc
    if digest != VOCAB_SHA256:
        raise VocabularyError(f"{path} is not the o200k vocabulary (SHA-256 {digest[:12]}...)")
    with _ENV_LOCK:
        previous = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder.resolve())
        try:
            return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        except HarmonyError as exc:
            raise VocabularyError(f"harmony cannot load the vocabulary in {folder}: {exc}".splitlines()[0]) from exc
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_ENCODINGS_BASE", None)
            else:
                os.environ["TIKTOKEN_ENCODINGS_BASE"] = previous


@lru_cache(maxsize=1)
def packaged_harmony() -> HarmonyEncoding:
    """The encoding over the vocabulary in the bpe-openai wheel, for a process that holds no bundle (the
    gateway counts prompt tokens with it); loaded once, on first use."""
    with tempfile.TemporaryDirectory(prefix="o200k-") as folder:
        write_vocabulary(Path(folder))
        return load_harmony(Path(folder))
