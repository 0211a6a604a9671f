"""Iteration-level (continuous) batching over KV slots, with chunked prefill and admission by KV memory.

One worker thread owns the model. Each iteration it drops finished and cancelled rows (the last row moves into
a freed slot, so decoding rows stay the contiguous slots [0, n)), starts the next waiting prompt when a slot is
free and its KV reservation fits the memory budget, prefills one chunk of that prompt into the slot after the
decoding rows, then runs one decode step for every decoding row. A long prompt therefore delays the others by
one chunk per iteration, never by its whole prefill. ONNX Runtime releases the GIL while it computes, so the
asyncio side stays responsive; results travel back through a per-sequence callback.

A constrained row's token mask is computed on a small thread pool while the forward pass runs (llguidance
releases the GIL), so a step costs max(forward, slowest mask) rather than their sum; each row's mask
depends only on its own tokens, so rows stay independent. A row whose constraint fails ends alone.

A prompt with a cache scope starts from the deepest prefix the prefix cache (prefix.py) holds for it, copied
into its slot at admission, and leaves its whole blocks there as its chunks complete; chunks then end on block
boundaries, where the sliding-window state can be captured.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from appliance.engine.grammar import Guide, TokenMask
from appliance.engine.prefix import BLOCK, PrefixCache, block_keys
from appliance.engine.sampling import Sampler
from appliance.engine.session import ModelRunner
from appliance.engine.types import EngineError

# ("token", (id, Score | None)) | ("done", "stop"|"length") | ("error", message)
Deliver = Callable[[str, object], None]


@dataclass(eq=False)
class Sequence:
    """One request's state inside the scheduler."""

    prompt: list[int]
    max_tokens: int
    stop_ids: frozenset[int]
    sampler: Sampler
    deliver: Deliver
    guide: Guide | None = None
    scope: str | None = None  # the prefix cache's scope; None: this sequence neither reads nor fills it
    generated: int = 0
    cached: int = 0
    hit: int = 0  # prompt positions restored from the prefix cache
    stored: int = 0  # prompt positions whose blocks the prefix cache holds (or that it stopped taking)
    keys: list[bytes] | None = None
    next_token: int = 0
    cancelled: bool = False
    finished: bool = False

    @property
    def reserved(self) -> int:
        """Tokens this sequence may hold at its longest: what admission budgets for."""
        return len(self.prompt) + self.max_tokens

    @property
    def gone(self) -> bool:
        return self.cancelled or self.finished


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        max_batch_size: int,
        capacity: int,
        kv_budget_bytes: int,
        prefill_chunk: int,
        prefix_bytes: int = 0,
    ) -> None:
        self.runner = runner
        self.prefix = PrefixCache(prefix_bytes)
        self.layout = runner.layout
        self.cache = runner.allocate(max_batch_size, capacity)
        self.max_batch_size, self.kv_budget_bytes, self.prefill_chunk = max_batch_size, kv_budget_bytes, prefill_chunk
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []  # decoding; row i is slot i
        self._prefilling: Sequence | None = None  # in slot self._prefill_slot (len(self._running) after compacting)
        self._prefill_slot = 0
        self._wake = threading.Condition()
        self._stopping = False
        self.failing = False  # the last step raised; cleared by the next one that succeeds
        self.steps = 0
        self.generated_tokens = 0
        self._masks = ThreadPoolExecutor(
            max_workers=min(max_batch_size, os.cpu_count() or 1), thread_name_prefix="engine-mask"
        )
        self._thread = threading.Thread(target=self._loop, name="engine-scheduler", daemon=True)
        self._thread.start()

    def reserved_bytes(self, seq: Sequence) -> int:
        return self.layout.bytes_for(min(seq.reserved, self.cache.capacity))

    def submit(self, seq: Sequence) -> None:
        with self._wake:
            self._waiting.append(seq)
            self._wake.notify()

    def cancel(self, seq: Sequence) -> None:
        """Mark `seq` for removal; the worker drops it before the next step and before admitting others."""
        with self._wake:
            seq.cancelled = True
            self._wake.notify()

    def _holding(self) -> list[Sequence]:
        return [s for s in [*self._running, self._prefilling] if s is not None and not s.gone]

    def stats(self) -> dict[str, int]:
        with self._wake:
            holding = self._holding()
            return {
                "running": sum(not s.gone for s in self._running),
                "prefilling": int(self._prefilling is not None and not self._prefilling.gone),
                "waiting": sum(not s.cancelled for s in self._waiting),
                "max_batch_size": self.max_batch_size,
                "tokens_in_flight": sum(s.reserved for s in holding),
                "kv_bytes_in_use": sum(self.layout.bytes_for(s.cached) for s in holding),
                "kv_bytes_reserved": sum(self.reserved_bytes(s) for s in holding),
                "kv_budget_bytes": self.kv_budget_bytes,
                "kv_bytes_allocated": self.cache.bytes_allocated,
                "kv_bytes_cached": self.prefix.bytes,
                "prefix_cache_limit_bytes": self.prefix.limit,
                "prefix_cache_hits": self.prefix.hits,
                "prefix_cache_tokens": self.prefix.tokens_served,
                "prefill_chunk": self.prefill_chunk,
                "steps": self.steps,
                "generated_tokens": self.generated_tokens,
            }

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)
        self._masks.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not self._running and self._prefilling is None:
                    self._wake.wait()
                if self._stopping:
                    break
                self._compact()
                self._admit()
            try:
                if self._prefilling is not None:
                    self._prefill_chunk(self._prefilling)
                if self._running:
                    self._step()
                self.failing = False
            except Exception as exc:  # noqa: BLE001 - a failed step fails its requests, not the worker
                self.failing = True
                message = f"inference failed: {exc}".splitlines()[0]
                with self._wake:
                    for seq in self._holding():
                        seq.finished = True
                        seq.deliver("error", message)
                    self._running, self._prefilling = [], None
        for seq in [*self._holding(), *self._waiting]:
            seq.deliver("error", "the engine was shut down")

    def _compact(self) -> None:
        """Drop rows that are gone, filling each hole with the last row: only that row's slot moves."""
        i = 0
        while i < len(self._running):
            if not self._running[i].gone:
                i += 1
                continue
            last = self._running.pop()
            if i < len(self._running):
                self.cache.move(len(self._running), i, last.cached)
                self._running[i] = last
        if self._prefilling is not None and self._prefilling.gone:
            self._prefilling = None
        if self._prefilling is not None and self._prefill_slot != len(self._running):
            self.cache.move(self._prefill_slot, len(self._running), self._prefilling.cached)
            self._prefill_slot = len(self._running)

    def _admit(self) -> None:
        """Start the next waiting prompt when a slot is free and its KV reservation fits the budget; the prefix
        cache gives way first (its least recently used blocks are evicted), so it never makes a prompt wait."""
        while self._prefilling is None and self._waiting and len(self._running) < self.max_batch_size:
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                continue
            reserved = sum(self.reserved_bytes(s) for s in self._running) + self.reserved_bytes(seq)
            if self._running and reserved > self.kv_budget_bytes:
                return
            self.prefix.evict(self.kv_budget_bytes - reserved)
            self._waiting.popleft()
            self._prefilling, self._prefill_slot = seq, len(self._running)
            seq.cached = seq.hit = seq.stored = 0
            if self.prefix.limit and seq.scope is not None:
                self._restore(seq)
            if seq.cached == len(seq.prompt) - 1:
                self._promote(seq)

    def _restore(self, seq: Sequence) -> None:
        """Copy the deepest cached prefix of `seq`'s prompt (its last token always left to compute) into its slot."""
        assert seq.scope is not None
        seq.keys = block_keys(seq.scope, seq.prompt[: len(seq.prompt) - 1])
        hit = self.prefix.lookup(seq.keys, len(seq.prompt) - 1)
        if hit.tokens:
            window = hit.blocks[-1].window
            self.cache.restore(self._prefill_slot, [b.kv for b in hit.blocks], window or [])
            seq.cached = seq.hit = seq.stored = hit.tokens

    def _promote(self, seq: Sequence) -> None:
        seq.next_token = seq.prompt[-1]
        with self._wake:
            self._running.append(seq)
            self._prefilling = None

    def _prefill_chunk(self, seq: Sequence) -> None:
        start, last = seq.cached, len(seq.prompt) - 1
        end = min(start + self.prefill_chunk, last)
        if seq.keys and end // BLOCK * BLOCK > start:  # end on a block boundary: there the window is captured
            end = end // BLOCK * BLOCK
        self.runner.prefill(self.cache, self._prefill_slot, seq.prompt[start:end], start)
        seq.cached = end
        if seq.keys:
            self._remember(seq, end)
        if end == last:
            self._promote(seq)

    def _remember(self, seq: Sequence, end: int) -> None:
        """Keep the blocks of `seq` that are now whole in its slot; the last one gets the windowed state when the
        chunk ended on its boundary (every block does when the model has no windowed layers)."""
        assert seq.keys is not None
        room = self.kv_budget_bytes - sum(self.reserved_bytes(s) for s in self._holding())
        windowed = any(w is not None for w in self.layout.windows)
        for k in range(seq.stored // BLOCK, min(end // BLOCK, len(seq.keys))):
            key, edge = seq.keys[k], (k + 1) * BLOCK
            kv = [] if key in self.prefix else self.cache.positions(self._prefill_slot, k * BLOCK, edge)
            window = self.cache.window_state(self._prefill_slot, edge) if edge == end or not windowed else None
            if not self.prefix.insert(key, seq.keys[k - 1] if k else None, kv, window, room):
                del seq.keys[k:]  # no room, or the chain was evicted under it: the rest of this prompt is not kept
                return
            seq.stored = edge

    def _step(self) -> None:
        running = list(self._running)
        masks: dict[Sequence, Future[TokenMask]] = {
            s: self._masks.submit(s.guide.mask) for s in running if s.guide is not None and not s.cancelled
        }
        logits = self.runner.step(self.cache, [s.next_token for s in running], [s.cached for s in running])
        self.steps += 1
        for row, seq in enumerate(running):
            seq.cached += 1
            if seq.cancelled:
                continue
            try:
                token, scored = seq.sampler.pick(logits[row], masks[seq].result() if seq in masks else None)
                if seq.guide is not None:
                    seq.guide.accept(token)
            except EngineError as exc:
                seq.finished = True
                seq.deliver("error", str(exc))
                continue
            seq.next_token = token
            seq.generated += 1
            self.generated_tokens += 1
            seq.deliver("token", (token, scored))
            if token in seq.stop_ids or seq.generated >= seq.max_tokens:
                seq.finished = True
                seq.deliver("done", "stop" if token in seq.stop_ids else "length")
