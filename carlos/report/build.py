"""Assembling a case file from the services: :func:`build_case_file`.

Every number comes from the reads the pages and ``show`` use (``carlos.search.lookup``,
``carlos.search.views``, ``carlos.characterize.results``, ``carlos.review.workflow``), so a
case file says what the dashboard says: the same percentiles (within the representation's own
space), intervals, risk class with its confidence (:func:`carlos.core.confidence.risk_call`
through ``results.interval_fields``) and neighbours (:func:`carlos.core.ranking.similar`).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carlos.characterize import results
from carlos.config import CORPUS_EMBEDDER, Thresholds
from carlos.core import ranking
from carlos.core.comparability import comparability
from carlos.core.risk import RiskPolicy, nsfw_label
from carlos.errors import InvalidInputError
from carlos.report import neighbours as neighbour_sections
from carlos.report.case import (
    AuditEntry,
    CaseFile,
    CategoryStrength,
    Distribution,
    Identification,
    ImagePair,
    LoRACase,
    Measurement,
    ThresholdSetting,
    ThresholdsInForce,
)
from carlos.report.integrity import plain
from carlos.report.provenance import git_commit, measurement_provenance, report_provenance
from carlos.review import workflow as review
from carlos.review.audit import audit_records
from carlos.search import lookup
from carlos.search.views import corpus_view

if TYPE_CHECKING:
    from carlos.store.representations import StoredRepresentation
    from carlos.store.store import Store

#: More LoRAs than this in one case file is a listing, not a case: refuse with the reason.
MAX_LORAS = 200


@dataclass(frozen=True)
class ReportConfig:
    """What a case file contains and under which thresholds."""

    thresholds: Thresholds | None = None  # None: the reviewers' saved thresholds, else the paper's
    top_k: int = 10  # neighbours per kind
    reveal: bool = False  # image pairs unblurred (they may be NSFW or reproduce protected works)
    max_images: int = 8  # image pairs per LoRA
    verify_files: bool = True  # re-hash a stored LoRA file and say whether it still matches
    generated_by: str | None = None
    now: dt.datetime | None = None  # the generated-at time (default: now, UTC)
    histogram_bins: int = 30


def build_case_file(store: Store, keys: Sequence[str | int], config: ReportConfig | None = None) -> CaseFile:
    """The case file of the LoRAs named by ``keys`` (lora_id, Civitai version id or sha256,
    each resolved once; duplicates kept once). Raises NotFoundError for an unknown key.

    Everything is read on one connection under one hold of the store's lock, so the sections
    describe one state of the store; stored LoRA files are re-hashed after it is released.
    """
    config = config or ReportConfig()
    if not keys:
        raise InvalidInputError("a case file needs at least one LoRA id")
    ranking.check_top_k(config.top_k)
    git_commit()  # a subprocess, once per process: not under the lock
    with store.session():
        ids = list(dict.fromkeys(lookup.resolve(store, k) for k in keys))
        if len(ids) > MAX_LORAS:
            raise InvalidInputError(f"{len(ids)} LoRAs in one case file; at most {MAX_LORAS}")
        in_force = thresholds_in_force(store, config.thresholds)
        thresholds = Thresholds(in_force.strength_max, in_force.consistency_min)
        rows = {lid: lookup.lora(store, lid) for lid in ids}
        cases = [lora_case(store, rows[lid], thresholds, config) for lid in ids]
        recorded = {m.recorded.get("prompt_set") for c in cases for m in c.measurements}
        provenance = report_provenance(store, {str(p) for p in recorded if p})
    if config.verify_files:
        cases = [
            replace(
                c,
                identification=replace(
                    c.identification, file_check=file_check(c.identification.sha256, _str(rows[lid].get("file_path")), True)
                ),
            )
            for lid, c in zip(ids, cases)
        ]
    now = config.now or dt.datetime.now(dt.UTC)
    return CaseFile(
        generated_at=now.astimezone(dt.UTC).isoformat(timespec="seconds"),
        generated_by=config.generated_by,
        reveal=config.reveal,
        thresholds=in_force,
        provenance=provenance,
        loras=cases,
    )


def thresholds_in_force(store: Store, chosen: Thresholds | None) -> ThresholdsInForce:
    """The thresholds the report is made under, with where they come from and the saved history."""
    hist = review.threshold_history(store, limit=50)
    history = [
        ThresholdSetting(
            int(r["setting_id"]),
            _opt(r["strength_max"]),
            _opt(r["consistency_min"]),
            str(r["reviewer"]),
            _str(r["note"]),
            _str(r["created_at"]),
        )
        for _, r in hist.iterrows()
    ]
    saved = review.current_thresholds(store)
    t = saved if chosen is None else chosen
    if history and (t.strength_max, t.consistency_min) == (history[0].strength_max, history[0].consistency_min):
        last = history[0]
        origin = f"saved by {last.reviewer} at {last.created_at}" + (f" (note: {last.note})" if last.note else "")
    elif not history and t == Thresholds():
        origin = "the paper's (Strength ≤ 9.8, Consistency ≥ 0.041); no reviewer has saved thresholds"
    else:
        origin = "chosen for this report (not the saved thresholds)"
    return ThresholdsInForce(t.strength_max, t.consistency_min, origin, history)


def lora_case(store: Store, row: dict[str, Any], thresholds: Thresholds, config: ReportConfig) -> LoRACase:
    """Everything about one LoRA (its row from ``lookup.lora``); the stored file is not re-hashed here."""
    lora_id = str(row["lora_id"])
    reps = lookup.representations(store, lora_id)
    measurements = [measurement(store, rep, thresholds, config) for rep in reps]
    # the corpus's space first: that is where percentiles and neighbours mean the most
    measurements.sort(key=lambda m: m.embedder != CORPUS_EMBEDDER)
    head = measurements[0] if measurements else None
    categories, overall, cat_note = category_strength(store, lora_id)
    pairs, img_note = image_pairs(store, lora_id, config)
    sections = [
        neighbour_sections.by_behaviour(store, lora_id, head.embedder if head else None, thresholds, config.top_k),
        neighbour_sections.by_weights(store, lora_id, config.top_k),
    ]
    return LoRACase(
        identification=identification(row, verify_files=False),
        measurements=measurements,
        neighbours=sections,
        category_strength=categories,
        category_overall=overall,
        category_note=cat_note,
        image_pairs=pairs,
        image_note=img_note,
        review_status=review.status_of(store, lora_id),
        claimed_by=review.claim_holder(store, lora_id),
        audit=audit_entries(store, lora_id),
    )


def identification(row: dict[str, Any], verify_files: bool) -> Identification:
    """Names, ids, hashes and what the file declares, from the LoRA's row."""
    from carlos.core.text import clean_text

    report = row.get("file_report") or None
    sha = _str(row.get("sha256"))
    declared = None
    if isinstance(report, dict):
        keys = ("format", "base_family", "base_family_reason", "declared_base", "rank", "ranks", "components", "dtypes", "n_tensors")
        declared = {k: report.get(k) for k in keys if report.get(k) is not None}
        declared["contradictions"] = list(report.get("contradictions") or [])
        declared["warnings"] = list(report.get("warnings") or [])
        declared["metadata"] = report.get("metadata") or {}
    triggers = row.get("trigger_words")
    triggers = [] if triggers is None or (isinstance(triggers, float) and pd.isna(triggers)) else [str(t) for t in list(triggers)]
    desc = _str(row.get("description"))
    model_id, version_id = _int(row.get("model_id")), _int(row.get("version_id"))
    url = None if model_id is None else f"https://civitai.com/models/{model_id}" + (f"?modelVersionId={version_id}" if version_id else "")
    return Identification(
        lora_id=str(row["lora_id"]),
        name=_str(row.get("name")),
        source=_str(row.get("source")),
        version_id=version_id,
        model_id=model_id,
        civitai_url=url,
        folder_name=_str(row.get("folder_name")),
        nsfw=nsfw_label(row.get("nsfw_level")),
        download_count=_int(row.get("download_count")),
        sha256=sha,
        autov2=sha[:10].upper() if sha else None,
        file_name=_str(report.get("original_name")) if isinstance(report, dict) else None,
        file_size_bytes=_int(report.get("size_bytes")) if isinstance(report, dict) else None,
        file_check=file_check(sha, _str(row.get("file_path")), verify_files),
        trigger_words=triggers,
        description=clean_text(desc) if desc else None,
        declared=plain(declared),
    )


def file_check(sha256: str | None, path: str | None, verify: bool) -> str:
    """Whether the stored copy of the file is here and still has the recorded sha256."""
    if sha256 is None:
        return "no file: the authors' release gives no file or file hash for corpus LoRAs"
    if not path or not Path(path).is_file():
        return "sha256 recorded at upload; the stored copy is not on this machine"
    if not verify:
        return "stored copy present (not re-hashed for this report)"
    from carlos.files.validate import sha256_file

    got = sha256_file(path)
    return "stored copy re-hashed for this report: matches" if got == sha256 else f"stored copy re-hashed: DIFFERS (now {got})"


def measurement(store: Store, rep: StoredRepresentation, thresholds: Thresholds, config: ReportConfig) -> Measurement:
    """One representation as ``show`` reports it, plus its space's distributions."""
    view = corpus_view(store, rep.embedder)
    ann = view.annotated(RiskPolicy(thresholds=thresholds))
    cuts = (ann.attrs["review_strength_min"], ann.attrs["review_consistency_min"])
    by_id = ann.set_index("lora_id")
    current = rep.lora_id in by_id.index and int(by_id.loc[rep.lora_id, "rep_id"]) == rep.rep_id
    s_all, c_all = view.values
    if current:
        r = by_id.loc[rep.lora_id]
        s_pct, c_pct, risk, flags = float(r["strength_pct"]), float(r["consistency_pct"]), str(r["risk_class"]), list(r["flags"])
    else:  # an older representation: where its own values sit in today's space
        s_pct = float((s_all <= rep.strength).mean() * 100) if len(s_all) else None
        c_pct = float((c_all <= rep.consistency).mean() * 100) if len(c_all) else None
        risk, flags = None, ["superseded by a newer representation in this space"]
    iv = results.interval_fields(rep, thresholds, cuts)
    u = iv["uncertainty"] or {}
    prov = rep.provenance
    return Measurement(
        rep_id=int(rep.rep_id),
        embedder=rep.embedder,
        dim=int(rep.direction.shape[0]),
        n_samples=int(rep.n_samples or 0),
        strength=float(rep.strength),
        consistency=float(rep.consistency),
        strength_pct=s_pct,
        consistency_pct=c_pct,
        space_size=len(view),
        strength_interval=plain(u.get("strength_interval")),
        consistency_interval=plain(u.get("consistency_interval")),
        strength_text=iv["strength_text"],
        consistency_text=iv["consistency_text"],
        expected_cosine=plain(u.get("expected_cosine")),
        risk_class=risk,
        risk_confidence=iv["risk_confidence"],
        risk_probabilities=plain(iv["risk_probabilities"]),
        excluded_because=thresholds.exclusion_reasons(rep.strength, rep.consistency),
        flags=flags,
        comparability=comparability(rep.embedder, prov).message(),
        provenance=measurement_provenance(rep.embedder, prov),
        recorded=plain({k: v for k, v in prov.items() if k != "uncertainty"}),
        strength_distribution=_histogram(s_all, config.histogram_bins),
        consistency_distribution=_histogram(c_all, config.histogram_bins),
    )


def category_strength(store: Store, lora_id: str) -> tuple[list[CategoryStrength], float | None, str]:
    """Mean CLIP-difference norm per prompt category of the local characterization, as the
    detail page's chart (``results.pair_results``); empty with the reason for corpus LoRAs."""
    pairs = results.pair_results(store, lora_id)
    if pairs.empty or "norm" not in pairs:
        return (
            [],
            None,
            "No per-pair data: this LoRA was not characterized on this machine (corpus LoRAs come with the authors' values only).",
        )
    agg = pairs.assign(category=pairs["category"].fillna("(none)")).groupby("category")["norm"].agg(["mean", "count"]).sort_values("mean")
    rows = [CategoryStrength(str(c), float(m), int(n)) for c, m, n in zip(agg.index, agg["mean"], agg["count"])]
    overall = float(pairs["norm"].mean())
    return rows, overall, f"Over {len(pairs)} pairs of this machine's characterization; overall {overall:.3f}."


def image_pairs(store: Store, lora_id: str, config: ReportConfig) -> tuple[list[ImagePair], str]:
    """Base/LoRA thumbnails of the local characterization; blurred in the file itself unless
    ``reveal`` (a CSS blur could be removed by anyone holding the file)."""
    thumbs = results.thumbnails(store, lora_id)
    if thumbs.empty:
        return [], "No image pairs: none were generated on this machine for this LoRA."
    out = []
    for r in thumbs.head(config.max_images).itertuples(index=False):
        out.append(
            ImagePair(
                int(r.pair_index),
                _str(r.prompt),
                _str(r.category),
                _int(r.seed),
                _png_b64(r.base_png, config.reveal),
                _png_b64(r.lora_png, config.reveal),
            )
        )
    shown = f"{len(out)} of {len(thumbs)}" if len(thumbs) > len(out) else str(len(out))
    how = (
        "unblurred (made with reveal)"
        if config.reveal
        else "blurred in the file itself; make the report with reveal to include them as generated"
    )
    return out, f"{shown} pairs: left base SDXL, right with the LoRA (same prompt and seed), {how}."


def audit_entries(store: Store, lora_id: str) -> list[AuditEntry]:
    """The LoRA's audit log, newest first: decisions, claims and releases (append-only)."""
    return [
        AuditEntry(
            int(r["id"]),
            _str(r["at"]),
            str(r["event"]),
            _str(r["reviewer"]),
            _str(r["action"]),
            _str(r["status_before"]),
            _str(r["status_after"]),
            _str(r["note"]),
        )
        for r in audit_records(store, lora_id)
    ]


def _png_b64(png: Any, reveal: bool) -> str | None:
    if not isinstance(png, (bytes, bytearray, memoryview)):
        return None
    data = bytes(png)
    if not reveal:
        from PIL import Image, ImageFilter

        img = Image.open(io.BytesIO(data)).convert("RGB")
        img = img.filter(ImageFilter.GaussianBlur(radius=max(4.0, min(img.size) / 10)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    return base64.b64encode(data).decode("ascii")


def _histogram(values: np.ndarray, bins: int) -> Distribution | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    counts, edges = np.histogram(v, bins=bins)
    return Distribution([float(e) for e in edges], [int(c) for c in counts])


def _opt(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def _int(v: Any) -> int | None:
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else int(v)


def _str(v: Any) -> str | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return v if isinstance(v, str) else str(v)
