"""Write a gpt-oss checkpoint in the layout OpenAI published: config.json, MXFP4 experts, bf16 for the rest.

Tests, the benchmark, the demo model and the GPU check all need a model of the real architecture that the
bundle builder converts exactly as it would convert gpt-oss-20b. transformers' `save_pretrained` cannot
make one (it writes dense tensors), so the experts are quantised here: 32-value blocks along the input
dimension, one E8M0 scale byte per block, FP4 E2M1 codes two to a byte (low nibble first).

`write_checkpoint(out, config, state_dict)` takes a transformers `GptOssForCausalLM.state_dict()` (the
demo-model trainer passes its trained weights) or, without one, draws seeded random weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from appliance.demo.tokenizer import HARMONY_SPECIALS, VOCAB_SIZE, write_tokenizer_files

MXFP4_BLOCK = 32
_FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_FP4_MIDPOINTS = torch.tensor([(a + b) / 2 for a, b in zip(_FP4_VALUES, _FP4_VALUES[1:])])

# Model shapes by name. `tiny` keeps tests fast; `demo` is the engine benchmark's size (the trained README
# model keeps its sliding window and experts but narrows it further: `demo.train.SHAPE`);
# `gpu-check` has gpt-oss-20b's layer shapes with fewer layers.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=8,
    ),
    "demo": dict(
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=32,
    ),
    "gpu-check": dict(
        hidden_size=2880,
        intermediate_size=2880,
        num_hidden_layers=4,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=64,
        num_local_experts=32,
        num_experts_per_tok=4,
        sliding_window=128,
    ),
}


def gpt_oss_config(size: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """config.json with the fields of the published gpt-oss checkpoints, at the shapes of `size`."""
    shape = {**SIZES[size], **overrides}
    layers = shape["num_hidden_layers"]
    return {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": HARMONY_SPECIALS["<|return|>"],
        "pad_token_id": HARMONY_SPECIALS["<|endoftext|>"],
        "hidden_act": "silu",
        "initial_context_length": 4096,
        "initializer_range": 0.02,
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        "max_position_embeddings": 131072,
        "experts_per_token": shape["num_experts_per_tok"],
        "output_router_logits": False,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "rope_type": "yarn",
            "truncate": False,
        },
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
        "quantization_config": {
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
        },
        **shape,
    }


def quantize_mxfp4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., out, in] floats -> (blocks uint8 [..., out, in/32, 16], scales uint8 [..., out, in/32]).

    The shared exponent is the smallest that keeps the block's largest magnitude within FP4's 6.0, and each
    value rounds to the nearest E2M1 magnitude.
    """
    if weight.shape[-1] % MXFP4_BLOCK:
        raise ValueError(f"MXFP4 needs an input dimension divisible by {MXFP4_BLOCK}, got {weight.shape[-1]}")
    w = weight.detach().float().contiguous().reshape(*weight.shape[:-1], -1, MXFP4_BLOCK)
    peak = w.abs().amax(dim=-1, keepdim=True).clamp_min(2.0**-126)
    exponent = torch.ceil(torch.log2(peak / 6.0)).clamp(-127, 127)
    scaled = w / torch.exp2(exponent)
    codes = torch.bucketize(scaled.abs(), _FP4_MIDPOINTS).to(torch.uint8)
    codes |= (scaled < 0).to(torch.uint8) << 3
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks.contiguous(), (exponent.squeeze(-1) + 127).to(torch.uint8)


def dequantize_mxfp4(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The inverse of `quantize_mxfp4`: float32 [..., out, in]."""
    codes = torch.stack([blocks & 0x0F, blocks >> 4], dim=-1).reshape(*blocks.shape[:-1], MXFP4_BLOCK).long()
    magnitude = torch.tensor(_FP4_VALUES)[codes & 7]
    values = torch.where(codes >= 8, -magnitude, magnitude) * torch.exp2(scales.float() - 127).unsqueeze(-1)
    return values.reshape(*blocks.shape[:-2], -1)


def mxfp4_round_trip(weight: torch.Tensor) -> torch.Tensor:
    """`weight` [..., out, in] as MXFP4 stores it (for quantisation-aware training and references)."""
    return dequantize_mxfp4(*quantize_mxfp4(weight)).to(weight.dtype)


def random_state_dict(config: Mapping[str, Any], seed: int = 0, std: float = 0.08) -> dict[str, torch.Tensor]:
    """Seeded random weights in transformers' GptOssForCausalLM layout.

    The spread is wider than the usual 0.02 so greedy decoding has clear winners: batching tests compare
    argmaxes and must not sit on near-ties.
    """
    gen = torch.Generator().manual_seed(seed)
    h, ff, e = config["hidden_size"], config["intermediate_size"], config["num_local_experts"]
    q, kv = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]

    def rand(*shape: int, scale: float = std) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    state = {
        "model.embed_tokens.weight": rand(config["vocab_size"], h, scale=1.0),
        "model.norm.weight": 1.0 + rand(h),
        "lm_head.weight": rand(config["vocab_size"], h),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state.update(
            {
                p + "input_layernorm.weight": 1.0 + rand(h),
                p + "post_attention_layernorm.weight": 1.0 + rand(h),
                p + "self_attn.q_proj.weight": rand(q, h),
                p + "self_attn.q_proj.bias": rand(q),
                p + "self_attn.k_proj.weight": rand(kv, h),
                p + "self_attn.k_proj.bias": rand(kv),
                p + "self_attn.v_proj.weight": rand(kv, h),
                p + "self_attn.v_proj.bias": rand(kv),
                p + "self_attn.o_proj.weight": rand(h, q),
                p + "self_attn.o_proj.bias": rand(h),
                p + "self_attn.sinks": rand(config["num_attention_heads"], scale=1.0),
                p + "mlp.router.weight": rand(e, h, scale=0.5),
                p + "mlp.router.bias": rand(e),
                p + "mlp.experts.gate_up_proj": rand(e, h, 2 * ff),
                p + "mlp.experts.gate_up_proj_bias": rand(e, 2 * ff),
                p + "mlp.experts.down_proj": rand(e, ff, h),
                p + "mlp.experts.down_proj_bias": rand(e, h),
            }
        )
    return state


def published_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' layout -> the published one: experts [E, in, out] become MXFP4 [E, out, ...], rest bf16."""
    out = {}
    for name, tensor in state_dict.items():
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            blocks, scales = quantize_mxfp4(tensor.transpose(1, 2))
            out[name + "_blocks"], out[name + "_scales"] = blocks, scales
        else:
            out[name] = tensor.detach().to(torch.bfloat16).contiguous()
    return out


def write_checkpoint(
    out: Path, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None, *, seed: int = 0
) -> Path:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer files into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = published_tensors(state_dict if state_dict is not None else random_state_dict(config, seed))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(dict(config), indent=2))
    generation = {
        "bos_token_id": HARMONY_SPECIALS["<|startoftext|>"],
        "do_sample": True,
        "eos_token_id": [HARMONY_SPECIALS[t] for t in ("<|return|>", "<|endoftext|>", "<|call|>")],
        "pad_token_id": HARMONY_SPECIALS["<|endoftext|>"],
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    write_tokenizer_files(out)
    return out
