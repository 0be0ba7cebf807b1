"""Statistics of a file's weights: where its ΔW energy sits and how many directions carry it.

Energy is ‖ΔW‖²_F, summed per block (``unet:down_blocks_1``, ``unet:mid_block``, ``te1``, …)
and per kind of layer (self-attention, cross-attention, feed-forward, …), as shares of the
whole. The effective rank of a module is the participation ratio of its energy spectrum,
(Σσ_i²)² / Σσ_i⁴: 1 when one direction carries everything, the rank when all carry the same.
Blocks and the file report the energy-weighted mean. These numbers describe the file; they
do not say what the LoRA does to images (a large ΔW in a block the prompt never reaches changes
little), and every consumer must present them that way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from carlos.weights.canonical import CanonicalModule, block_of

#: What every display of these statistics must say.
CAVEAT = "statistics of the file's weights, not a prediction of what the LoRA does to images"

_KINDS = (
    (re.compile(r"attn1_"), "self-attention"),
    (re.compile(r"attn2_"), "cross-attention"),
    (re.compile(r"ff_net_"), "feed-forward"),
    (re.compile(r"attentions_\d+_(proj_in|proj_out)$"), "attention in/out projections"),
    (re.compile(r"self_attn_"), "text self-attention"),
    (re.compile(r"mlp_"), "text MLP"),
    (re.compile(r"(resnets|samplers|conv_in|conv_out)"), "convolutions"),
)


def layer_kind(name: str) -> str:
    """The kind of layer a canonical module is, for the energy breakdown."""
    path = name.partition(":")[2]
    return next((kind for rx, kind in _KINDS if rx.search(path)), "other")


def _groups(rows: list[dict[str, Any]], key: str, total: float) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = out.setdefault(r[key], {key: r[key], "modules": 0, "energy": 0.0, "_erank": 0.0})
        g["modules"] += 1
        g["energy"] += r["energy"]
        g["_erank"] += r["energy"] * r["effective_rank"]
    result = []
    for g in out.values():
        g["share"] = g["energy"] / total if total > 0 else 0.0
        g["effective_rank"] = g.pop("_erank") / g["energy"] if g["energy"] > 0 else 0.0
        result.append(g)
    return sorted(result, key=lambda g: -g["energy"])


def weight_stats(
    names: Sequence[str],
    norms: np.ndarray,
    effective_ranks: np.ndarray,
    modules: Mapping[str, CanonicalModule],
    *,
    spectrum_exact: bool = True,
) -> dict[str, Any]:
    """Per-block and per-kind energy and effective rank of the modules ``names`` (norms and
    effective ranks aligned with them; ``modules`` for declared ranks and components)."""
    rows = [
        {"block": block_of(n), "kind": layer_kind(n), "energy": float(e) ** 2, "effective_rank": float(r)}
        for n, e, r in zip(names, norms, effective_ranks)
    ]
    total = sum(r["energy"] for r in rows)
    used = [modules[n] for n in names]
    erank = sum(r["energy"] * r["effective_rank"] for r in rows) / total if total > 0 else 0.0
    return {
        "about": CAVEAT,
        "energy": total,
        "n_modules": len(rows),
        "ranks": sorted({m.rank for m in used if m.rank is not None}),
        "effective_rank": erank,
        "spectrum_exact": spectrum_exact,
        "components": sorted({m.component for m in used}),
        "adapters": sorted({m.adapter for m in used}),
        "blocks": _groups(rows, "block", total),
        "kinds": _groups(rows, "kind", total),
    }
