"""Safe ingestion of uploaded LoRA files: refuse anything unsafe or broken before it is used.

Uploads are untrusted. We accept ``.safetensors`` only and never unpickle: ``.ckpt``/``.pt``
files are pickles, and loading a pickle can run arbitrary code. This module owns the
limits an upload must respect (:class:`LoRAFileLimits`), the report of what a file is
(:class:`LoRAFileReport`) and the order of the checks. Reading the header by hand, under
those caps, is :mod:`carlos.files.header`; format, base-model and metadata detection are
:mod:`carlos.files.formats`, :mod:`carlos.files.base_model` and :mod:`carlos.files.metadata`.

``inspect_lora`` never raises for bad content (the report says ``ok=False`` and why);
``validate_lora`` raises :class:`InvalidLoRAFileError` / :class:`UnsupportedBaseModelError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from carlos.errors import (
    InvalidInputError,
    InvalidLoRAFileError,
    UnsupportedBaseModelError,
)
from carlos.files.base_model import FAMILY_NAMES, declared_base, detect_base_family
from carlos.files.formats import analyse_keys
from carlos.files.header import Progress, check_name, parse_header, read_metadata, scan_values, sniff, tensor_table
from carlos.files.metadata import suggest_trigger_words, summarize_metadata

logger = logging.getLogger(__name__)

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
    check_name(original_name if original_name is not None else path.name)
    if size == 0:
        raise InvalidLoRAFileError("the file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise InvalidLoRAFileError(f"the file is {size / _MiB:.1f} MiB, larger than the {limits.max_file_bytes / _MiB:.1f} MiB limit")
    found["sha256"] = sha256_file(path)
    with open(path, "rb") as handle:
        head = handle.read(512)
        handle.seek(max(0, size - 16))
        sniff(head, handle.read(16), size)
        header, data_start = parse_header(handle, size, limits.max_header_bytes)
    tensors = tensor_table(header, size - data_start, limits.max_tensors)
    raw_meta, meta_warnings = read_metadata(header)
    warnings += meta_warnings
    found.update(n_tensors=len(tensors), raw_metadata=raw_meta, dtypes=tuple(sorted({t.dtype for t in tensors.values()})))
    keys = analyse_keys(tensors)
    warnings += keys.warnings
    ranks = [m.rank for m in keys.modules if m.rank is not None]
    found.update(
        format=keys.format,
        n_modules=len(keys.modules),
        ranks=tuple(sorted(set(ranks))),
        rank=max(sorted(counts), key=counts.__getitem__) if (counts := Counter(ranks)) else None,  # O(n): 20k modules
        components=tuple(sorted({m.component for m in keys.modules})),
    )
    guess = detect_base_family(keys.modules, limits.sdxl_context_dims)
    warnings += [f"tensor shapes disagree: {note}" for note in guess.notes]
    summary, summary_warnings = summarize_metadata(raw_meta)
    warnings += summary_warnings
    declared, source, contradictions = declared_base(raw_meta)
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
        trigger_words=tuple(suggest_trigger_words(summary)),
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
        scan_values(path, data_start, tensors, limits.scan_chunk_bytes, progress)
