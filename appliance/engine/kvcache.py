"""Fixed-capacity KV buffers, one row per batch slot, that the model updates in place.

Every layer's keys and values live in one buffer [slots, kv_heads, positions, head_dim] allocated once.
A step binds rows [0, n) of each buffer as both the layer's past input and its present output
(GroupQueryAttention sees past == present and writes only the new positions, at each row's own length), so
nothing is copied per step. Sliding-window layers of a windowed export hold `window` positions per slot (the
kernel keeps them as a ring); full-attention layers hold the slot's capacity. Rows join by prefilling their own
slot; when a row leaves, the last row moves into its slot, so the running rows stay a contiguous prefix.

On CPU the buffers are numpy arrays (bf16 held as raw uint16): pages are committed only when first written,
so the memory a slot costs is what its longest sequence used, and a move copies only the used positions.
On CUDA they are OrtValues on the device, and a move runs a one-node copy graph over the two slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

_ITEMSIZE: dict[int, int] = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2}
_RAW: dict[int, type] = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.BFLOAT16: np.uint16,
}


@dataclass(frozen=True)
class KVLayout:
    """The KV tensors a model reads: names in input order and, per tensor, its window (None: full attention)."""

    names: tuple[str, ...]
    windows: tuple[int | None, ...]
    kv_heads: int
    head_size: int
    elem_type: int

    @property
    def bytes_per_position(self) -> int:
        """Bytes one cached position costs in one K or V tensor."""
        return self.kv_heads * self.head_size * _ITEMSIZE[self.elem_type]

    def depths(self, tokens: int) -> list[int]:
        """Positions each tensor keeps for `tokens` tokens: full layers all of them, windowed ones the window."""
        return [tokens if w is None else w for w in self.windows]

    def bytes_for(self, tokens: int) -> int:
        """KV bytes a sequence of `tokens` tokens occupies in its slot (what admission reserves)."""
        return sum(self.depths(tokens)) * self.bytes_per_position

    def architecture_need(self, tokens: int) -> int:
        """What the attention pattern itself requires: min(tokens, window) on windowed layers."""
        return sum(tokens if w is None else min(tokens, w) for w in self.windows) * self.bytes_per_position


def copy_graph(elem_type: int) -> bytes:
    """A one-node graph that copies `src` into a bound `dst` on the device (slot moves; the GPU bench's bandwidth)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["src"], ["dst"])],
        "kv_copy",
        [helper.make_tensor_value_info("src", elem_type, None)],
        [helper.make_tensor_value_info("dst", elem_type, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()


class SlotCache:
    """`slots` rows of KV for every tensor of `layout`, full layers `capacity` positions deep."""

    def __init__(self, layout: KVLayout, slots: int, capacity: int, device: str = "cpu") -> None:
        self.layout, self.slots, self.capacity, self.device = layout, slots, capacity, device
        self.depths = layout.depths(capacity)
        shapes = [[slots, layout.kv_heads, depth, layout.head_size] for depth in self.depths]
        self._arrays: list[np.ndarray] = []
        self._values: list[ort.OrtValue] = []
        if device == "cpu":
            self._arrays = [np.zeros(shape, _RAW[layout.elem_type]) for shape in shapes]
            self._ptrs = [a.ctypes.data for a in self._arrays]
        else:
            self._values = [
                ort.OrtValue.ortvalue_from_shape_and_type(shape, layout.elem_type, device) for shape in shapes
            ]
            self._ptrs = [v.data_ptr() for v in self._values]
            self._copier = ort.InferenceSession(
                copy_graph(layout.elem_type), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
        self._row_bytes = [depth * layout.bytes_per_position for depth in self.depths]

    @property
    def bytes_allocated(self) -> int:
        return self.slots * sum(self.depths) * self.layout.bytes_per_position

    def bind(self, binding: ort.IOBinding, start: int, rows: int) -> None:
        """Bind slots [start, start + rows) of every tensor as past input and present output (one buffer)."""
        kind = "cpu" if self.device == "cpu" else "cuda"
        for name, ptr, depth, row in zip(self.layout.names, self._ptrs, self.depths, self._row_bytes):
            shape = [rows, self.layout.kv_heads, depth, self.layout.head_size]
            address = ptr + start * row
            binding.bind_input(name, kind, 0, self.layout.elem_type, shape, address)
            binding.bind_output(
                name.replace("past_key_values.", "present."), kind, 0, self.layout.elem_type, shape, address
            )

    def move(self, src: int, dst: int, used: int) -> None:
        """Copy slot `src` into slot `dst` (`used` positions matter on full layers; windows move whole)."""
        if self._arrays:
            for array, window in zip(self._arrays, self.layout.windows):
                span = slice(None) if window is not None else slice(0, used)
                array[dst, :, span] = array[src, :, span]
            return
        for ptr, depth, row in zip(self._ptrs, self.depths, self._row_bytes):
            shape = [1, self.layout.kv_heads, depth, self.layout.head_size]
            binding = self._copier.io_binding()
            binding.bind_input("src", "cuda", 0, self.layout.elem_type, shape, ptr + src * row)
            binding.bind_output("dst", "cuda", 0, self.layout.elem_type, shape, ptr + dst * row)
            self._copier.run_with_iobinding(binding)

    def _split(self) -> tuple[list[np.ndarray], list[tuple[np.ndarray, int]]]:
        """The CPU buffers: full-attention ones, and windowed ones with their window."""
        if not self._arrays:
            raise ValueError("prefix blocks are copied on CPU buffers only")
        full = [a for a, w in zip(self._arrays, self.layout.windows) if w is None]
        return full, [(a, w) for a, w in zip(self._arrays, self.layout.windows) if w is not None]

    def positions(self, slot: int, start: int, end: int) -> list[np.ndarray]:
        """Copies of positions [start, end) of `slot` on every full-attention tensor."""
        return [a[slot, :, start:end].copy() for a in self._split()[0]]

    def window_state(self, slot: int, length: int) -> list[np.ndarray]:
        """Copies of what each windowed tensor of `slot` holds after `length` tokens. The kernel keeps the last
        min(length, window) positions in order at the front of the row: it appends until the row is full,
        then shifts left by what it appends (measured on the tiny export)."""
        return [a[slot, :, : min(length, w)].copy() for a, w in self._split()[1]]

    def restore(self, slot: int, blocks: list[list[np.ndarray]], window: list[np.ndarray]) -> None:
        """Write consecutive blocks of full-attention positions from position 0, and the windowed state."""
        full, windowed = self._split()
        at = 0
        for block in blocks:
            for array, part in zip(full, block):
                array[slot, :, at : at + part.shape[1]] = part
            at += block[0].shape[1] if block else 0
        for (array, _), part in zip(windowed, window):
            array[slot, :, : part.shape[1]] = part


def layout_of(session: ort.InferenceSession, kv_heads: int, head_size: int, window: int | None) -> KVLayout:
    """The KV layout of a builder export: windowed tensors are those whose past axis is `past_sliding_length`
    (a full-KV export, `windowed_kv_cache=false`, has none and every layer keeps the whole context)."""
    inputs = {i.name: i for i in session.get_inputs()}
    names = sorted(
        (n for n in inputs if n.startswith("past_key_values.")),
        key=lambda n: (int(n.split(".")[1]), n.endswith("value")),
    )
    windowed = [inputs[n].shape[2] == "past_sliding_length" for n in names]
    if any(windowed) and not window:
        raise ValueError("the export has windowed KV but genai_config.json names no window size")
    per_tensor = tuple(window if w else None for w in windowed)
    elem = (
        {
            "tensor(float)": TensorProto.FLOAT,
            "tensor(float16)": TensorProto.FLOAT16,
            "tensor(bfloat16)": TensorProto.BFLOAT16,
        }[inputs[names[0]].type]
        if names
        else TensorProto.FLOAT
    )
    return KVLayout(tuple(names), per_tensor, kv_heads, head_size, elem)
