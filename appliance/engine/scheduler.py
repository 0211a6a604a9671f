"""Iteration-level (continuous) batching: sequences join and leave the running batch at every step.

One worker thread owns the model. Each iteration it drops finished and cancelled rows, admits waiting
sequences while the batch size and the tokens-in-flight budget allow (prefilling them together), then
runs one decode step for every running row. ONNX Runtime releases the GIL while it computes, so the
asyncio side stays responsive; results travel back through a per-sequence callback.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from appliance.engine.sampling import Sampler
from appliance.engine.session import KVBatch, ModelRunner

Deliver = Callable[[str, object], None]  # ("token", id) | ("done", "stop"|"length") | ("error", message)


@dataclass(eq=False)
class Sequence:
    """One request's state inside the scheduler."""

    prompt: list[int]
    max_tokens: int
    stop_ids: frozenset[int]
    sampler: Sampler
    deliver: Deliver
    generated: int = 0
    cached: int = 0
    next_token: int = 0
    cancelled: bool = False
    finished: bool = False

    @property
    def reserved(self) -> int:
        """Tokens this sequence may hold at its longest: what admission budgets for."""
        return len(self.prompt) + self.max_tokens


class Scheduler:
    def __init__(self, runner: ModelRunner, max_batch_size: int, max_tokens_in_flight: int) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_tokens_in_flight = max_tokens_in_flight
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._kv: KVBatch = runner.empty(0)
        self._wake = threading.Condition()
        self._stopping = False
        self.failing = False  # the last step raised; cleared by the next one that succeeds
        self.steps = 0
        self.generated_tokens = 0
        self._thread = threading.Thread(target=self._loop, name="engine-scheduler", daemon=True)
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        with self._wake:
            self._waiting.append(seq)
            self._wake.notify()

    def cancel(self, seq: Sequence) -> None:
        """Mark `seq` for removal; the worker drops it before the next step and before admitting others."""
        with self._wake:
            seq.cancelled = True
            self._wake.notify()

    def stats(self) -> dict[str, int]:
        with self._wake:
            running = [s for s in self._running if not (s.cancelled or s.finished)]
            return {"running": len(running), "waiting": sum(not s.cancelled for s in self._waiting),
                    "max_batch_size": self.max_batch_size,
                    "tokens_in_flight": sum(s.reserved for s in running),
                    "max_tokens_in_flight": self.max_tokens_in_flight,
                    "steps": self.steps, "generated_tokens": self.generated_tokens}

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not self._running:
                    self._wake.wait()
                if self._stopping:
                    break
                keep = [i for i, s in enumerate(self._running) if not (s.cancelled or s.finished)]
                admitted = self._admit(len(keep), sum(self._running[i].reserved for i in keep))
            try:
                self._reshape(keep, admitted)
                if self._running:
                    self._step()
                    self.failing = False
            except Exception as exc:  # noqa: BLE001 - a failed step fails its requests, not the worker
                self.failing = True
                message = f"inference failed: {exc}".splitlines()[0]
                for seq in self._running:
                    seq.finished = True
                    seq.deliver("error", message)
                self._running, self._kv = [], self.runner.empty(0)
        for seq in [*self._running, *self._waiting]:
            seq.deliver("error", "the engine was shut down")

    def _admit(self, running: int, in_flight: int) -> list[Sequence]:
        admitted: list[Sequence] = []
        while self._waiting and running + len(admitted) < self.max_batch_size:
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                continue
            if in_flight + seq.reserved > self.max_tokens_in_flight and (running or admitted):
                break
            admitted.append(self._waiting.popleft())
            in_flight += seq.reserved
        return admitted

    def _reshape(self, keep: list[int], admitted: list[Sequence]) -> None:
        if len(keep) == len(self._running) and not admitted:
            return
        fresh = self.runner.prefill([s.prompt for s in admitted]) if admitted else None
        for seq in admitted:
            seq.cached, seq.next_token = len(seq.prompt) - 1, seq.prompt[-1]
        running = [self._running[i] for i in keep] + admitted
        length = max((s.cached for s in running), default=0)
        self._kv = self.runner.merge(self._kv, keep, fresh, length)
        self._running = running

    def _step(self) -> None:
        logits, self._kv = self.runner.step([s.next_token for s in self._running],
                                            [s.cached for s in self._running], self._kv)
        self.steps += 1
        for row, seq in enumerate(self._running):
            seq.cached += 1
            if seq.cancelled:
                continue
            token = seq.sampler(logits[row])
            seq.next_token = token
            seq.generated += 1
            self.generated_tokens += 1
            seq.deliver("token", token)
            if token in seq.stop_ids or seq.generated >= seq.max_tokens:
                seq.finished = True
                seq.deliver("done", "stop" if token in seq.stop_ids else "length")
