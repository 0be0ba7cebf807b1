"""UMAP maps: cache key, fit once (a reviewer only) and cache in the store, place uploads with
the fitted model, and the documented kNN fallback after a restart. One small fit (UMAP's numba
JIT compiles once per process, most of this file's time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carlos.errors import InvalidInputError, PermissionDeniedError
from carlos.review.access import AccessPolicy, CurrentUser
from carlos.store.catalog import load_view
from carlos.store.store import Store
from carlos.viz import maps

SPACE = "test/32d"
CONFIG = maps.MapConfig(n_neighbors=10, n_epochs=60, random_state=7)
N_PER, DIM = 60, 32
POLICY = AccessPolicy.from_list(["alice@example.org"], source="this test")
REVIEWER = CurrentUser.local("alice@example.org")
VISITOR = CurrentUser.local("mallory@example.org")  # can_write=True: the library checks the policy, not the flag


def _clusters(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated clusters of directions (by angle)."""
    centres = np.eye(DIM)[:3] * 5.0
    labels = np.repeat(np.arange(3), N_PER)
    return centres[labels] + rng.normal(scale=0.6, size=(3 * N_PER, DIM)), labels


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, np.ndarray, np.ndarray]:
    """A store with 180 corpus LoRAs in 3 clusters and 3 uploads (one per cluster)."""
    rng = np.random.default_rng(0)
    x, labels = _clusters(rng)
    uploads = np.eye(DIM)[:3] * 5.0 + rng.normal(scale=0.3, size=(3, DIM))
    store = Store.open(tmp_path_factory.mktemp("maps") / "maps.duckdb")
    rows = [{"lora_id": f"c:{i}", "source": "test", "name": f"c{i}"} for i in range(len(x))]
    rows += [{"lora_id": f"u:{i}", "source": "upload", "name": f"u{i}"} for i in range(3)]
    store.loras.upsert(rows)
    vecs = np.vstack([x, uploads])
    store.reps.put_many(
        [
            {"lora_id": r["lora_id"], "embedder": SPACE, "direction": v, "strength": 1.0, "consistency": 0.1, "n_samples": 2}
            for r, v in zip(rows, vecs)
        ]
    )
    return store, x, labels


@pytest.fixture(scope="module")
def fitted(clustered: tuple[Store, np.ndarray, np.ndarray]) -> maps.CorpusMap:
    maps.forget_models()
    return maps.fit_map(clustered[0], load_view(clustered[0], SPACE), CONFIG, user=REVIEWER, policy=POLICY)


def test_config_is_checked() -> None:
    for bad in ({"n_neighbors": 1}, {"min_dist": 1.5}, {"n_epochs": 0}, {"metric": "hamming"}, {"fallback_k": 0}, {"n_neighbors": True}):
        with pytest.raises(InvalidInputError):
            maps.MapConfig(**bad)


def test_map_key_depends_on_space_ids_vectors_and_parameters() -> None:
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    key = maps.map_key("s", ["a", "b", "c"], m, CONFIG)
    assert key == maps.map_key("s", ["a", "b", "c"], m.copy(), CONFIG)
    others = {
        maps.map_key("t", ["a", "b", "c"], m, CONFIG),
        maps.map_key("s", ["a", "c", "b"], m, CONFIG),
        maps.map_key("s", ["a", "b", "c"], m + 1e-3, CONFIG),
        maps.map_key("s", ["a", "b", "c"], m, maps.MapConfig(n_neighbors=11, n_epochs=60, random_state=7)),
    }
    assert key not in others and len(others) == 4
    with pytest.raises(InvalidInputError):
        maps.map_key("s", ["a"], m, CONFIG)


def test_fit_caches_coordinates_and_keeps_clusters_apart(clustered, fitted: maps.CorpusMap) -> None:
    store, _, labels = clustered
    assert fitted.fitted_now and fitted.can_transform
    assert len(fitted.fit_ids) == 3 * N_PER and not any(i.startswith("u:") for i in fitted.fit_ids)
    cached = store.caches.get_map(fitted.key).set_index("lora_id").loc[list(fitted.fit_ids), ["x", "y"]]
    np.testing.assert_allclose(cached.to_numpy(), fitted.fit_xy)
    # a cluster's points are nearer their own centroid than any other cluster's
    xy = fitted.fit_xy
    centroids = np.stack([xy[labels == k].mean(axis=0) for k in range(3)])
    nearest = np.argmin(((xy[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95
    # uploads were placed by the fitted model, each next to its own cluster
    frame = fitted.frame.set_index("lora_id")
    assert list(frame.loc[["u:0", "u:1", "u:2"], "placement"]) == ["umap-transform"] * 3
    up = frame.loc[["u:0", "u:1", "u:2"], ["x", "y"]].to_numpy()
    assert list(np.argmin(((up[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)) == [0, 1, 2]


def test_second_call_reads_the_store_and_after_a_restart_falls_back(clustered, fitted) -> None:
    store, x, labels = clustered
    view = load_view(store, SPACE)
    again = maps.cached_map(store, view, CONFIG)
    assert not again.fitted_now and again.key == fitted.key and again.can_transform
    np.testing.assert_allclose(again.fit_xy, fitted.fit_xy)
    maps.forget_models()  # what a restart does: coordinates survive in the store, the model doesn't
    restarted = maps.cached_map(store, view, CONFIG)
    assert not restarted.fitted_now and not restarted.can_transform
    assert restarted.placement_method == "knn-fallback"
    frame = restarted.frame.set_index("lora_id")
    assert set(frame.loc[["u:0", "u:1", "u:2"], "placement"]) == {"knn-fallback"}
    centroids = np.stack([restarted.fit_xy[labels == k].mean(axis=0) for k in range(3)])
    up = frame.loc[["u:0", "u:1", "u:2"], ["x", "y"]].to_numpy()
    assert list(np.argmin(((up[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)) == [0, 1, 2]
    # a re-upload of a fitted direction lands exactly on it
    xy, method = maps.place(restarted, x[17] * 2.0)
    assert method == "knn-fallback"
    np.testing.assert_allclose(xy[0], restarted.fit_xy[17])


def test_knn_place_is_a_weighted_average_of_neighbours() -> None:
    fit = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [-50.0, -50.0]])
    mid = maps.knn_place(np.array([[1.0, 1.0]]), fit, xy, k=2)  # equally close to the first two
    np.testing.assert_allclose(mid, [[5.0, 0.0]])
    near_first = maps.knn_place(np.array([[1.0, 0.2]]), fit, xy, k=2)
    assert 0.0 < near_first[0, 0] < 5.0
    with pytest.raises(InvalidInputError, match="fitted on 2-d"):
        maps.knn_place(np.ones((1, 3)), fit, xy)
    with pytest.raises(InvalidInputError, match="NaN"):
        maps.knn_place(np.array([[np.nan, 1.0]]), fit, xy)


def test_too_few_points_and_unknown_fit_ids_are_explained(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "few.duckdb")
    store.loras.upsert([{"lora_id": f"c:{i}", "source": "test"} for i in range(4)])
    store.reps.put_many(
        [
            {"lora_id": f"c:{i}", "embedder": SPACE, "direction": np.eye(DIM)[i], "strength": 1.0, "consistency": 0.1, "n_samples": 2}
            for i in range(4)
        ]
    )
    view = load_view(store, SPACE)
    with pytest.raises(InvalidInputError, match="at least"):
        maps.fit_map(store, view, CONFIG, user=REVIEWER, policy=POLICY)
    with pytest.raises(InvalidInputError, match="fit_ids"):
        maps.cached_map(store, view, CONFIG, fit_ids=["c:0", "nope"])


def test_only_a_reviewer_fits_and_a_visitor_gets_no_map(clustered, fitted) -> None:
    store, _, _ = clustered
    view = load_view(store, SPACE)
    other = maps.MapConfig(n_neighbors=12, n_epochs=60, random_state=7)  # not cached
    before = store.table_counts()
    assert maps.cached_map(store, view, other) is None  # a visitor never fits
    for user in (VISITOR, None):
        with pytest.raises(PermissionDeniedError, match="may not fit a map"):
            maps.fit_map(store, view, other, user=user, policy=POLICY)
    assert store.table_counts() == before and not store.caches.has_map(maps.map_key(SPACE, fitted.fit_ids, fitted.fit_matrix, other))
