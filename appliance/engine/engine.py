"""`Engine`: a bundle loaded on ONNX Runtime, serving harmony chat completions as async event streams."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

from appliance.bundles.metadata import BundleMetadata
from appliance.engine.grammar import VOCAB, Guide
from appliance.engine.harmony import HarmonyStream, render_prompt
from appliance.engine.logprobs import token_bytes
from appliance.engine.memory import kv_budget, prefill_chunk_limit, prefix_limit, slot_capacity
from appliance.engine.sampling import Sampler, Score
from appliance.engine.scheduler import Scheduler
from appliance.engine.scheduler import Sequence as _Seq
from appliance.engine.session import ModelLoadError, ModelRunner
from appliance.engine.types import (
    EngineBusy,
    EngineError,
    Event,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    TextEvent,
    ToolCallEvent,
    Usage,
)
from appliance.vocabulary import load_harmony

_CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


class Engine:
    """Continuous-batching gpt-oss generation over one bundle.

    Admission is bounded by `max_batch_size + max_queue` live requests; beyond that `generate` raises
    `EngineBusy` at once instead of queueing without limit. Inside that, the scheduler starts a request when a
    KV slot is free and its KV reservation fits `kv_budget_bytes` (0: half the device's free memory at start).
    A request's slot is released the moment its consumer stops iterating (normal end, `aclose()`, or task
    cancellation). `prefix_cache` sizes the prefix cache (prefix.py): a fraction of the KV budget or bytes,
    0 off, None the default (memory.prefix_limit); only requests that name a `cache_scope` use it.
    """

    def __init__(
        self,
        folder: Path,
        *,
        max_batch_size: int = 8,
        max_tokens_in_flight: int = 65536,
        max_queue: int = 32,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        kv_budget_bytes: int = 0,
        prefill_chunk: int = 512,
        prefix_cache: float | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 0 or max_tokens_in_flight < 2 or prefill_chunk < 1 or kv_budget_bytes < 0:
            raise EngineError(
                "max_batch_size must be >= 1, max_queue >= 0, max_tokens_in_flight >= 2, "
                "prefill_chunk >= 1 and kv_budget_bytes >= 0"
            )
        self.metadata = BundleMetadata.read(folder)
        try:
            genai = json.loads((folder / "genai_config.json").read_text())["model"]
            decoder = genai["decoder"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{folder} has no readable genai_config.json") from exc
        if providers is None:
            providers = _CUDA if self.metadata.profile.startswith("cuda-") else ["CPUExecutionProvider"]
        self.context_length = int(genai.get("context_length", 131072))
        self.encoding = load_harmony(folder)
        self._stop_ids = frozenset(self.encoding.stop_tokens_for_assistant_actions())
        self._call_id = self.encoding.encode("<|call|>", allowed_special="all")[0]
        self._health_prompt = render_prompt(self.encoding, [{"role": "user", "content": "ping"}], [], "low")
        window = (decoder.get("sliding_window") or {}).get("window_size")
        runner = ModelRunner(
            folder / decoder.get("filename", "model.onnx"),
            decoder["num_key_value_heads"],
            decoder["head_size"],
            providers,
            threads,
            window,
        )
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self._vocab_size = runner.vocab_size
        budget = kv_budget_bytes or kv_budget(runner.device)
        capacity = slot_capacity(
            runner.layout, max_batch_size, min(self.context_length, max_tokens_in_flight), budget, runner.device
        )
        if capacity < 2:
            raise EngineError(f"a KV budget of {budget} bytes holds no sequence of {max_batch_size} slots")
        self.max_tokens_in_flight = capacity  # the longest sequence (prompt + max_tokens) one slot holds
        chunk = prefill_chunk_limit(prefill_chunk, capacity, decoder["num_attention_heads"], runner.device)
        try:
            prefix = prefix_limit(prefix_cache, budget, runner.device)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        self._scheduler = Scheduler(runner, max_batch_size, capacity, budget, chunk, prefix)
        self._live = 0
        self._lock = threading.Lock()
        self.idle = threading.Event()  # set while no request is live: what a bundle swap waits for
        self.idle.set()
        self.last_success: float | None = time.time()  # wall time of the last generation that finished

    @classmethod
    def from_bundle(cls, path: Path, **options) -> Engine:
        return cls(Path(path), **options)

    def close(self) -> None:
        self._scheduler.close()

    def stats(self) -> dict[str, int]:
        """Batch occupancy and queue depth, for metrics."""
        return {**self._scheduler.stats(), "live_requests": self._live, "max_queue": self.max_queue}

    @property
    def healthy(self) -> bool:
        return self._scheduler.alive and not self._scheduler.failing and self.last_success is not None

    async def health(self) -> None:
        """Generate one token end to end; raises if the model cannot. Only the replica's own health check
        calls this (one at a time); it is counted among the live requests but never refused for capacity,
        so a full engine is not mistaken for a dead one."""
        request = GenerationRequest(prompt_tokens=self._health_prompt, max_tokens=1, temperature=0)
        async for _ in self._generate(request, bounded=False):
            pass

    def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Stream `TextEvent`/`ToolCallEvent`s, then one `FinishEvent` (raises EngineBusy on first step)."""
        return self._generate(request, bounded=True)

    def _prepare(self, request: GenerationRequest) -> tuple[list[int], Guide | None]:
        """The prompt's tokens and the request's constraint, compiled (a cache hit for a known grammar)."""
        prompt = self._prompt(request)
        if request.logprobs is not None:
            token_bytes()  # the alternatives' bytes: built once, here in a worker thread
        if request.grammar is None:
            return prompt, None
        if self._vocab_size != VOCAB:
            raise EngineError(f"this model's vocabulary ({self._vocab_size} ids) cannot take output constraints")
        return prompt, Guide(request.grammar)

    def _prompt(self, request: GenerationRequest) -> list[int]:
        request.validate()
        if request.prompt_tokens is not None:
            prompt = list(request.prompt_tokens)
        else:
            prompt = render_prompt(self.encoding, request.messages, request.tools, request.reasoning_effort)
        if not prompt:
            raise EngineError("the prompt is empty")
        if any(not 0 <= t < self._vocab_size for t in request.logit_bias):
            raise EngineError(f"logit_bias names a token id outside the vocabulary (0..{self._vocab_size - 1})")
        if len(prompt) + request.max_tokens > self.max_tokens_in_flight:
            raise EngineError(
                f"prompt ({len(prompt)} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the limit of {self.max_tokens_in_flight} tokens"
            )
        return prompt

    def _admit(self, bounded: bool) -> None:
        with self._lock:
            if bounded and self._live >= self.max_batch_size + self.max_queue:
                raise EngineBusy("the engine is busy (batch and queue are full); retry later")
            self._live += 1
            self.idle.clear()

    def _release(self) -> None:
        with self._lock:
            self._live -= 1
            if not self._live:
                self.idle.set()

    async def _generate(self, request: GenerationRequest, bounded: bool) -> AsyncIterator[Event]:
        self._admit(bounded)
        seq: _Seq | None = None
        try:
            # Rendering a large prompt (long tool descriptions) and compiling a grammar take real time: off
            # the event loop.
            prompt, guide = await asyncio.to_thread(self._prepare, request)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

            def deliver(kind: str, value: object) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
                except RuntimeError:  # the consumer's event loop is gone: nobody is listening any more
                    if seq is not None:
                        seq.cancelled = True

            seq = _Seq(
                prompt,
                request.max_tokens,
                self._stop_ids | frozenset(request.stop_token_ids),
                Sampler.of(request),
                deliver,
                guide,
                request.cache_scope,
            )
            stream = HarmonyStream(self.encoding, request.stop, request.logprobs is not None)
            stream.prime(prompt)
            tokens: list[int] = []
            self._scheduler.submit(seq)
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise EngineError(str(value))
                if kind == "done":
                    for event in stream.finish():
                        yield event
                    reason: FinishReason = "length" if value == "length" else "stop"
                    break
                token, score = cast(tuple[int, Score | None], value)  # what "token" carries
                tokens.append(token)
                for event in stream.feed(token, score):
                    yield event
                if stream.stopped:
                    reason = "stop"
                    break
            if reason == "stop" and tokens and tokens[-1] == self._call_id and stream.tool_calls:
                reason = "tool_calls"
            self.last_success = time.time()
            yield FinishEvent(reason, Usage(len(prompt), len(tokens), stream.reasoning_tokens, seq.hit), tuple(tokens))
        finally:
            if seq is not None:
                self._scheduler.cancel(seq)
            self._release()


async def collect(events: AsyncIterator[Event]) -> dict[str, object]:
    """Drain a stream into {channel: text, 'tool_calls': [...], 'finish': FinishEvent} (tests, CLI, health)."""
    out: dict[str, object] = {"analysis": "", "commentary": "", "final": "", "tool_calls": []}
    async for event in events:
        if isinstance(event, TextEvent):
            out[event.channel] = str(out[event.channel]) + event.text
        elif isinstance(event, ToolCallEvent):
            out["tool_calls"].append(event)  # type: ignore[attr-defined]
        else:
            out["finish"] = event
    return out
