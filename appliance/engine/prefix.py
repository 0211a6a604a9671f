"""The prefix cache: KV of prompt blocks kept after their sequence ends, found again by a hash chain.

A prompt is cut into blocks of `BLOCK` tokens. Block k's key hashes the scope, block k-1's key and block k's
tokens, so a key names a whole prefix within one scope and no lookup can match across scopes (the scope is
an opaque string the caller computes: an API key id by default). A block holds the full-attention layers'
KV of its own positions; a block at which a prefill chunk ended also holds the sliding-window layers'
state there (what those layers keep of the whole prefix: its last `window` positions). A hit is the deepest
block of the prompt's chain that has such a window, so full layers get the whole prefix and sliding layers
exactly the ring they would hold after prefilling it, wherever inside a window the prefix ends.

Blocks are copied into and out of slots (the slots stay contiguous rows for the batched kernel), counted in
bytes and evicted least-recently-used; evicting a block evicts its descendants, which nothing could reach
any more. Not thread-safe: the scheduler's worker owns it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BLOCK = 16  # tokens per block (vLLM's default): a hit is cut to a multiple of it


def _nbytes(arrays: Sequence[np.ndarray]) -> int:
    return sum(a.nbytes for a in arrays)


@dataclass(eq=False)
class Block:
    parent: bytes | None
    kv: list[np.ndarray]  # full-attention tensors, positions of this block only
    window: list[np.ndarray] | None = None  # windowed tensors' state at this block's end, if captured
    children: set[bytes] = field(default_factory=set)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.kv) + _nbytes(self.window or [])


def block_keys(scope: str, tokens: Sequence[int]) -> list[bytes]:
    """The chain of keys of every whole block of `tokens` in `scope`."""
    keys: list[bytes] = []
    parent = hashlib.sha256(b"scope\0" + scope.encode()).digest()
    for start in range(0, len(tokens) - BLOCK + 1, BLOCK):
        chunk = np.asarray(tokens[start : start + BLOCK], np.int64).tobytes()
        parent = hashlib.sha256(parent + scope.encode() + b"\0" + chunk).digest()
        keys.append(parent)
    return keys


@dataclass
class Hit:
    tokens: int  # prompt positions the blocks cover
    blocks: list[Block]


class PrefixCache:
    """Blocks by key, least recently used first; `limit` bytes at most (0: nothing is kept)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self.hits = 0
        self.tokens_served = 0
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, keys: Sequence[bytes], most: int) -> Hit:
        """The deepest prefix of `keys` held with its window state, at most `most` tokens; marks it used."""
        chain: list[Block] = []
        depth = 0
        for key in keys[: most // BLOCK]:
            block = self._blocks.get(key)
            if block is None:
                break
            chain.append(block)
            if block.window is not None:
                depth = len(chain)
        for key in keys[:depth]:  # root first, so the deepest block is the most recent
            self._blocks.move_to_end(key)
        if depth:
            self.hits += 1
            self.tokens_served += depth * BLOCK
        return Hit(depth * BLOCK, chain[:depth])

    def __contains__(self, key: bytes) -> bool:
        return key in self._blocks

    def insert(
        self, key: bytes, parent: bytes | None, kv: list[np.ndarray], window: list[np.ndarray] | None, room: int
    ) -> bool:
        """Keep a block (or add the window state to one kept), evicting others so the cache stays within
        min(limit, room) bytes; False when it cannot (no room, or its parent is gone)."""
        block = self._blocks.get(key)
        if block is not None and (window is None or block.window is not None):
            self._blocks.move_to_end(key)
            return True
        extra = _nbytes(window or []) + (_nbytes(kv) if block is None else 0)
        cap = min(self.limit, room)
        if extra > cap or (parent is not None and parent not in self._blocks):
            return False
        self.evict(cap - extra, keep=key if block is not None else parent)
        if (parent is not None and parent not in self._blocks) or (block is not None and key not in self._blocks):
            return False
        if block is None:
            self._blocks[key] = Block(parent, kv, window)
            if parent is not None:
                self._blocks[parent].children.add(key)
        else:
            block.window = window
        self._blocks.move_to_end(key)
        self.bytes += extra
        return True

    def evict(self, target: int, keep: bytes | None = None) -> None:
        """Drop least recently used blocks (with their descendants) until at most `target` bytes are held;
        `keep` is dropped last."""
        while self.bytes > max(0, target) and self._blocks:
            key = next(iter(self._blocks))
            if key == keep and len(self._blocks) > 1:
                self._blocks.move_to_end(key)
                key = next(iter(self._blocks))
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        stack = [key]
        while stack:
            gone = stack.pop()
            block = self._blocks.pop(gone, None)
            if block is None:
                continue
            self.bytes -= block.nbytes
            stack.extend(block.children)
            if block.parent is not None and block.parent in self._blocks:
                self._blocks[block.parent].children.discard(gone)
