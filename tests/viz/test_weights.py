"""carlos.viz.weights: the per-block ΔW energy chart, labelled as statistics of the file."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.errors import InvalidInputError
from carlos.viz.weights import block_energy_caption, block_energy_figure
from carlos.weights.canonical import ArrayAdapter
from carlos.weights.sketch import fingerprint
from carlos.weights.stats import CAVEAT


def test_block_energy_chart_in_network_order_with_its_caveat() -> None:
    rng = np.random.default_rng(0)
    names = [
        "unet:up_blocks_0_attentions_0_proj_in",
        "unet:mid_block_attentions_0_proj_in",
        "te2:encoder_layers_0_mlp_fc1",
        "te1:encoder_layers_0_mlp_fc1",
    ]
    stats = fingerprint(ArrayAdapter({n: (rng.standard_normal((8, 2)), rng.standard_normal((2, 8))) for n in names})).stats
    fig = block_energy_figure(stats)
    bar = fig.data[0]
    assert list(bar.y) == ["text encoder 1 (CLIP ViT-L)", "text encoder 2 (OpenCLIP bigG)", "UNet mid block", "UNet up block 0"]
    assert sum(bar.x) == pytest.approx(100.0) and "statistics of the file" in fig.layout.title.text
    caption = block_energy_caption(stats)
    assert CAVEAT in caption and "4 modules" in caption and "declared rank 2" in caption
    with pytest.raises(InvalidInputError):
        block_energy_figure({})
