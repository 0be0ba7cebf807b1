"""The LoRA detail page's data: one read (:func:`read_detail`), then what the thresholds in force
make of it (:func:`build_detail`), the threshold-dependent parts remembered per data version.

Before this, the page opened 16 connections per render (five resolves of the same key, the
representations twice), ~390 ms of connect/close under the lock on a 2-core VM for ~45 ms of
queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from carlos.characterize import fingerprints, results
from carlos.config import CORPUS_EMBEDDER, Thresholds
from carlos.core import ranking
from carlos.core.comparability import comparability
from carlos.core.view import CorpusView
from carlos.errors import NotFoundError
from carlos.pagemodels.common import Basics, Memo, annotated, cached_read, read_basics, view_key
from carlos.pagemodels.corpus_pages import read_basics_only
from carlos.search.views import corpus_view
from carlos.store.changes import AREAS
from carlos.store.representations import StoredRepresentation
from carlos.store.store import Store
from carlos.viz import mapview


@dataclass(frozen=True)
class DetailData:
    """Everything the detail page shows from the store, read in one session (one state)."""

    basics: Basics
    key: str | None  # what was asked for (a lora_id, Civitai version id or sha256)
    lora_id: str | None  # None: nothing asked, or ``key`` names no LoRA (``not_found`` says so)
    not_found: str | None = None
    lora: dict[str, Any] = field(default_factory=dict)  # the LoRA's row (metadata, file report)
    reps: tuple[StoredRepresentation, ...] = ()  # newest first
    spaces: dict[str, CorpusView] = field(default_factory=dict)  # the view of each representation's space
    status: str = "unreviewed"
    claim_holder: str | None = None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)  # decisions, newest first
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-pair results of a local characterization
    thumbs: pd.DataFrame = field(default_factory=pd.DataFrame)
    weight_links: tuple[fingerprints.WeightMatch, ...] = ()
    weight_stats: dict[str, Any] | None = None
    region: tuple[int, str] | None = None  # (region id, label) on the default map, when one is cached

    def resolve(self, key: str) -> str:
        """The lora_id this read found for ``key`` (the URL parser of the page); NotFoundError otherwise."""
        if key != self.key or self.lora_id is None:
            raise NotFoundError(self.not_found or f"no LoRA {key!r} was read")
        return self.lora_id


def resolve_in_view(view: CorpusView, key: str) -> str | None:
    """The lora_id of ``key`` among the view's LoRAs (lora_id, Civitai version id or sha256), or None."""
    text = str(key).strip()
    if view.find(text) is not None:
        return text
    frame = view.frame
    for col, value in (("version_id", text), ("sha256", text.lower())):
        if col in frame:
            hit = frame.loc[frame[col].astype("string") == value, "lora_id"]
            if len(hit):
                return str(sorted(hit)[0])
    return None


def read_detail(store: Store, key: str | None) -> DetailData:
    """The view, the saved thresholds and everything stored about the LoRA named by ``key``, on
    one connection (none when the store did not change since the last read of ``key``). Map
    regions are read here too: finding a cached map never waits on a fit."""
    return cached_read(store, ("detail", key), lambda: read_detail_uncached(store, key), _areas(store, key))


#: What the page of a LoRA without jobs reads: no worker's pair results or heartbeats change it.
WITHOUT_JOBS = ("data", "review", "caches")


def _areas(store: Store, key: str | None) -> tuple[str, ...]:
    """The areas the detail read of ``key`` depends on: every area for a LoRA with a job (its pair
    results and images), the others for the rest, so a worker's stream of writes leaves the pages of
    the LoRAs it is not characterizing cached. The set of LoRAs with jobs is one shared read per jobs
    state of the queue, which changes when a job is added, not with a worker's heartbeats (a LoRA's first
    job changes it, so its page is read again)."""
    basics = read_basics_only(store)
    lid = resolve_in_view(basics.view, key) if key is not None and basics.view is not None else None
    if key is not None and lid is None:  # not in the view (an upload without a representation): all of it
        return AREAS
    with_jobs = cached_read(store, ("loras with jobs",), store.jobs.lora_ids, ("queue",))
    return AREAS if lid in with_jobs else WITHOUT_JOBS


def read_detail_uncached(store: Store, key: str | None, embedder: str = CORPUS_EMBEDDER) -> DetailData:
    """The uncached read (``bench scale`` times it on a synthetic corpus, whose space is ``embedder``)."""
    with store.reading():
        basics = read_basics(store, embedder)
        if key is None or basics.view is None:
            return DetailData(basics, key, None)
        lora_id = resolve_in_view(basics.view, key)
        try:
            lora = store.loras.get(lora_id or key)  # an upload without a representation is not in the view
        except NotFoundError as e:
            return DetailData(basics, key, None, not_found=str(e))
        lora_id = str(lora["lora_id"])
        reps = tuple(store.reps.of(lora_id))
        spaces = {e: (basics.view if e == basics.view.embedder else corpus_view(store, e)) for e in dict.fromkeys(r.embedder for r in reps)}
        pairs = store.jobs.pair_results_of(lora_id)
        return DetailData(
            basics,
            key,
            lora_id,
            lora=lora,
            reps=reps,
            spaces=spaces,
            status=store.review.status_of(lora_id) or "unreviewed",
            claim_holder=store.review.claim_holder(lora_id),
            history=store.review.decisions(lora_id),
            pairs=pairs,
            thumbs=store.jobs.thumbnails_of(lora_id) if len(pairs) else pd.DataFrame(),
            weight_links=tuple(fingerprints.weight_matches(store, lora_id)),
            weight_stats=fingerprints.weight_stats(store, lora_id),
            region=(mapview.regions_of(store, basics.view, [lora_id]) or {}).get(lora_id),
        )


@dataclass(frozen=True)
class DetailModel:
    """What the thresholds in force make of one LoRA's stored data (pure, remembered per data
    version: it holds nothing a review write changes, which the page takes from :class:`DetailData`)."""

    view: CorpusView
    lora_id: str
    thresholds: Thresholds
    row: pd.Series | None  # the LoRA's annotated corpus row (risk class, flags, NSFW); None: not in the corpus space
    representations: pd.DataFrame  # one row per representation: values, intervals, percentiles, provenance
    comparability_warnings: tuple[str, ...]
    intervals: pd.DataFrame  # results.representation_intervals of the LoRA's local characterizations
    flags: tuple[str, ...]

    def neighbours(self, top_k: int) -> ranking.SearchResult:
        """The LoRAs whose Direction is nearest (cosine), under the thresholds; excluded ones counted."""
        assert self.row is not None, "only a LoRA of the corpus space has neighbours"
        return ranking.similar(self.view, self.lora_id, thresholds=self.thresholds, top_k=top_k)


_MODELS = Memo(64)


def build_detail(data: DetailData, thresholds: Thresholds) -> DetailModel:
    """The page model; the threshold-dependent tables are built once per (data version, LoRA,
    thresholds) and shared by every session (a review write changes none of them)."""
    view = data.basics.view
    assert view is not None and data.lora_id is not None, "build_detail needs a LoRA that was found"
    key = (*view_key(view), tuple((e, *view_key(v)) for e, v in data.spaces.items()), data.lora_id, thresholds, len(data.reps))
    return _MODELS.get(key, lambda: _build(data, thresholds))


def _build(data: DetailData, thresholds: Thresholds) -> DetailModel:
    view, lid = data.basics.view, data.lora_id
    assert view is not None and lid is not None
    frame = annotated(view, thresholds)
    row_i = view.find(lid)
    row = frame.iloc[row_i] if row_i is not None else None
    rows, warnings = [], []
    for rep in data.reps:
        ann = annotated(data.spaces[rep.embedder], thresholds)
        cuts = (ann.attrs["review_strength_min"], ann.attrs["review_consistency_min"])  # the review region of this space
        i = data.spaces[rep.embedder].find(lid)
        p = ann.iloc[i] if i is not None else {}
        prov = rep.provenance
        iv = results.interval_fields(rep, thresholds, cuts)
        bounds = {k: (iv["uncertainty"] or {}).get(f"{k}_interval") for k in ("strength", "consistency")}
        comp = comparability(rep.embedder, prov)
        rows.append(
            {
                "space": rep.embedder,
                "Strength": rep.strength,
                "Str 95%": "—" if bounds["strength"] is None else "{:.3f}–{:.3f}".format(*bounds["strength"]),
                "Str pct": p.get("strength_pct"),
                "Consistency": rep.consistency,
                "Cons 95%": "—" if bounds["consistency"] is None else "{:.4f}–{:.4f}".format(*bounds["consistency"]),
                "Cons pct": p.get("consistency_pct"),
                "Risk (confidence)": iv["risk_confidence"],
                "comparable with the corpus": comp.message(),
                "pairs": rep.n_samples,
                **{k: prov.get(k) for k in ("protocol", "backend", "prompt_set", "steps", "scale", "source")},
                "computed": prov.get("created_at"),
            }
        )
        if not comp.comparable and rep.embedder == CORPUS_EMBEDDER:
            warnings.append(f"{rep.embedder}, {prov.get('protocol')} protocol: {comp.message()}.")
    return DetailModel(
        view=view,
        lora_id=lid,
        thresholds=thresholds,
        row=row,
        representations=pd.DataFrame(rows),
        comparability_warnings=tuple(warnings),
        intervals=results.representation_intervals(data.reps),
        flags=tuple(row["flags"]) if row is not None else (),
    )
