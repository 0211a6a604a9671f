"""How much KV memory the engine may use, and how deep each slot can be within it.

The default budget is half the device's free memory when the engine starts (the weights are already
loaded by then): the other half stays for activations, other processes and the allocator's slack. On CPU
the slot buffers are committed only as they are written, so the budget limits what running sequences may
reserve; on CUDA the buffers are real allocations, so the slot depth itself is cut to fit the budget.
"""

from __future__ import annotations

import shutil
import subprocess

from appliance.engine.kvcache import KVLayout

FREE_FRACTION = 0.5
PREFIX_FRACTION = 0.25  # of the KV budget the prefix cache may hold by default (CPU)
CPU_ATTENTION_SCRATCH = 2**30


def free_memory(device: str) -> int:
    """Free bytes on `device`: MemAvailable on CPU, nvidia-smi's free memory on CUDA (0 if unknown)."""
    if device == "cpu":
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    proc = subprocess.run(
        [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    try:
        return int(proc.stdout.split()[0]) * 2**20
    except (IndexError, ValueError):
        return 0


def kv_budget(device: str) -> int:
    """The default KV budget in bytes (FREE_FRACTION of free memory; 1 GiB if the device will not say)."""
    return int(free_memory(device) * FREE_FRACTION) or 2**30


def slot_capacity(layout: KVLayout, slots: int, tokens: int, budget: int, device: str) -> int:
    """Positions per slot on full-attention layers: `tokens`, cut on CUDA so `slots` slots fit `budget`."""
    if device == "cpu":
        return tokens
    windowed = layout.bytes_for(0)
    per_token = layout.bytes_for(1) - windowed
    if not per_token:
        return tokens
    return max(0, min(tokens, (budget // slots - windowed) // per_token))


def prefill_chunk_limit(chunk: int, capacity: int, heads: int, device: str) -> int:
    """The prefill chunk actually used: on CPU, GroupQueryAttention allocates its attention scores for the
    whole buffer, [chunk, heads, capacity] fp32, whatever the true length (measured: a 2,047-token prefill at
    64 heads and 65,536 positions asked for 34 GB). The chunk is cut so that scratch stays under 1 GiB."""
    if device != "cpu":
        return chunk
    return max(1, min(chunk, CPU_ATTENTION_SCRATCH // (capacity * heads * 4)))


def prefix_limit(size: float | None, budget: int, device: str) -> int:
    """The prefix cache's bytes: `size` is a fraction of the KV budget (<= 1) or bytes (> 1); None is the
    default, PREFIX_FRACTION on CPU and off on CUDA, where blocks are not copied yet (a size is refused there)."""
    if size is None:
        size = PREFIX_FRACTION if device == "cpu" else 0
    if size < 0 or (size > 1 and size != int(size)):
        raise ValueError("the prefix cache size must be 0 (off), a fraction of the KV budget up to 1, or bytes")
    if size and device != "cpu":
        raise ValueError("the prefix cache copies KV on CPU buffers only: set engine_prefix_cache to 0 on CUDA")
    return int(size * budget) if size <= 1 else int(size)
