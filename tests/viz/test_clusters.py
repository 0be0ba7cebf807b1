"""Named map regions: HDBSCAN finds separated blobs, labels come from their members' own words,
the sample path for large maps agrees with the direct one, and new points join the right region."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.errors import InvalidInputError
from carlos.viz import clusters

THEMES = (("oil painting", "brush strokes on canvas"), ("pixel art", "retro 8-bit sprites"), ("neon cyberpunk", "glowing city"))


def _blobs(n_per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), n_per)
    return centres[truth] + rng.normal(scale=0.7, size=(3 * n_per, 2)), truth


def _texts(truth: np.ndarray) -> tuple[list[str], list[str]]:
    names = [f"{THEMES[t][0].title()} LoRA v{i % 7}" for i, t in enumerate(truth)]
    descriptions = [f"{THEMES[t][1]}; buy me a coffee on patreon" for t in truth]
    return names, descriptions


def _agreement(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the clustered points whose cluster's majority truth label is their own; at most
    a third of the points may be left unclustered (HDBSCAN's noise: Gaussian tails)."""
    assert (found == clusters.NOISE).mean() < 1 / 3
    ok = 0
    for c in set(found.tolist()) - {clusters.NOISE}:
        members = truth[found == c]
        ok += int((members == np.bincount(members).argmax()).sum())
    return ok / int((found != clusters.NOISE).sum())


def test_separated_blobs_become_named_regions_with_their_risk_mix() -> None:
    xy, truth = _blobs(60)
    names, descriptions = _texts(truth)
    risk = ["too strong" if t == 0 else "low risk" for t in truth]
    ids = [f"l{i}" for i in range(len(xy))]
    result = clusters.cluster_map(xy, ids, names, descriptions, risk=risk, config=clusters.ClusterConfig(min_cluster_size=10))
    found = result.assignment["cluster_id"].to_numpy()
    assert _agreement(found, truth) > 0.95
    regions = [c for c in result.clusters if c.cluster_id != clusters.NOISE]
    assert len(regions) >= 3
    by_theme = {}
    for c in regions:
        theme = np.bincount(truth[found == c.cluster_id]).argmax()
        by_theme.setdefault(theme, []).append(c)
    assert set(by_theme) == {0, 1, 2}
    for theme, cs in by_theme.items():
        words = set(THEMES[theme][0].split())
        assert any(words & set(c.terms) for c in cs), (theme, [c.label for c in cs])
        for c in cs:  # the boilerplate every member shares names no region
            assert not {"patreon", "coffee", "buy", "lora"} & set(c.terms)
    strong = [c for c in by_theme[0]]
    assert all(set(c.risk_mix) == {"too strong"} for c in strong)
    assert sum(c.size for c in result.clusters) == len(xy)
    sizes = [c.size for c in regions]
    assert sizes == sorted(sizes, reverse=True) and [c.cluster_id for c in regions] == list(range(len(regions)))
    d = result.to_dict()
    assert d["n_points"] == len(xy) and d["n_clusters"] == len(regions)


def test_a_sample_finds_the_same_regions_as_all_points() -> None:
    xy, truth = _blobs(200, seed=1)
    cfg_all = clusters.ClusterConfig(min_cluster_size=20)
    cfg_sample = clusters.ClusterConfig(min_cluster_size=20, max_fit_points=150)
    full = clusters.find_clusters(xy, cfg_all)
    sampled = clusters.find_clusters(xy, cfg_sample)
    assert _agreement(full, truth) > 0.95 and _agreement(sampled, truth) > 0.95
    names, _ = _texts(truth)
    assert clusters.cluster_map(xy, [str(i) for i in range(len(xy))], names, config=cfg_sample).sampled


def test_new_points_join_the_region_they_fall_in_and_far_points_none() -> None:
    import pandas as pd

    xy, truth = _blobs(60)
    names, _ = _texts(truth)
    ids = [f"l{i}" for i in range(len(xy))]
    result = clusters.cluster_map(xy, ids, names, config=clusters.ClusterConfig(min_cluster_size=10))
    frame = pd.DataFrame({"lora_id": ids, "x": xy[:, 0], "y": xy[:, 1]})
    got = clusters.assign(result, frame, np.array([[10.2, 0.1], [0.1, 9.8], [100.0, 100.0]]))
    found = result.assignment["cluster_id"].to_numpy()
    assert got[0] in set(found[truth == 1]) and got[1] in set(found[truth == 2])
    assert got[2] == clusters.NOISE


def test_too_few_points_are_unclustered_and_bad_input_is_refused() -> None:
    result = clusters.cluster_map(np.zeros((5, 2)), list("abcde"), list("abcde"))
    assert [c.label for c in result.clusters] == [clusters.NOISE_LABEL]
    with pytest.raises(InvalidInputError):
        clusters.find_clusters(np.full((20, 2), np.nan))
    with pytest.raises(InvalidInputError):
        clusters.cluster_map(np.zeros((3, 2)), ["a", "b"], ["a", "b", "c"])
    with pytest.raises(InvalidInputError):
        clusters.ClusterConfig(selection="kmeans")


def test_renumber_orders_by_size_and_keeps_noise() -> None:
    got = clusters.renumber(np.array([5, 5, -1, 2, 2, 2, 9]))
    assert got.tolist() == [1, 1, -1, 0, 0, 0, 2]
