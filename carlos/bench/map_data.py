"""Synthetic stores for the map benchmark: n LoRAs with a cached map whose points form named blobs.

The directions, Strength and Consistency come from :class:`carlos.bench.synthetic.CorpusModel`
(fitted on the released corpus), so the Map page's risk classes and memory are those of a real
store of that size. The **map coordinates are synthetic**: ``regions`` Gaussian blobs of uneven
size and spread plus 5 % uniform background, not a UMAP fit (a UMAP of a million directions
costs ~8 minutes here, ``bench scale``, and says nothing about drawing). Each blob has a theme,
and its members' names use the theme's words, so the regions found on the map get labels.
The coordinates are stored in the map cache under the key the page computes for the default
map of this store, so the page finds a cached map as after ``corpus import``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carlos.bench.synthetic import CorpusModel
from carlos.config import CORPUS_EMBEDDER

#: Words of the synthetic themes (three per theme); names are built from them.
THEMES = tuple(
    tuple(t.split())
    for t in (
        "oil painting canvas",
        "pixel sprite retro",
        "neon cyberpunk city",
        "watercolor wash paper",
        "anime cel shading",
        "ukiyo woodblock print",
        "fire lava particles",
        "logo text typography",
        "portrait skin realism",
        "chibi cute sticker",
        "gothic cathedral dark",
        "lego brick toy",
        "ink sketch lineart",
        "origami paper fold",
        "steampunk brass gears",
        "clay figure stopmotion",
        "isometric tiles game",
        "glitch vaporwave synth",
        "armor knight fantasy",
        "food photo closeup",
        "tarot card ornate",
        "mecha robot hangar",
        "vintage film grain",
        "stained glass window",
        "low poly render",
        "comic halftone panel",
        "marble statue classical",
        "bioluminescent forest glow",
        "embroidery thread stitch",
        "blueprint technical drawing",
        "horror creature eldritch",
        "snow winter cold",
    )
)
SUFFIXES = ("XL", "SDXL", "Style", "LoRA", "v2", "Concept", "Slider", "Mix")


def synthetic_points(n: int, *, regions: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) coordinates and each point's theme (-1: background): uneven Gaussian blobs."""
    rng = np.random.default_rng(seed)
    k = min(regions, len(THEMES))
    centres = rng.uniform(-12, 12, size=(k, 2))
    spread = rng.uniform(0.35, 1.3, size=k)
    weights = rng.gamma(2.0, size=k)
    theme = rng.choice(k, size=n, p=weights / weights.sum())
    xy = centres[theme] + rng.normal(size=(n, 2)) * spread[theme, None]
    background = rng.random(n) < 0.05
    xy[background] = rng.uniform(-14, 14, size=(int(background.sum()), 2))
    theme[background] = -1
    return xy, theme


def synthetic_names(theme: np.ndarray, *, seed: int = 0) -> list[str]:
    """A name per point from its theme's words (background points: random words)."""
    rng = np.random.default_rng(seed + 1)
    words = np.array(THEMES, dtype=object)
    pick = rng.integers(0, 3, size=(len(theme), 2))
    rand_theme = rng.integers(0, len(THEMES), size=len(theme))
    src = np.where(theme >= 0, theme, rand_theme)
    suffix = rng.integers(0, len(SUFFIXES), size=len(theme))
    return [
        f"{words[t][a].title()} {words[t][b].title()} {SUFFIXES[s]} v{i % 9}"
        for i, (t, a, b, s) in enumerate(zip(src, pick[:, 0], pick[:, 1], suffix))
    ]


def build_map_store(db: str, n: int, model: CorpusModel, *, regions: int = 30, seed: int = 0) -> dict[str, Any]:
    """A fresh store at ``db`` with ``n`` synthetic LoRAs and their cached default map; also writes
    ``<db>.points.parquet`` (lora_id, name, x, y, risk_class) for the component harness."""
    from carlos.core.risk import annotate
    from carlos.store.catalog import load_view
    from carlos.store.store import Store
    from carlos.viz import maps

    t0 = time.perf_counter()
    store = Store.open(db)
    xy, theme = synthetic_points(n, regions=regions, seed=seed)
    names = synthetic_names(theme, seed=seed)
    start = 0
    for m, s, c in model.sample(n, seed=seed):
        ids = [f"syn:{i:07d}" for i in range(start, start + len(m))]
        part = names[start : start + len(m)]
        store.reps.bulk_insert(ids, m, s, c, embedder=CORPUS_EMBEDDER, source="synthetic", protocol="synthetic", names=part)
        start += len(m)
    import_s = time.perf_counter() - t0
    view = load_view(store, CORPUS_EMBEDDER)
    rows = np.array([int(i.split(":")[1]) for i in view.frame["lora_id"]])
    ids = tuple(view.frame["lora_id"])
    key = maps.map_key(view.embedder, ids, view.matrix, maps.MapConfig())
    if not store.caches.put_map(key, ids, xy[rows]):
        raise RuntimeError(f"a map of {n} points exceeds the map cache's byte limit (CARLOS_CACHE_MAPS_MAX_BYTES)")
    points = annotate(view.frame)[["lora_id", "name", "risk_class"]].assign(x=xy[rows, 0], y=xy[rows, 1])
    pd.DataFrame(points).to_parquet(Path(db).with_suffix(".points.parquet"), index=False)
    return {"n": n, "import_s": import_s, "build_s": time.perf_counter() - t0, "map_key": key}
