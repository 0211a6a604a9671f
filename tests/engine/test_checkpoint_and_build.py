"""The published-layout fixture and the bundle build: layout, tokenizer ids, refusals, no half-written output."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from appliance.bundles.build import BundleBuildError, build_bundle
from appliance.bundles.metadata import BundleError, BundleMetadata
from appliance.demo.checkpoint import dequantize_mxfp4, quantize_mxfp4
from appliance.engine import load_harmony
from appliance.signing.keys import generate_private_key
from appliance.vocabulary import VOCAB_SHA256


def test_mxfp4_codes_follow_the_published_bit_layout():
    row = torch.tensor([[0.5, -1.0, 6.0, -6.0] + [0.0] * 28])  # block peak 6 -> exponent 0 (scale byte 127)
    blocks, scales = quantize_mxfp4(row)
    assert scales.tolist() == [[127]]
    assert blocks[0, 0, :2].tolist() == [0x1 | 0xA << 4, 0x7 | 0xF << 4]  # low nibble = even element
    assert torch.equal(dequantize_mxfp4(blocks, scales), row)


def test_the_fixture_has_the_published_tensors_and_real_vocabulary(tiny_checkpoint, tiny_bundle):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4" and config["vocab_size"] == 201088
    with safe_open(tiny_checkpoint / "model.safetensors", "pt") as f:
        names = set(f.keys())
        blocks = f.get_tensor("model.layers.0.mlp.experts.gate_up_proj_blocks")
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.bfloat16
    assert blocks.dtype == torch.uint8 and tuple(blocks.shape) == (8, 128, 2, 16)  # [E, 2*ff, hidden/32, 16]
    assert "model.layers.3.mlp.experts.down_proj_scales" in names
    assert not any(n.endswith(("gate_up_proj", "down_proj")) for n in names)

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    encoding = load_harmony(tiny_bundle)
    text = "Hello, wörld! It's 2025.\n\n  def f(x): return x**2  # 日本語 😀<|start|>user<|message|>"
    assert tokenizer.encode(text).ids == encoding.encode(text, allowed_special="all")
    assert tokenizer.get_vocab_size() == 201088


def test_the_bundle_holds_model_vocabulary_and_metadata(tiny_bundle):
    import hashlib

    names = {p.name for p in tiny_bundle.iterdir()}
    assert {
        "model.onnx",
        "model.onnx.data",
        "genai_config.json",
        "tokenizer.json",
        "o200k_base.tiktoken",
        "bundle.json",
    } <= names
    assert hashlib.sha256((tiny_bundle / "o200k_base.tiktoken").read_bytes()).hexdigest() == VOCAB_SHA256
    metadata = BundleMetadata.read(tiny_bundle)
    assert (metadata.architecture, metadata.precision, metadata.profile) == ("gpt-oss", "fp32", "cpu-fp32")


def test_bad_builds_are_refused_before_export_and_leave_nothing(tmp_path, tiny_checkpoint):
    key = generate_private_key()
    cases = {
        "unknown profile": dict(hf_dir=tiny_checkpoint, profile="tpu-fp8", version="1.0.0"),
        "not a semantic version": dict(hf_dir=tiny_checkpoint, profile="cpu-fp32", version="one"),
        "no config.json": dict(hf_dir=tmp_path, profile="cpu-fp32", version="1.0.0"),
    }
    for message, args in cases.items():
        with pytest.raises(BundleError, match=message):
            build_bundle(
                args["hf_dir"], tmp_path / "out", profile=args["profile"], name="t", version=args["version"], key=key
            )
    dense = tmp_path / "dense"
    shutil.copytree(tiny_checkpoint, dense)
    config = json.loads((dense / "config.json").read_text())
    del config["quantization_config"]
    (dense / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleBuildError, match="MXFP4"):
        build_bundle(dense, tmp_path / "out", profile="cpu-fp32", name="t", version="1.0.0", key=key)
    clash = tmp_path / "clash"  # a vocabulary as wide as q_proj: the builder would wire logits to it
    shutil.copytree(tiny_checkpoint, clash)
    config = json.loads((clash / "config.json").read_text())
    config["vocab_size"] = config["num_attention_heads"] * config["head_dim"]
    (clash / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleBuildError, match="equals the output width of q_proj"):
        build_bundle(clash, tmp_path / "out", profile="cpu-fp32", name="t", version="1.0.0", key=key)
    (tmp_path / "exists").mkdir()
    with pytest.raises(BundleBuildError, match="already exists"):
        build_bundle(tiny_checkpoint, tmp_path / "exists", profile="cpu-fp32", name="t", version="1.0.0", key=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clash", "dense", "exists"]


def test_a_builder_failure_is_one_line_and_leaves_no_partial_folder(tmp_path, tiny_checkpoint):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BundleBuildError, match="the model builder failed"):
        build_bundle(broken, tmp_path / "out", profile="cpu-fp32", name="t", version="1.0.0", key=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]
