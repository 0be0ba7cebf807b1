"""Weight fingerprints of uploads and files: computed, stored and matched before any GPU work.

:func:`register` fingerprints a validated file (:mod:`carlos.weights`), stores it in
``store.fingerprints`` and records every relationship the matcher finds with stored
fingerprints, from both sides; :func:`carlos.characterize.jobs.submit` calls it for every
upload. :func:`match_file` and :func:`similar_weights` answer "which stored LoRAs have these
weights" for a file (the Characterize page's validation report, before anything is stored) or
for a stored LoRA (``python -m carlos similar-weights``). :func:`weight_matches` reads the
stored relationships of one LoRA. Every match carries the other LoRA's review status and its
latest decision, and says so in plain words (:func:`carlos.weights.match.describe`); names are
creator text, returned as plain strings for plain-text display.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carlos.core.access import AccessPolicy, CurrentUser, authorize
from carlos.errors import CarlosError, InvalidInputError, NotFoundError
from carlos.files.blobs import is_s3
from carlos.files.validate import LoRAFileLimits, LoRAFileReport, safe_filename
from carlos.store.store import Store
from carlos.weights.canonical import READ_LIMITS, AdapterFile, ModuleSource
from carlos.weights.match import FingerprintIndex, Match, describe, find_matches
from carlos.weights.relate import UNRELATED
from carlos.weights.sketch import Fingerprint, SketchSpec, fingerprint

log = logging.getLogger(__name__)
SPEC = SketchSpec()
_INDEX: dict[str, tuple[tuple[int, str], FingerprintIndex]] = {}


@dataclass(frozen=True)
class WeightMatch:
    """A stored LoRA whose weights relate to the query's, with its review status."""

    lora_id: str
    name: str  # creator text or file name: display as plain text only
    label: str
    kind: str | None
    cosine: float
    scale: float
    exact: bool
    status: str | None  # None: not a registered LoRA
    reviewer: str | None
    decided_at: Any
    text: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lora_id": self.lora_id,
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "cosine": self.cosine,
            "scale": self.scale,
            "exact": self.exact,
            "review_status": self.status,
            "reviewed_by": self.reviewer,
            "reviewed_at": None if self.decided_at is None else str(self.decided_at),
            "summary": self.text,
            "relation": self.detail,
        }


@dataclass(frozen=True)
class FingerprintResult:
    """A file's fingerprint, where it is stored (if it is) and its weight-space matches."""

    path: str
    lora_id: str | None
    stored: bool
    fingerprint: Fingerprint
    matches: list[WeightMatch]


def fingerprint_file(
    path: str | Path, *, limits: LoRAFileLimits = READ_LIMITS, original_name: str | None = None, report: LoRAFileReport | None = None
) -> Fingerprint:
    """Validate (unless ``report`` is the file's passing report) and fingerprint one file."""
    with AdapterFile.open(path, limits, original_name=original_name, report=report) as f:
        return fingerprint(f, SPEC, fmt=f.format, sha256=f.sha256)


def fingerprint_index(store: Store) -> FingerprintIndex:
    """The search index over the store's fingerprints, rebuilt when the store changed."""
    key = (store.data_version(), SPEC.id)
    cached = _INDEX.get(str(store.path))
    if cached is not None and cached[0] == key:
        return cached[1]
    from carlos.models.int8 import FbgemmInt8, fbgemm_available

    ids, matrix = store.fingerprints.vectors(SPEC.id)
    index = FingerprintIndex(ids, matrix, int8=FbgemmInt8() if fbgemm_available() else None)  # int8 from 20,000 on
    _INDEX[str(store.path)] = (key, index)
    return index


def _stored_fingerprint(store: Store, lora_id: str) -> Fingerprint | None:
    row = store.fingerprints.get(lora_id)
    return Fingerprint.from_row(row) if row is not None else None


def _opener(store: Store, limits: LoRAFileLimits) -> Any:
    @contextlib.contextmanager
    def open_stored(lora_id: str) -> Iterator[ModuleSource | None]:
        info = store.fingerprints.files([lora_id]).get(lora_id, {})
        path = info.get("file_path")
        if not path or not Path(path).is_file():
            yield None
            return
        try:
            f = AdapterFile.open(path, limits)
        except CarlosError as e:  # the stored file changed or went bad: compare by fingerprint only
            log.warning("stored file of %s cannot be re-read for exact matching: %s", lora_id, e)
            yield None
            return
        with f:
            yield f if f.sha256 == info.get("sha256") else None

    return open_stored


def _review(store: Store, lora_id: str) -> tuple[str | None, str | None, Any]:
    if not _registered(store, lora_id):  # fingerprinted with `fingerprint --add`, never registered as a LoRA
        return None, None, None
    last = store.review.decisions(lora_id, limit=1)
    if last.empty:
        return "unreviewed", None, None
    row = last.iloc[0]
    return str(row["status_after"]), str(row["reviewer"]), row["created_at"]


def _registered(store: Store, lora_id: str) -> bool:
    try:
        return store.loras.resolve(lora_id) == lora_id
    except NotFoundError:
        return False


def _display_name(store: Store, lora_id: str, file_name: str | None) -> str:
    try:
        name = store.loras.get(lora_id).get("name")
    except NotFoundError:
        name = None
    return str(name or file_name or lora_id)


def _weight_match(
    store: Store, lora_id: str, label: str, kind: str | None, cosine: float, scale: float, exact: bool, detail: dict[str, Any]
) -> WeightMatch:
    file_name = store.fingerprints.files([lora_id]).get(lora_id, {}).get("file_name")
    name = _display_name(store, lora_id, file_name)
    status, by, when = _review(store, lora_id)
    text = describe(label, kind, name, cosine=cosine, scale=scale, status=status, by=by, when=when)
    return WeightMatch(lora_id, name, label, kind, cosine, scale, exact, status, by, when, text, detail)


def _as_weight_match(store: Store, m: Match, modules: int | None) -> WeightMatch:
    r = m.relation
    detail = {"search_cosine": m.search_cosine, **r.to_dict(modules)}
    return _weight_match(store, m.other_id, r.label, r.kind, r.cosine, r.scale, r.exact, detail)


def _find(
    store: Store, fp: Fingerprint, source: ModuleSource | None, *, limits: LoRAFileLimits, top_k: int, exclude: tuple[str, ...]
) -> list[Match]:
    def fingerprints_of(ids: Sequence[str]) -> dict[str, Fingerprint]:  # one query for every candidate
        return {k: Fingerprint.from_row(v) for k, v in store.fingerprints.get_many(list(ids)).items()}

    return find_matches(
        fp, fingerprint_index(store), fingerprints_of, query_source=source, open_source=_opener(store, limits), top_k=top_k, exclude=exclude
    )


def match_file(
    store: Store,
    path: str | Path,
    *,
    limits: LoRAFileLimits = READ_LIMITS,
    original_name: str | None = None,
    report: LoRAFileReport | None = None,
    top_k: int = 10,
    modules: int | None = 20,
    exclude: tuple[str, ...] = (),
) -> tuple[Fingerprint, list[WeightMatch]]:
    """A file's fingerprint and its ``top_k`` weight-space matches in the store (nothing is written)."""
    with AdapterFile.open(path, limits, original_name=original_name, report=report) as f:
        fp = fingerprint(f, SPEC, fmt=f.format, sha256=f.sha256)
        found = _find(store, fp, f, limits=limits, top_k=top_k, exclude=exclude)
    return fp, [_as_weight_match(store, m, modules) for m in found]


def register(
    store: Store,
    path: str | Path,
    *,
    user: CurrentUser,
    policy: AccessPolicy | None = None,
    lora_id: str | None = None,
    file_name: str | None = None,
    file_path: str | Path | None = None,
    limits: LoRAFileLimits = READ_LIMITS,
    report: LoRAFileReport | None = None,
    top_k: int = 10,
) -> FingerprintResult:
    """Fingerprint, store and match one validated file as ``user`` (who must be allowed to write:
    PermissionDeniedError before anything is read); every named relationship is stored from both sides.

    ``lora_id`` defaults to ``sha256:<hex>`` of the file; ``file_path`` (default ``path``) is
    where exact re-ranking will read it later.
    """
    authorize(user, "store a weight fingerprint", policy)
    path = Path(path)
    with AdapterFile.open(path, limits, original_name=file_name, report=report) as f:
        fp = fingerprint(f, SPEC, fmt=f.format, sha256=f.sha256)
        lora_id = lora_id or f"sha256:{f.sha256}"
        found = _find(store, fp, f, limits=limits, top_k=top_k, exclude=(lora_id,))
    name = safe_filename(file_name or path.name)
    kept = str(file_path) if is_s3(file_path) else str(Path(file_path or path).resolve())  # a blob store's reference as it is
    store.fingerprints.put(fp.to_row(lora_id, file_name=name, file_path=kept))
    rows = []
    for m in found:
        if m.relation.label == UNRELATED:
            continue
        for a, b, rel in ((lora_id, m.other_id, m.relation), (m.other_id, lora_id, m.relation.swapped())):
            rows.append(
                {
                    "lora_id": a,
                    "other_id": b,
                    "label": rel.label,
                    "kind": rel.kind,
                    "cosine": rel.cosine,
                    "scale": rel.scale,
                    "exact": rel.exact,
                    "detail": rel.to_dict(20),
                }
            )
    store.fingerprints.put_matches(rows)
    return FingerprintResult(str(path), lora_id, True, fp, [_as_weight_match(store, m, 20) for m in found])


def similar_weights(
    store: Store, query: str, *, top_k: int = 10, limits: LoRAFileLimits = READ_LIMITS, modules: int | None = 20
) -> FingerprintResult:
    """Weight-space matches of a file (a path) or of a stored fingerprint (lora_id, sha256 or version id)."""
    if Path(query).is_file():
        fp, matches = match_file(store, query, limits=limits, top_k=top_k, modules=modules)
        known = store.fingerprints.find_by_sha256(fp.sha256 or "")
        return FingerprintResult(query, known, known is not None, fp, [m for m in matches if m.lora_id != known])
    lora_id = _resolve(store, query)
    fp = _stored_fingerprint(store, lora_id)
    assert fp is not None
    with _opener(store, limits)(lora_id) as source:
        found = _find(store, fp, source, limits=limits, top_k=top_k, exclude=(lora_id,))
    return FingerprintResult(query, lora_id, True, fp, [_as_weight_match(store, m, modules) for m in found])


def _resolve(store: Store, key: str) -> str:
    text = str(key).strip()
    for candidate in (text, f"sha256:{text.lower()}"):
        if store.fingerprints.get(candidate) is not None:
            return candidate
    by_sha = store.fingerprints.find_by_sha256(text.lower())
    if by_sha:
        return by_sha
    try:
        lora_id = store.loras.resolve(text)
    except NotFoundError:
        lora_id = None
    if lora_id is not None and store.fingerprints.get(lora_id) is not None:
        return lora_id
    raise InvalidInputError(
        f"{text!r} is neither a file nor a fingerprinted LoRA in {store.where}; store one with `python -m carlos fingerprint FILE --add`"
    )


def weight_matches(store: Store, lora_id: str) -> list[WeightMatch]:
    """The stored weight-space relationships of one LoRA, strongest first."""
    out = []
    for r in store.fingerprints.matches(lora_id):
        out.append(
            _weight_match(
                store, r["other_id"], r["label"], r["kind"], float(r["cosine"]), float(r["scale"] or 0.0), bool(r["exact"]), r["detail"]
            )
        )
    return out


def weight_stats(store: Store, lora_id: str) -> dict[str, Any] | None:
    """The per-block weight statistics of a fingerprinted LoRA (None: never fingerprinted)."""
    row = store.fingerprints.get(lora_id)
    return dict(row["stats"]) if row is not None and row.get("stats") else None


_UPLOAD_MATCHES: dict[tuple[str, int, str, str], tuple[list[WeightMatch], str | None]] = {}


def upload_matches(
    store: Store, path: str | Path, report: LoRAFileReport, *, limits: LoRAFileLimits = READ_LIMITS
) -> tuple[list[WeightMatch], str | None]:
    """(named weight-space matches, or why none could be looked for) of an upload that passed
    validation, before it is stored.

    Kept per (store, data version, file sha256, limits), so a page that reruns on every widget
    change fingerprints a file once; ([], None) for a refused file.
    """
    if not report.ok or not report.sha256:
        return [], None
    key = (str(store.path), store.data_version(), report.sha256, repr(limits))
    if key not in _UPLOAD_MATCHES:
        try:
            _, found = match_file(store, path, limits=limits, report=report)
            answer: tuple[list[WeightMatch], str | None] = (
                [m for m in found if m.label != UNRELATED and m.lora_id != f"sha256:{report.sha256}"],
                None,
            )
        except CarlosError as e:
            answer = ([], f"the weights could not be compared with the stored LoRAs: {e}")
        if len(_UPLOAD_MATCHES) >= 16:
            _UPLOAD_MATCHES.pop(next(iter(_UPLOAD_MATCHES)))
        _UPLOAD_MATCHES[key] = answer
    return _UPLOAD_MATCHES[key]
