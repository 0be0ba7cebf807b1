"""Reading an untrusted safetensors file by hand, before any tensor library touches it.

A safetensors file is an 8-byte little-endian header length, a JSON header (name ->
dtype, shape, data offsets, plus ``__metadata__``) and the data section. This module
owns refusing pickles by name and by content, parsing the header under a size cap
(no duplicate names; only JSON that safetensors itself reads, see :mod:`carlos.files.jsontext`),
checking every entry's dtype, shape and offsets against the bytes actually present (so a
file we accept is one safetensors loads), and scanning float tensors for NaN/inf through a
numpy memory map. :mod:`carlos.files.validate` composes these steps under its limits.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import InvalidLoRAFileError
from carlos.files.formats import TensorInfo, show
from carlos.files.jsontext import loads_strict

Progress = Callable[[int, int], None]

#: Bits per element of every safetensors dtype.
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2": 8,
    "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}
#: Dtypes safetensors names but cannot load into torch (diffusers' loader): refused.
UNLOADABLE_DTYPES = ("F6_E2M3", "F6_E3M2")
_I64 = 1 << 63  # torch holds sizes and element counts in int64 (safetensors in uint64)
_BRIEF = reprlib.Repr()  # bounded reprs of hostile values for messages (a shape may be a million items long)
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxdict, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 2, 6, 4, 40, 40, 30
#: Float dtypes whose values are scanned for NaN/inf, as little-endian numpy dtypes.
_SCANNED = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}
#: 8-bit floats, scanned as bytes: (mask, value) of the non-finite patterns, and NaN's lowest one.
_SCANNED_F8 = {"F8_E4M3": (0x7F, 0x7F, 0x7F), "F8_E5M2": (0x7C, 0x7C, 0x7D), "F8_E4M3FNUZ": (0xFF, 0x80, 0x80)}
_SCANNED_F8 |= {"F8_E5M2FNUZ": (0xFF, 0x80, 0x80), "F8_E8M0": (0xFF, 0xFF, 0xFF)}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


def check_name(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise InvalidLoRAFileError(
            f"{show(name)} is a {suffix} file: those are Python pickles, and loading a pickle can execute "
            "arbitrary code, so CARLoS never opens them. Ask the uploader for a .safetensors export of the LoRA."
        )
    if suffix != ".safetensors":
        raise InvalidLoRAFileError(
            f"only .safetensors LoRA files are accepted, got {show(name)}; ask the uploader for a .safetensors export"
        )


def sniff(head: bytes, tail: bytes, size: int) -> None:
    """Refuse zip (torch.save), tar and pickle content whatever the file is called."""
    if len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return  # starts like safetensors; the header parser decides the rest
    why = ""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        why = "a zip archive, the format torch.save writes (.ckpt/.pt)"
    elif head[257:262] == b"ustar":
        why = "a tar archive, the legacy torch.save format"
    elif len(head) > 1 and head[0] == 0x80 and head[1] <= 5:
        why = f"a Python pickle stream (protocol {head[1]})"
    elif head[:1] in (b"(", b"}", b"]", b"c") and tail.rstrip(b"\n").endswith(b"."):
        why = "a Python pickle stream (text protocol)"
    if why:
        raise InvalidLoRAFileError(
            f"the file content is {why}, not safetensors, even though it is named .safetensors. "
            "Pickles can execute code when loaded, so CARLoS never opens them; ask the uploader "
            "for a real .safetensors export."
        )


def parse_header(handle: Any, size: int, max_header_bytes: int) -> tuple[dict[str, Any], int]:
    """The header JSON object and where the data section starts."""
    if size < 8:
        raise InvalidLoRAFileError(f"the file is truncated: {size} bytes, too short for a safetensors header")
    handle.seek(0)
    length = int.from_bytes(handle.read(8), "little")
    if length == 0 or 8 + length > size:
        raise InvalidLoRAFileError(
            f"the header length field says {length} bytes, beyond the end of the {size}-byte file: the file is truncated or not safetensors"
        )
    if length > max_header_bytes:
        raise InvalidLoRAFileError(f"the header is {length} bytes, more than the {max_header_bytes}-byte limit")
    raw = handle.read(length)
    if not raw.startswith(b"{"):
        raise InvalidLoRAFileError("the header does not start with '{': not a safetensors file")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):  # found in one pass: a header of a million keys is no time bomb
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise InvalidLoRAFileError(f"the header names {show(key)} more than once")
                seen.add(key)
        return out

    try:
        header = loads_strict(raw.decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidLoRAFileError(f"the header is not valid JSON ({str(err)[:200]})") from err
    return header, 8 + length


def tensor_table(header: dict[str, Any], data_len: int, max_tensors: int) -> dict[str, TensorInfo]:
    """Check every entry's dtype, shape and offsets against the data section."""
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > max_tensors:
        raise InvalidLoRAFileError(f"the file has {len(entries)} tensors, more than the limit of {max_tensors}")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in entries.items():
        where = f"tensor {show(name)}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise InvalidLoRAFileError(f"{where} needs dtype, shape and data_offsets in the header")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise InvalidLoRAFileError(f"{where} has an unknown dtype {show(dtype if isinstance(dtype, str) else _BRIEF.repr(dtype), 40)}")
        if dtype in UNLOADABLE_DTYPES:
            raise InvalidLoRAFileError(f"{where} has dtype {dtype}, which PyTorch cannot load; ask for an F16/BF16/F32 export")
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < _I64 for d in shape):
            raise InvalidLoRAFileError(f"{where} has an invalid shape {show(_BRIEF.repr(shape), 80)}")
        span = 1  # the product of the non-zero dims bounds safetensors' count (64 bits, left to right:
        for d in shape:  # [2**40, 2**40, 0] overflows there) and torch's strides ([0, 2**32, 2**32] overflows)
            span *= max(d, 1)
            if span >= _I64:
                raise InvalidLoRAFileError(f"{where} has a shape {show(_BRIEF.repr(shape), 80)} of 2**63 elements or more")
        count = 0 if 0 in shape else span
        if dtype == "F4" and (not shape or shape[-1] % 2):
            raise InvalidLoRAFileError(
                f"{where}: F4 packs two values a byte, so its last dimension must be even, got shape {_BRIEF.repr(shape)}"
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)) or not (
            0 <= offsets[0] <= offsets[1]
        ):
            raise InvalidLoRAFileError(f"{where} has invalid data_offsets {show(_BRIEF.repr(offsets), 80)}")
        begin, end = offsets
        if end > data_len:
            raise InvalidLoRAFileError(
                f"{where} ends at byte {end} of the data section, which has only {data_len} bytes: "
                "the file is truncated or its header is corrupt"
            )
        bits = count * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise InvalidLoRAFileError(
                f"{where}: shape {_BRIEF.repr(shape)} of {dtype} needs {bits / 8:.12g} bytes but its data_offsets span {end - begin}"
            )
        tensors[name] = TensorInfo(name, dtype, tuple(shape), begin, end)
    cursor, previous = 0, None
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin < cursor:
            raise InvalidLoRAFileError(f"tensors {show(previous or '')} and {show(info.name)} overlap in the data")
        if info.begin > cursor:
            raise InvalidLoRAFileError(f"bytes {cursor}-{info.begin} of the data section belong to no tensor")
        cursor, previous = info.end, info.name
    if cursor != data_len:
        raise InvalidLoRAFileError(f"{data_len - cursor} bytes at the end of the data section belong to no tensor")
    return tensors


def read_metadata(header: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``__metadata__``: text keys to text values (safetensors reads nothing else), or absent/null."""
    raw = header.get("__metadata__")
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        raise InvalidLoRAFileError(f"__metadata__ is {_json_kind(raw)}, not an object of text values: safetensors cannot open this file")
    bad = [k for k, v in raw.items() if not isinstance(v, str)]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InvalidLoRAFileError(
            f"metadata {show(bad[0], 60)} is {_json_kind(raw[bad[0]])}{more}, not text: safetensors stores "
            "metadata as text only, so it cannot open this file"
        )
    return dict(raw), []


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def scan_values(path: Path, data_start: int, tensors: dict[str, TensorInfo], chunk_bytes: int, progress: Progress | None) -> None:
    """Refuse a file whose float tensors hold NaN or inf (a diverged or corrupted LoRA)."""
    kinds = _SCANNED.keys() | _SCANNED_F8.keys()
    scanned = sorted((t for t in tensors.values() if t.dtype in kinds and t.end > t.begin), key=lambda t: t.begin)
    if not scanned:
        return
    total, done, bad = sum(t.end - t.begin for t in scanned), 0, []
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(scanned[-1].end,))
    try:
        for info in scanned:
            item = DTYPE_BITS[info.dtype] // 8
            step = max(item, chunk_bytes // item * item)
            for start in range(info.begin, info.end, step):
                stop = min(start + step, info.end)
                problem = _non_finite(data[start:stop], info.dtype)
                finite = problem is None
                if not finite:
                    bad.append(f"{show(info.name)} ({problem})")
                done += (stop if finite else info.end) - start
                if progress is not None:
                    progress(done, total)
                if not finite:
                    break
    finally:
        del data  # closes the map
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise InvalidLoRAFileError(
            f"tensor {', '.join(bad[:3])}{more} contains non-finite values: the LoRA is broken "
            "(training diverged or the file is corrupted); ask the uploader for a working export"
        )


def _non_finite(raw: np.ndarray, dtype: str) -> str | None:
    """ "NaN" or "inf" if the little-endian bytes ``raw`` of ``dtype`` hold one, else None."""
    if dtype in _SCANNED_F8:
        mask, value, nan = _SCANNED_F8[dtype]
        hits = raw[(raw & mask) == value]
        return None if not hits.size else ("NaN" if ((hits & 0x7F) >= (nan & 0x7F)).any() else "inf")
    values = raw.view(_SCANNED[dtype])
    if dtype == "BF16":  # bf16 is the top half of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    if np.isfinite(values).all():
        return None
    return "NaN" if np.isnan(values).any() else "inf"
