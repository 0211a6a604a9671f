"""Train the demo gpt-oss on the fixed harmony conversations, on CPU, in about a minute.

The model is transformers' own GptOssForCausalLM with the published config fields and the real
o200k_harmony vocabulary (201,088 ids). These choices make it fast and make it survive conversion:

- **A narrowed vocabulary while training.** The conversations use about 350 distinct ids. Training runs
  the same model class with `vocab_size` set to those ids (embedding and LM-head rows for them only) and
  widens it to 201,088 at the end with zero rows for every other id. A zero LM-head row gives a logit of
  exactly 0, so the loss adds one constant column of log(#other ids) to the narrowed logits: that is the
  full-vocabulary cross-entropy, exactly, without a [tokens x 201,088] matrix per step.
- **Quantisation in the forward pass.** The published layout stores experts as MXFP4 and everything else
  as bf16; every step runs on weights rounded that way (straight-through gradients), so the weights that
  learned the answers are the weights the bundle holds.
- **A margin, not a loss, decides when to stop.** Greedy decoding reproduces a completion exactly when each
  of its tokens is the argmax given the true prefix, so one teacher-forced pass scores every example.
  Training stops once every target token leads every other id (the zero logits included) by `MARGIN`,
  enough that ONNX Runtime's different summation order cannot flip a token. The LM head is then
  multiplied by the smallest power of two (exact in bf16) that makes sampling at temperature 1, the API's
  default, reproduce every memorised answer with probability >= 99.99%: a temperature calibration (at 99%
  the test suite, which samples hundreds of answers at the default temperature, failed now and then).

Hidden size 64 learns the set in about 125 full-batch steps (about a minute). Determinism: one seed,
full-batch steps and ONE thread: with two, MKL's matrix products were measured to differ in the last bit
between runs after ~60 steps, and the runs then part ways. With one thread a machine reproduces its
weights bit for bit (CPUs with other vector units may still round matrix products differently).
"""

from __future__ import annotations

import argparse
import importlib
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from openai_harmony import HarmonyEncoding, Message, Role
from torch.func import functional_call

from appliance.demo.checkpoint import gpt_oss_config, mxfp4_round_trip, write_checkpoint
from appliance.demo.conversations import Example
from appliance.demo.tokenizer import VOCAB_SIZE
from appliance.engine.harmony import render_prompt
from appliance.vocabulary import load_harmony, write_vocabulary

SEED = 0
SHAPE: dict[str, Any] = dict(
    hidden_size=64, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=32
)
STEPS = 200  # the learning rate decays to zero here; training normally stops near 120
LR = 1e-2
WARMUP = 10
MARGIN = 1.0
SAMPLED_EXACT = 0.9999  # per answer: the suite samples hundreds of answers at temperature 1 (0.99 made it flaky)
THREADS = 1  # see the module docstring: more threads are not reproducible
_EXPERT_WEIGHTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


@dataclass
class TrainResult:
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]  # transformers' layout, full vocabulary, already rounded
    steps: int
    loss: float
    margin: float
    sharpen: int
    train_exact: float
    held_out_exact: float
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.steps} steps in {self.seconds:.0f}s: loss {self.loss:.4f}, smallest margin "
            f"{self.margin:.2f}, LM head x{self.sharpen}; "
            f"exact match {self.train_exact:.0%} on the training prompts, "
            f"{self.held_out_exact:.0%} on the held-out prompts"
        )


@dataclass
class Tokens:
    """One example as ids: the prompt the engine renders, then the assistant turn it must produce."""

    prompt: list[int]
    completion: list[int]


def render_example(encoding: HarmonyEncoding, example: Example) -> Tokens:
    """The prompt as the engine renders the request, and the completion as harmony renders the answer."""
    prompt = render_prompt(encoding, example.messages, example.tools, example.effort)
    messages = [Message.from_role_and_content(Role.ASSISTANT, example.analysis).with_channel("analysis")]
    if example.call is not None:
        messages.append(
            Message.from_role_and_content(Role.ASSISTANT, example.call.arguments_json)
            .with_channel("commentary")
            .with_recipient(f"functions.{example.call.name}")
            .with_content_type("<|constrain|>json")
        )
    else:
        messages.append(Message.from_role_and_content(Role.ASSISTANT, example.final).with_channel("final"))
    completion = [t for m in messages for t in encoding.render(m)]
    head = encoding.encode("<|start|>assistant", allowed_special="all")
    completion = completion[len(head) :]  # the prompt already opened the assistant turn
    if example.call is None:  # the turn ends the conversation: <|return|>, not <|end|>
        completion[-1] = encoding.encode("<|return|>", allowed_special="all")[0]
    return Tokens(prompt, completion)


def _rounded(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as the published checkpoint stores them, with straight-through gradients."""
    out = {}
    for name, p in params.items():
        if name.endswith(_EXPERT_WEIGHTS):  # transformers holds [E, in, out]; MXFP4 blocks run along `in`
            q = mxfp4_round_trip(p.detach().transpose(1, 2)).transpose(1, 2)
        else:
            q = p.detach().to(torch.bfloat16).float()
        out[name] = p + (q - p.detach())
    return out


class _Batch:
    """Right-padded narrowed ids, attention mask, targets and the mask of completion positions."""

    def __init__(self, examples: Sequence[Tokens], narrow: dict[int, int]) -> None:
        width = max(len(e.prompt) + len(e.completion) for e in examples) - 1
        self.ids = torch.zeros(len(examples), width, dtype=torch.long)
        self.targets = torch.zeros_like(self.ids)
        self.mask = torch.zeros_like(self.ids)
        self.scored = torch.zeros(len(examples), width, dtype=torch.bool)
        for row, e in enumerate(examples):
            seq = [narrow[t] for t in e.prompt + e.completion]
            n = len(seq) - 1
            self.ids[row, :n] = torch.tensor(seq[:-1])
            self.targets[row, :n] = torch.tensor(seq[1:])
            self.mask[row, :n] = 1
            self.scored[row, len(e.prompt) - 1 : n] = True


def _buckets(examples: Sequence[Tokens], narrow: dict[int, int]) -> list[_Batch]:
    """Short and long examples in separate padded batches: chat prompts are a third the length of prompts
    with tool definitions, and padding them all to the longest wastes a quarter of every step."""
    ordered = sorted(examples, key=lambda e: len(e.prompt) + len(e.completion))
    half = len(ordered) // 2
    return [_Batch(part, narrow) for part in (ordered[:half], ordered[half:]) if part]


def _logits(model: torch.nn.Module, params: dict[str, torch.Tensor], batch: _Batch) -> torch.Tensor:
    return functional_call(model, params, args=(), kwargs={"input_ids": batch.ids, "attention_mask": batch.mask}).logits


def _margin(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Smallest lead of the target logit over every other id, the zero logits of unused ids included."""
    target = logits.gather(1, targets[:, None]).squeeze(1)
    rivals = logits.scatter(1, targets[:, None], -math.inf).amax(dim=1).clamp_min(0.0)
    return float((target - rivals).min())


def _hf_config(config: dict[str, Any], **overrides: Any) -> Any:
    from transformers import GptOssConfig

    fields = {k: v for k, v in config.items() if k not in ("quantization_config", "architectures")}
    hf = GptOssConfig(**{**fields, **overrides})
    hf._attn_implementation = "eager"  # the implementation with attention sinks
    return hf


def _fit(
    model: torch.nn.Module,
    batches: list[_Batch],
    others: float,
    steps: int,
    progress: Callable[[int], None] | None,
    log: Callable[[str], None],
) -> tuple[int, float, float]:
    """Full-batch AdamW until the margin is reached; returns (steps, loss, margin) of the kept weights."""
    params = dict(model.named_parameters())
    optimiser = torch.optim.AdamW(params.values(), lr=LR, weight_decay=0.0, betas=(0.9, 0.95))
    scored = sum(int(b.scored.sum()) for b in batches)
    started, step = time.monotonic(), 0
    while True:
        optimiser.zero_grad(set_to_none=True)
        loss_value, margin = 0.0, math.inf
        for batch in batches:
            logits = _logits(model, _rounded(params), batch)
            picked, targets = logits[batch.scored], batch.targets[batch.scored]
            full = torch.cat([picked, picked.new_full((picked.shape[0], 1), others)], dim=1)
            loss = F.cross_entropy(full, targets, reduction="sum") / scored
            loss.backward()
            loss_value += loss.item()
            margin = min(margin, _margin(picked.detach(), targets))
        if margin >= MARGIN or step == steps:
            return step, loss_value, margin  # the weights just scored are the ones kept
        step += 1
        for group in optimiser.param_groups:
            group["lr"] = LR * min(1.0, step / WARMUP) * (1 - step / (steps + 1))
        optimiser.step()
        if progress:
            progress(1)
        if step % 10 == 0:
            log(f"step {step}: loss {loss_value:.4f}, smallest margin {margin:.2f}, {time.monotonic() - started:.0f}s")


@torch.no_grad()
def _sharpening(model: torch.nn.Module, batches: list[_Batch], others: float) -> int:
    """The smallest power of two that, multiplying the LM head, lets sampling at temperature 1 reproduce every
    memorised answer with probability >= `SAMPLED_EXACT`. Argmaxes and margins' signs do not change, and a
    power of two keeps bf16 weights exact: this only calibrates the model's temperature."""
    params = _rounded(dict(model.named_parameters()))
    runs = [(_logits(model, params, b), b) for b in batches]
    for scale in (1, 2, 4, 8, 16, 32, 64):
        worst = 0.0
        for logits, b in runs:
            full = torch.cat([logits * scale, logits.new_full((*logits.shape[:2], 1), others)], dim=2)
            nll = -full.log_softmax(-1).gather(2, b.targets[..., None]).squeeze(2)
            worst = max(worst, float((nll * b.scored).sum(dim=1).max()))
        if worst <= -math.log(SAMPLED_EXACT):
            return scale
    return scale  # training stopped short (a few `--steps`): the sharpest; the exact-match scores say how far


def train(
    seed: int = SEED,
    *,
    examples: str = "conversations",
    steps: int = STEPS,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train on the conversations of module `appliance.demo.<examples>` (its `training_examples` and
    `held_out_examples`) and return the full-vocabulary, rounded weights with their scores."""
    from transformers import GptOssForCausalLM

    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with tempfile.TemporaryDirectory(prefix="harmony-vocab-") as folder:
            write_vocabulary(Path(folder))
            encoding = load_harmony(Path(folder))
        source = importlib.import_module(f"appliance.demo.{examples}")
        train_set = [render_example(encoding, e) for e in source.training_examples()]
        held_set = [render_example(encoding, e) for e in source.held_out_examples()]
        used = sorted({t for e in train_set for t in e.prompt + e.completion})
        narrow = {t: i for i, t in enumerate(used)}
        config = gpt_oss_config("demo", **SHAPE)
        torch.manual_seed(seed)
        narrowed = _hf_config(config, vocab_size=len(used), pad_token_id=None, eos_token_id=None)
        model = GptOssForCausalLM(narrowed)
        batches, others = _buckets(train_set, narrow), math.log(VOCAB_SIZE - len(used))
        done, loss, margin = _fit(model.train(), batches, others, steps, progress, log)
        sharpen = _sharpening(model, batches, others)
        state = _widen(model, used, sharpen)
        scores = [exact_match(config, state, examples) for examples in (train_set, held_set)]
        result = TrainResult(config, state, done, loss, margin, sharpen, *scores, time.monotonic() - started)
    finally:
        torch.set_num_threads(threads)
    log(f"trained {result.summary()}")
    return result


def _widen(model: torch.nn.Module, used: list[int], sharpen: int) -> dict[str, torch.Tensor]:
    """The narrowed model's rounded weights at 201,088 ids, zero rows for the ids the set never uses."""
    state = {name: q.detach().clone() for name, q in _rounded(dict(model.named_parameters())).items()}
    state["lm_head.weight"] *= sharpen
    index = torch.tensor(used)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        full = torch.zeros(VOCAB_SIZE, state[name].shape[1])
        full[index] = state[name]
        state[name] = full
    return state


@torch.no_grad()
def exact_match(config: dict[str, Any], state: dict[str, torch.Tensor], examples: Sequence[Tokens]) -> float:
    """Share of examples greedy decoding reproduces exactly, on the full-vocabulary model."""
    from transformers import GptOssForCausalLM

    model = GptOssForCausalLM(_hf_config(config))
    model.load_state_dict(state)
    model.eval()
    hits = 0
    for e in examples:
        seq = torch.tensor([e.prompt + e.completion])
        hidden = model.model(input_ids=seq[:, :-1]).last_hidden_state[0, len(e.prompt) - 1 :]
        hits += bool((model.lm_head(hidden).argmax(-1) == seq[0, len(e.prompt) :]).all())
    return hits / max(len(examples), 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the checkpoint (published layout) into this folder")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--examples", choices=("conversations", "safeguard"), default="conversations")
    args = parser.parse_args(argv)
    result = train(args.seed, examples=args.examples, steps=args.steps)
    if args.out:
        write_checkpoint(args.out, result.config, result.state_dict)


if __name__ == "__main__":
    main()
