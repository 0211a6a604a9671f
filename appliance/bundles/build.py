"""Convert a published gpt-oss checkpoint into a (signed) bundle through the onnxruntime-genai builder.

The export always uses windowed KV caches on the sliding-window layers (`windowed_kv_cache=true`: those layers
keep 128 positions, the kernel evicts in place; ragged rows stay exact when past and present share one buffer,
which is how the engine binds them) and a pruned LM head (`prune_lm_head=true`:
logits for the last position only, so a long prompt does not cost a [tokens x 201,088] matrix). The
o200k vocabulary is copied in so harmony loads with no network. Everything is written to a temporary
folder beside `out` and renamed into place at the end: a failure never leaves a half-written bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance.bundles.metadata import BundleError, BundleMetadata
from appliance.bundles.signing import sign_bundle
from appliance.signing.keys import PrivateKey
from appliance.vocabulary import write_vocabulary


@dataclass(frozen=True)
class BuildProfile:
    """How the builder is invoked for one engine profile; the engine picks its execution provider by name."""

    precision: str
    execution_provider: str
    extra_options: dict[str, str] = field(default_factory=dict)


PROFILES: dict[str, BuildProfile] = {
    "cpu-fp32": BuildProfile("fp32", "cpu"),
    "cpu-int4": BuildProfile("int4", "cpu"),
    "cuda-int4": BuildProfile("int4", "cuda"),
    "cuda-bf16": BuildProfile("bf16", "cuda"),
}
EXPORT_OPTIONS = {"windowed_kv_cache": "true", "prune_lm_head": "true"}
_KNOWN_VARIANTS = {(24, 32): "20b", (36, 128): "120b"}  # (layers, experts) of the published models


class BundleBuildError(BundleError):
    """The checkpoint cannot be converted (wrong layout, builder failure, bad destination)."""


def _checkpoint_config(hf_dir: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((hf_dir / "config.json").read_text())
    except FileNotFoundError:
        raise BundleBuildError(f"{hf_dir} has no config.json (not a Hugging Face checkpoint)") from None
    except (OSError, ValueError) as exc:
        raise BundleBuildError(f"{hf_dir / 'config.json'} cannot be read: {exc}".splitlines()[0]) from None
    if config.get("model_type") != "gpt_oss":
        raise BundleBuildError(f"{hf_dir} is not a gpt-oss checkpoint (model_type {config.get('model_type')!r})")
    if (config.get("quantization_config") or {}).get("quant_method") != "mxfp4":
        raise BundleBuildError(f"{hf_dir} is not in the published MXFP4 layout (quantization_config.quant_method)")
    if not (hf_dir / "tokenizer.json").is_file():
        raise BundleBuildError(f"{hf_dir} has no tokenizer.json")
    _check_head_is_unambiguous(config)
    return config


def _check_head_is_unambiguous(config: dict[str, Any]) -> None:
    """The builder takes any linear layer with vocab_size outputs for the LM head, so a checkpoint whose vocabulary
    is as wide as one of its projections would export logits from that projection's layer, silently wrong (seen
    with a 4,096-token test vocabulary and 64 heads of 64). Published gpt-oss (201,088 tokens) never collides."""
    try:
        heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        widths = {
            "q_proj": heads * head_dim,
            "k_proj and v_proj": kv_heads * head_dim,
            "o_proj": int(config["hidden_size"]),
            "the router": int(config["num_local_experts"]),
        }
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleBuildError(f"config.json lacks a usable gpt-oss shape field ({exc})") from None
    clash = next((name for name, width in widths.items() if width == vocab), None)
    if clash:
        raise BundleBuildError(
            f"vocab_size {vocab} equals the output width of {clash}: the model builder would take "
            "that projection for the LM head"
        )


def _export(hf_dir: Path, dest: Path, profile: BuildProfile) -> None:
    options = [f"{k}={v}" for k, v in {**profile.extra_options, **EXPORT_OPTIONS}.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="genai-cache-") as cache:
        argv = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(dest),
            "-p",
            profile.precision,
            "-e",
            profile.execution_provider,
            "-c",
            cache,
            "--extra_options",
            *options,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not (dest / "model.onnx").is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "no output")
        raise BundleBuildError(f"the model builder failed: {detail[:300]}")


def build_bundle(
    hf_dir: Path,
    out: Path,
    *,
    profile: str,
    name: str,
    version: str,
    key: PrivateKey | None,
    variant: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a bundle for `profile` at `out` (which must not exist) and sign it when `key` is given."""
    if profile not in PROFILES:
        raise BundleBuildError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
    if out.exists():
        raise BundleBuildError(f"{out} already exists; refusing to overwrite it")
    config = _checkpoint_config(hf_dir)
    spec = PROFILES[profile]
    variant = variant or _KNOWN_VARIANTS.get(
        (int(config.get("num_hidden_layers", 0)), int(config.get("num_local_experts", 0))), "custom"
    )
    try:  # validated before minutes of export
        metadata = BundleMetadata(
            name=name, version=version, variant=variant, precision=spec.precision, profile=profile
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BundleBuildError(f"bundle {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    advance = progress or (lambda n: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        _export(hf_dir, work, spec)
        advance(1)
        write_vocabulary(work)
        metadata.write(work)
        advance(1)
        if key is not None:
            sign_bundle(work, key)
        advance(1)
        os.rename(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
