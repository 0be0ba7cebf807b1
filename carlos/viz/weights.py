"""The weight statistics of a LoRA file as a figure: ΔW energy per block, labelled as file statistics.

Draws the ``stats`` of a weight fingerprint (:func:`carlos.weights.stats.weight_stats`): one
bar per UNet block or text encoder with its share of the file's ΔW energy and, in the hover,
the modules and the energy-weighted effective rank. The title and the caption it returns say
what the numbers are: statistics of the weights in the file, not a prediction of what the LoRA
does to images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from carlos.errors import InvalidInputError
from carlos.weights.stats import CAVEAT

_ORDER = ("te1", "te2", "unet:down_blocks_0", "unet:down_blocks_1", "unet:down_blocks_2", "unet:mid_block")
_NAMES = {
    "te1": "text encoder 1 (CLIP ViT-L)",
    "te2": "text encoder 2 (OpenCLIP bigG)",
    "unet:mid_block": "UNet mid block",
    "unet:other": "UNet, other layers",
}


def _label(block: str) -> str:
    if block in _NAMES:
        return _NAMES[block]
    kind, _, idx = block.removeprefix("unet:").rpartition("_")
    return f"UNet {kind.replace('_blocks', '')} block {idx}" if kind in ("down_blocks", "up_blocks") else block


def _rank(block: str) -> tuple[int, str]:
    if block in _ORDER:
        return (_ORDER.index(block), block)
    return (len(_ORDER) + (0 if block.startswith("unet:up_blocks") else 1), block)


def block_energy_figure(stats: Mapping[str, Any]) -> go.Figure:
    """Share of ΔW energy per block, in the network's order (text encoders, down, mid, up)."""
    blocks = stats.get("blocks") if isinstance(stats, Mapping) else None
    if not blocks:
        raise InvalidInputError("these weight statistics have no per-block energy")
    rows = sorted(blocks, key=lambda b: _rank(str(b["block"])))
    fig = go.Figure(
        go.Bar(
            x=[100.0 * float(b["share"]) for b in rows],
            y=[_label(str(b["block"])) for b in rows],
            orientation="h",
            customdata=[[int(b["modules"]), float(b["effective_rank"])] for b in rows],
            hovertemplate="%{y}: %{x:.1f} % of the ΔW energy<br>%{customdata[0]} modules, "
            "effective rank %{customdata[1]:.1f}<extra></extra>",
            marker_color="#7f7f7f",
        )
    )
    fig.update_layout(
        title={"text": "ΔW energy per block (statistics of the file)", "font": {"size": 14}},
        height=110 + 26 * len(rows),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="share of ‖ΔW‖² (%)",
        yaxis={"autorange": "reversed"},
    )
    return fig


def block_energy_caption(stats: Mapping[str, Any]) -> str:
    """What the figure shows and what it does not (plain text)."""
    ranks = ", ".join(map(str, stats.get("ranks") or [])) or "unknown"
    exact = "" if stats.get("spectrum_exact", True) else " (estimated for LoHa/LoKr modules)"
    return (
        f"Where the file's weight change ΔW = scale·up·down sits: {stats.get('n_modules', 0)} modules, declared rank {ranks}, "
        f"energy-weighted effective rank {float(stats.get('effective_rank', 0.0)):.1f}{exact}. These are {CAVEAT}."
    )
