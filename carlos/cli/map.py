"""Commands over the map of directions: ``map clusters`` (its named regions)."""

from __future__ import annotations

import argparse
from typing import Any

from carlos.cli.common import add_json, add_threshold_options, emit, open_store, thresholds_from
from carlos.config import CORPUS_EMBEDDER
from carlos.errors import NotFoundError


def _clusters(args: argparse.Namespace) -> int:
    from carlos.core.risk import RiskPolicy, annotate
    from carlos.store.catalog import load_view
    from carlos.viz import clusters, maps

    store = open_store(args)
    view = load_view(store, args.embedder)
    cmap = maps.cached_map(store, view)
    if cmap is None:
        raise NotFoundError(
            "no map of the corpus is cached in this store: `python -m carlos corpus import` fits the default map "
            "(or a reviewer fits it on the Map page)"
        )
    risk = annotate(view.frame, RiskPolicy(thresholds=thresholds_from(args)))["risk_class"].tolist()
    config = clusters.ClusterConfig(min_cluster_size=args.min_cluster_size)
    result = clusters.corpus_clusters(store, view, cmap, risk=risk, config=config)
    data = result.to_dict()
    for c, d in zip(result.clusters, data["clusters"]):
        d["members"] = result.members(c.cluster_id)[: args.members]
    emit(args, data, _text(data))
    return 0


def _text(data: dict[str, Any]) -> str:
    lines = [f"{data['n_clusters']} regions over {data['n_points']} LoRAs ({data['noise']} unclustered), map {data['map_key']}"]
    for c in data["clusters"]:
        mix = ", ".join(f"{k} {v}" for k, v in sorted(c["risk_mix"].items()))
        lines.append(f"  {c['cluster_id']:>3}  {c['size']:>5}  {c['label']}" + (f"  [{mix}]" if mix else ""))
    return "\n".join(lines)


def register(sub: Any) -> None:
    """``map clusters``."""
    p = sub.add_parser("map", help="the map of directions")
    msub = p.add_subparsers(dest="map_command", required=True)
    c = msub.add_parser("clusters", help="named regions of the cached corpus map (HDBSCAN + class-based TF-IDF labels)")
    c.add_argument("--embedder", default=CORPUS_EMBEDDER, help="embedding space of the map")
    c.add_argument("--min-cluster-size", type=int, default=None, help="smallest region (default: max(8, LoRAs / 60))")
    c.add_argument("--members", type=int, default=20, help="member ids listed per region")
    add_threshold_options(c)
    add_json(c)
    c.set_defaults(func=_clusters)
