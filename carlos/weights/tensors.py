"""Safetensors tensor data as float32, one block at a time, without torch; and the writer.

Reading trusts only offsets that :func:`carlos.files.header.tensor_table` has checked against
the file. Blocks are whole rows (contiguous bytes), widened to float32 a block at a time, so a
module's weights never need to sit in memory at once as float32. Half precision (``F16``) is widened
by numpy; ``BF16``, which numpy does not know, is the upper half of a float32 and is widened by
viewing it as ``uint16`` and shifting it 16 bits. :func:`write_safetensors` writes F32, F16 or
BF16 files (rounding to nearest even for BF16) for conversions, tests and the benchmark.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from carlos.errors import InvalidInputError, InvalidLoRAFileError
from carlos.files.formats import TensorInfo, show

#: Little-endian numpy dtypes of the float dtypes we read (BF16: raw 16-bit words).
READABLE = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}
_ITEM = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}


def widen(raw: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of raw little-endian data of safetensors ``dtype``."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32, copy=False)


def to_bf16_words(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


class TensorReader:
    """Reads checked tensor entries of one open safetensors file (``data_start``: first data byte)."""

    def __init__(self, path: str | os.PathLike[str], data_start: int) -> None:
        self.path = Path(path)
        self.data_start = int(data_start)
        self._handle: BinaryIO | None = open(self.path, "rb")  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, info: TensorInfo, first: int, count: int) -> np.ndarray:
        """``count`` elements of ``info`` from element ``first``, as float32."""
        return widen(self._raw(info, first, count), info.dtype)

    def _raw(self, info: TensorInfo, first: int, count: int) -> np.ndarray:
        """``count`` elements of ``info`` from element ``first``, as stored (BF16: uint16 words)."""
        if info.dtype not in READABLE:
            raise InvalidLoRAFileError(
                f"tensor {show(info.name)} is stored as {info.dtype}; weight matching reads F16, BF16, F32 and F64 only"
            )
        if self._handle is None:
            raise InvalidInputError(f"the reader of {self.path} is closed")
        item = _ITEM[info.dtype]
        start = info.begin + first * item
        if first < 0 or count < 0 or start + count * item > info.end:
            raise InvalidInputError(f"elements {first}..{first + count} are outside tensor {show(info.name)}")
        raw = np.empty(count, dtype=READABLE[info.dtype])
        self._handle.seek(self.data_start + start)
        got = self._handle.readinto(memoryview(raw).cast("B"))
        if got != count * item:
            raise InvalidLoRAFileError(f"tensor {show(info.name)} ends early: the file changed or is truncated")
        return raw

    def rows(self, info: TensorInfo, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of the tensor seen as a matrix (first axis x the rest flattened)."""
        width = math.prod(info.shape[1:])
        return self._read(info, r0 * width, (r1 - r0) * width).reshape(r1 - r0, width)

    def raw_rows(self, info: TensorInfo, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` as stored (see :func:`widen`): half the memory of float32 for F16/BF16."""
        width = math.prod(info.shape[1:])
        return self._raw(info, r0 * width, (r1 - r0) * width).reshape(r1 - r0, width)

    def whole(self, info: TensorInfo) -> np.ndarray:
        """The whole tensor in its own shape."""
        return self._read(info, 0, math.prod(info.shape)).reshape(info.shape)

    def scalar(self, info: TensorInfo) -> float:
        """A one-element tensor (e.g. a kohya ``alpha``) as a Python float."""
        if math.prod(info.shape) != 1:
            raise InvalidLoRAFileError(f"tensor {show(info.name)} should hold one value, it has shape {info.shape}")
        value = float(self._read(info, 0, 1)[0])
        if not math.isfinite(value):
            raise InvalidLoRAFileError(f"tensor {show(info.name)} is not finite")
        return value


_WRITE = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def write_safetensors(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], *, dtype: str = "F32", metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` (float arrays) as a safetensors file in ``dtype`` (F32, F16 or BF16).

    Written atomically (a temporary file renamed into place); keys are sorted as the
    reference writer does; ``metadata`` values must be strings.
    """
    if dtype not in _WRITE:
        raise InvalidInputError(f"dtype must be one of {', '.join(_WRITE)}, got {dtype!r}")
    meta = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise InvalidInputError("safetensors metadata keys and values must be strings")
    header: dict[str, Any] = {"__metadata__": meta} if meta else {}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], dtype=np.float32)
        data = to_bf16_words(arr) if dtype == "BF16" else arr.astype(_WRITE[dtype])
        blob = np.ascontiguousarray(data).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the reference writer aligns the data section to 8 bytes
    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little"))
        handle.write(text)
        for blob in blobs:
            handle.write(blob)
    os.replace(tmp, out)
    return out
