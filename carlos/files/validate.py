"""Safe ingestion of uploaded LoRA files: refuse anything unsafe or broken before it is used.

Uploads are untrusted. We accept ``.safetensors`` only and never unpickle: ``.ckpt``/``.pt``
files are pickles, and loading a pickle can run arbitrary code. The safetensors header is
parsed here by hand (8-byte little-endian length + JSON) under size caps, every offset and
shape is checked against the bytes actually present, and float tensors are scanned for
NaN/inf through a numpy memory map, so no tensor library touches a file before it passes.
Format and base-model detection live in :mod:`carlos.files.formats`.

``inspect_lora`` never raises for bad content (the report says ``ok=False`` and why);
``validate_lora`` raises :class:`InvalidLoRAFileError` / :class:`UnsupportedBaseModelError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import (
    InvalidInputError,
    InvalidLoRAFileError,
    UnsupportedBaseModelError,
)
from carlos.files import formats as fmt
from carlos.files.formats import FAMILY_NAMES, TensorInfo, show

logger = logging.getLogger(__name__)

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
#: Float dtypes whose values are scanned for NaN/inf, as little-endian numpy dtypes.
_SCANNED = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
_GiB, _MiB = 1 << 30, 1 << 20
_LIMIT_INTS = ("max_file_bytes", "max_header_bytes", "max_tensors", "scan_chunk_bytes")


@dataclass(frozen=True)
class LoRAFileLimits:
    """What an upload may be: caps that keep a hostile file from exhausting memory or time."""

    max_file_bytes: int = int(1.5 * _GiB)  # real SDXL LoRAs reach ~1 GB
    max_header_bytes: int = 32 * _MiB  # kohya headers with tag metadata are ~100 KB
    max_tensors: int = 20_000  # a full-coverage SDXL LyCORIS file has a few thousand
    scan_values: bool = True  # scan float tensors for NaN/inf
    scan_chunk_bytes: int = 16 * _MiB  # bytes of a tensor looked at per numpy pass
    # cross-attention widths accepted as SDXL: 2048, plus a tiny test model's (e.g. (2048, 96))
    sdxl_context_dims: tuple[int, ...] = (2048,)

    def __post_init__(self) -> None:
        dims = self.sdxl_context_dims
        if not isinstance(dims, tuple) or not dims:
            raise InvalidInputError(f"LoRAFileLimits.sdxl_context_dims must be a non-empty tuple, got {dims!r}")
        for name, value in [(n, getattr(self, n)) for n in _LIMIT_INTS] + [("sdxl_context_dims", d) for d in dims]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"LoRAFileLimits.{name} must hold positive integers, got {value!r}")
        if not isinstance(self.scan_values, bool):
            raise InvalidInputError(f"LoRAFileLimits.scan_values must be True or False, got {self.scan_values!r}")


@dataclass(frozen=True)
class LoRAFileReport:
    """What an uploaded LoRA file is, and whether CARLoS can characterize it."""

    path: str
    original_name: str | None  # the uploader's file name, as given (display only)
    sha256: str | None  # identity: the same bytes are the same LoRA; None if never hashed
    size_bytes: int
    format: str | None = None  # "kohya" | "diffusers" | "loha" | "lokr"
    base_family: str | None = None  # "sdxl" | "sd15" | "sd2" | "flux" | "unknown"
    base_family_reason: str | None = None  # the evidence, e.g. "cross-attention dim 2048"
    n_tensors: int = 0
    n_modules: int = 0  # layers the adapter patches
    rank: int | None = None  # most common rank (None: full-rank LoKr or unknown)
    ranks: tuple[int, ...] = ()  # every rank present, ascending
    components: tuple[str, ...] = ()  # "unet", "te1", "te2", ...
    dtypes: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)  # reviewer fields, parsed
    raw_metadata: dict[str, Any] = field(default_factory=dict)  # __metadata__ as stored
    declared_base: str | None = None  # family the metadata claims
    trigger_words: tuple[str, ...] = ()
    contradictions: tuple[str, ...] = ()  # metadata vs tensors, for the dashboard to flag
    warnings: tuple[str, ...] = ()
    ok: bool = False
    error: str | None = None
    error_type: str | None = None  # "InvalidLoRAFileError" | "UnsupportedBaseModelError"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self), default=str))


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = _MiB) -> str:
    """Hex sha256 of a file, streamed so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)


def safe_filename(user_name: str, max_length: int = 120, fallback: str = "upload") -> str:
    """A file name built from a user-supplied one that is safe to join to a directory.

    Keeps only the last path component, drops control/format characters (e.g. the
    right-to-left override used to fake extensions), normalizes unicode (NFKC), replaces
    characters that are special on some file system, strips leading/trailing dots and
    spaces (no ``..``, no hidden files) and caps the length, keeping the extension.
    """
    if not isinstance(user_name, str):
        raise InvalidInputError(f"file name must be a string, got {type(user_name).__name__}")
    name = unicodedata.normalize("NFKC", user_name).replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = re.sub(r'[<>:"|?*]', "_", name)
    name = re.sub(r"\s+", " ", name).strip(" .")
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    if len(name.encode("utf-8")) > max_length:  # file systems cap names in bytes
        stem, dot, ext = name.rpartition(".")
        if not (dot and stem and len(ext) <= 16):
            stem, ext = name, ""
        budget = max_length - (len(ext.encode("utf-8")) + 1 if ext else 0)
        stem = stem.encode("utf-8")[: max(budget, 1)].decode("utf-8", "ignore").rstrip(" .")
        name = f"{stem}.{ext}" if ext else stem
    return name if name.strip("_") and name.lstrip(".") else fallback


# --- reading -------------------------------------------------------------------------------


def _check_name(name: str) -> None:
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


def _sniff(head: bytes, tail: bytes, size: int) -> None:
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


def _parse_header(handle: Any, size: int, limits: LoRAFileLimits) -> tuple[dict[str, Any], int]:
    """The header JSON object and where the data section starts."""
    if size < 8:
        raise InvalidLoRAFileError(f"the file is truncated: {size} bytes, too short for a safetensors header")
    handle.seek(0)
    length = int.from_bytes(handle.read(8), "little")
    if length == 0 or 8 + length > size:
        raise InvalidLoRAFileError(
            f"the header length field says {length} bytes, beyond the end of the {size}-byte file: the file is truncated or not safetensors"
        )
    if length > limits.max_header_bytes:
        raise InvalidLoRAFileError(f"the header is {length} bytes, more than the {limits.max_header_bytes}-byte limit")
    raw = handle.read(length)
    if not raw.startswith(b"{"):
        raise InvalidLoRAFileError("the header does not start with '{': not a safetensors file")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise InvalidLoRAFileError(f"the header names {show(dup)} more than once")
        return dict(pairs)

    def no_constants(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=unique, parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InvalidLoRAFileError(f"the header is not valid JSON ({str(err)[:200]})") from err
    return header, 8 + length


def _tensor_table(header: dict[str, Any], data_len: int, limits: LoRAFileLimits) -> dict[str, TensorInfo]:
    """Check every entry's dtype, shape and offsets against the data section."""
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > limits.max_tensors:
        raise InvalidLoRAFileError(f"the file has {len(entries)} tensors, more than the limit of {limits.max_tensors}")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in entries.items():
        where = f"tensor {show(name)}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise InvalidLoRAFileError(f"{where} needs dtype, shape and data_offsets in the header")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BITS:
            raise InvalidLoRAFileError(f"{where} has an unknown dtype {show(str(dtype), 40)}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidLoRAFileError(f"{where} has an invalid shape {show(str(shape), 80)}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)) or not (
            0 <= offsets[0] <= offsets[1]
        ):
            raise InvalidLoRAFileError(f"{where} has invalid data_offsets {show(str(offsets), 80)}")
        begin, end = offsets
        if end > data_len:
            raise InvalidLoRAFileError(
                f"{where} ends at byte {end} of the data section, which has only {data_len} bytes: "
                "the file is truncated or its header is corrupt"
            )
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise InvalidLoRAFileError(
                f"{where}: shape {shape} of {dtype} needs {bits / 8:.12g} bytes but its data_offsets span {end - begin}"
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


def _read_metadata(header: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    raw = header.get("__metadata__", {})
    if not isinstance(raw, dict):
        return {}, ["__metadata__ is not a JSON object; ignored"]
    bad = [k for k, v in raw.items() if not isinstance(v, str)]
    return dict(raw), [f"metadata {show(k, 60)} is not a string; kept as stored" for k in bad[:5]]


def _scan_values(path: Path, data_start: int, tensors: dict[str, TensorInfo], limits: LoRAFileLimits, progress: Progress | None) -> None:
    """Refuse a file whose float tensors hold NaN or inf (a diverged or corrupted LoRA)."""
    scanned = sorted((t for t in tensors.values() if t.dtype in _SCANNED and t.end > t.begin), key=lambda t: t.begin)
    if not scanned:
        return
    total, done, bad = sum(t.end - t.begin for t in scanned), 0, []
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(scanned[-1].end,))
    try:
        for info in scanned:
            item = DTYPE_BITS[info.dtype] // 8
            step = max(item, limits.scan_chunk_bytes // item * item)
            for start in range(info.begin, info.end, step):
                stop = min(start + step, info.end)
                values = data[start:stop].view(_SCANNED[info.dtype])
                if info.dtype == "BF16":  # bf16 is the top half of a float32
                    values = (values.astype(np.uint32) << 16).view(np.float32)
                finite = bool(np.isfinite(values).all())
                if not finite:
                    bad.append(f"{show(info.name)} ({'NaN' if np.isnan(values).any() else 'inf'})")
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


# --- the API -------------------------------------------------------------------------------


def inspect_lora(
    path: str | os.PathLike[str],
    limits: LoRAFileLimits = LoRAFileLimits(),
    *,
    original_name: str | None = None,
    progress: Progress | None = None,
) -> LoRAFileReport:
    """Everything we can safely learn about a LoRA file; never raises for bad content.

    ``original_name`` is the uploader's file name when the file was stored under another
    one; the extension check uses it. Raises InvalidInputError only for a missing path.
    """
    report, _ = _examine(Path(path), limits, original_name, progress)
    return report


def validate_lora(
    path: str | os.PathLike[str],
    limits: LoRAFileLimits = LoRAFileLimits(),
    *,
    original_name: str | None = None,
    progress: Progress | None = None,
) -> LoRAFileReport:
    """The report of a file CARLoS can characterize; raises when it cannot.

    Raises InvalidLoRAFileError (unsafe or malformed) or UnsupportedBaseModelError (not SDXL).
    Contradictions between metadata and tensors do not raise: the tensors decide.
    """
    report, error = _examine(Path(path), limits, original_name, progress)
    if error is not None:
        raise error
    return report


def _examine(
    path: Path, limits: LoRAFileLimits, original_name: str | None, progress: Progress | None
) -> tuple[LoRAFileReport, InvalidLoRAFileError | None]:
    if not isinstance(limits, LoRAFileLimits):
        raise InvalidInputError(f"limits must be a LoRAFileLimits, got {type(limits).__name__}")
    if not path.is_file():
        raise InvalidInputError(f"no LoRA file at {path}")
    found: dict[str, Any] = {
        "path": str(path),
        "original_name": original_name,
        "sha256": None,
        "size_bytes": path.stat().st_size,
    }
    warnings: list[str] = []
    try:
        _inspect_into(found, warnings, path, limits, original_name, progress)
        error = None
    except InvalidLoRAFileError as err:
        error = err
    except OSError as err:
        error = InvalidLoRAFileError(f"the file could not be read: {err.strerror or err}")
        error.__cause__ = err
    if error is not None:
        logger.info("refused LoRA file %s: %s", path, error)
        found.update(ok=False, error=str(error), error_type=type(error).__name__)
    else:
        found["ok"] = True
    return LoRAFileReport(**found, warnings=tuple(warnings)), error


def _inspect_into(
    found: dict[str, Any],
    warnings: list[str],
    path: Path,
    limits: LoRAFileLimits,
    original_name: str | None,
    progress: Progress | None,
) -> None:
    """Fill ``found`` step by step, so a refusal still reports what was learned before it."""
    size = found["size_bytes"]
    _check_name(original_name if original_name is not None else path.name)
    if size == 0:
        raise InvalidLoRAFileError("the file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise InvalidLoRAFileError(f"the file is {size / _MiB:.1f} MiB, larger than the {limits.max_file_bytes / _MiB:.1f} MiB limit")
    found["sha256"] = sha256_file(path)
    with open(path, "rb") as handle:
        head = handle.read(512)
        handle.seek(max(0, size - 16))
        _sniff(head, handle.read(16), size)
        header, data_start = _parse_header(handle, size, limits)
    tensors = _tensor_table(header, size - data_start, limits)
    raw_meta, meta_warnings = _read_metadata(header)
    warnings += meta_warnings
    found.update(n_tensors=len(tensors), raw_metadata=raw_meta, dtypes=tuple(sorted({t.dtype for t in tensors.values()})))
    keys = fmt.analyse_keys(tensors)
    warnings += keys.warnings
    ranks = [m.rank for m in keys.modules if m.rank is not None]
    found.update(
        format=keys.format,
        n_modules=len(keys.modules),
        ranks=tuple(sorted(set(ranks))),
        rank=max(sorted(set(ranks)), key=ranks.count) if ranks else None,
        components=tuple(sorted({m.component for m in keys.modules})),
    )
    guess = fmt.detect_base_family(keys.modules, limits.sdxl_context_dims)
    warnings += [f"tensor shapes disagree: {note}" for note in guess.notes]
    summary, summary_warnings = fmt.summarize_metadata(raw_meta)
    warnings += summary_warnings
    declared, source, contradictions = fmt.declared_base(raw_meta)
    if declared not in (None, "unknown") and declared != guess.family:
        detected = FAMILY_NAMES[guess.family] if guess.family != "unknown" else "not recognisable as any base model"
        contradictions.append(f"metadata declares {FAMILY_NAMES[declared]} ({source}) but the tensors are {detected} ({guess.reason})")
    dim = summary.get("ss_network_dim")
    if isinstance(dim, int) and found["ranks"] and dim not in found["ranks"]:
        ranks_text = ", ".join(map(str, found["ranks"]))
        contradictions.append(f"metadata declares network dim {dim} but the tensors have rank(s) {ranks_text}")
    found.update(
        base_family=guess.family,
        base_family_reason=guess.reason,
        metadata=summary,
        declared_base=declared,
        trigger_words=tuple(fmt.suggest_trigger_words(summary)),
        contradictions=tuple(contradictions),
    )
    if guess.family != "sdxl":
        if guess.family == "unknown":
            claim = "; its metadata claims SDXL but the tensors do not match SDXL" if declared == "sdxl" else ""
            message = f"could not recognise this LoRA's base model ({guess.reason}{claim})"
        else:
            message = f"this LoRA was trained for {FAMILY_NAMES[guess.family]} ({guess.reason})"
        raise UnsupportedBaseModelError(message + "; CARLoS characterizes SDXL LoRAs only")
    if limits.scan_values:
        _scan_values(path, data_start, tensors, limits, progress)
