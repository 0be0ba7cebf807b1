"""2-D maps of LoRA directions (UMAP, cosine), fitted once and cached.

* Who may fit: a UMAP fit costs seconds to minutes of CPU and adds a map to the store, so
  :func:`cached_map` (any visitor) never fits; :func:`fit_map` fits for a reviewer only, and
  :func:`import_map` fits the default map at corpus import. The map cache is bounded
  (least recently used maps are evicted, ``store.caches``).
* A map is identified by :func:`map_key`: a hash of the embedding space, the fitted
  LoRA ids and their direction matrix, and the UMAP parameters. Its coordinates
  are stored in the store (``map_cache``), so a restart or another process reuses
  them without refitting.
* The map is fitted on the imported corpus (every LoRA whose ``source`` is not
  ``'upload'``); uploads and query directions are *placed* onto it, so a new
  upload never moves the points reviewers already know.
* Placement uses the fitted UMAP model (``transform``) while it is in this
  process's memory. After a restart only the coordinates survive; new points are
  then placed by the documented fallback :func:`knn_place`: the softmax-weighted
  (by cosine / :data:`FALLBACK_TEMPERATURE`) average of the coordinates of their
  ``fallback_k`` most cosine-similar fitted LoRAs, or exactly onto a fitted LoRA
  whose direction is the same (cosine ≥ :data:`SAME_DIRECTION_COS`). The result
  says which method placed each point, so the UI can say so.

umap (and its numba JIT, ~20 s to compile once per process) is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from carlos.core.access import AccessPolicy, CurrentUser, authorize
from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError, PermissionDeniedError
from carlos.store.store import Store

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: Bump when the fitting code changes in a way that changes coordinates.
MAP_CODE_VERSION = 1
#: Fewer fitted points than this give no meaningful UMAP neighbourhood graph.
MIN_POINTS = 8
#: Fitted models kept in memory (each holds its kNN graph; a few MB for the corpus).
MAX_MODELS = 4
#: Softmax temperature of the fallback placement weights (cosine units).
FALLBACK_TEMPERATURE = 0.05
#: A placed vector this close to a fitted one is put exactly on it (a re-upload).
SAME_DIRECTION_COS = 0.9999
METRICS = ("cosine", "euclidean")
PLACEMENTS = ("fitted", "umap-transform", "knn-fallback")


@dataclass(frozen=True)
class MapConfig:
    """UMAP parameters; every field is part of the map's cache key."""

    n_neighbors: int = 15  # neighbourhood size: larger keeps more global structure
    min_dist: float = 0.1  # how tightly points may pack in 2-D (0 ≤ min_dist ≤ 1)
    n_epochs: int | None = None  # optimisation epochs; None: UMAP's default (500 below 10k points)
    random_state: int = 42  # fixed seed: the same corpus and parameters give the same map
    metric: str = "cosine"  # directions are compared by angle, as in retrieval
    fallback_k: int = 10  # neighbours averaged by the fallback placement

    def __post_init__(self) -> None:
        if isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, int) or self.n_neighbors < 2:
            raise InvalidInputError(f"n_neighbors must be an integer ≥ 2, got {self.n_neighbors!r}")
        if not isinstance(self.min_dist, (int, float)) or not 0.0 <= self.min_dist <= 1.0:
            raise InvalidInputError(f"min_dist must be within [0, 1], got {self.min_dist!r}")
        if self.n_epochs is not None and (isinstance(self.n_epochs, bool) or not isinstance(self.n_epochs, int) or self.n_epochs < 1):
            raise InvalidInputError(f"n_epochs must be None or an integer ≥ 1, got {self.n_epochs!r}")
        if self.metric not in METRICS:
            raise InvalidInputError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if isinstance(self.fallback_k, bool) or not isinstance(self.fallback_k, int) or self.fallback_k < 1:
            raise InvalidInputError(f"fallback_k must be an integer ≥ 1, got {self.fallback_k!r}")


@dataclass(frozen=True)
class CorpusMap:
    """Coordinates of every LoRA of a view, and what is needed to place new points."""

    key: str
    config: MapConfig
    frame: pd.DataFrame  # lora_id, x, y, placement (one of PLACEMENTS), in view order
    fit_ids: tuple[str, ...]
    fit_matrix: np.ndarray = field(repr=False)  # (n, d) directions the map was fitted on
    fit_xy: np.ndarray = field(repr=False)  # (n, 2) their coordinates
    model: Any = field(default=None, repr=False, compare=False)  # fitted UMAP, None after a restart
    fitted_now: bool = False  # True when this call ran UMAP (False: coordinates from the store)

    @property
    def can_transform(self) -> bool:
        return self.model is not None

    @property
    def placement_method(self) -> str:
        """How new points are placed on this map right now."""
        return "umap-transform" if self.can_transform else "knn-fallback"


def map_key(embedder: str, ids: Sequence[str], matrix: np.ndarray, config: MapConfig) -> str:
    """Cache key of a map: space, fitted ids and vectors, UMAP parameters, code version.

    The rows are hashed in the order of their ids, not as given: a store does not promise one
    row order (a parallel scan of a large table returns its rows in any order), so the same
    LoRAs and vectors must give the same key in every process."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] != len(ids):
        raise InvalidInputError(f"matrix must be ({len(ids)}, d), got {m.shape}")
    names = np.asarray([str(i) for i in ids])
    order = np.argsort(names, kind="stable")
    h = hashlib.sha256()
    h.update(json.dumps([MAP_CODE_VERSION, embedder, names[order].tolist(), asdict(config)]).encode("utf-8"))
    h.update(str(m.shape).encode("ascii"))
    for start in range(0, len(order), 65_536):  # row blocks: no sorted copy of the whole matrix
        h.update(np.ascontiguousarray(m[order[start : start + 65_536]]).tobytes())
    return "umap-" + h.hexdigest()[:32]


def fit_umap(matrix: np.ndarray, config: MapConfig) -> tuple[Any, np.ndarray]:
    """Fit UMAP on ``matrix``; returns (model, (n, 2) float64 coordinates)."""
    x = _check_matrix(matrix, "matrix")
    if x.shape[0] < MIN_POINTS:
        raise InvalidInputError(f"a map needs at least {MIN_POINTS} LoRAs, got {x.shape[0]}")
    import umap  # lazy: pulls numba and pynndescent (seconds)

    model = umap.UMAP(
        n_components=2,
        n_neighbors=min(config.n_neighbors, x.shape[0] - 1),
        min_dist=config.min_dist,
        n_epochs=config.n_epochs,
        metric=config.metric,
        random_state=config.random_state,
        n_jobs=1,  # a seed makes UMAP single-threaded anyway; saying so silences its warning
    )
    xy = model.fit_transform(x)
    return model, np.asarray(xy, dtype=np.float64)


def knn_place(vectors: np.ndarray, fit_matrix: np.ndarray, fit_xy: np.ndarray, k: int = 10) -> np.ndarray:
    """Fallback placement without the UMAP model (see the module docstring)."""
    v = _check_matrix(vectors, "vectors")
    f = _check_matrix(fit_matrix, "fit_matrix")
    if v.shape[1] != f.shape[1]:
        raise InvalidInputError(f"vectors are {v.shape[1]}-d but the map was fitted on {f.shape[1]}-d")
    if fit_xy.shape != (f.shape[0], 2):
        raise InvalidInputError(f"fit_xy must be ({f.shape[0]}, 2), got {fit_xy.shape}")
    sims = _unit(v) @ _unit(f).T  # (m, n) cosines; zero vectors give 0
    k = min(k, f.shape[0])
    out = np.empty((v.shape[0], 2), dtype=np.float64)
    for i, s in enumerate(sims):
        top = np.argpartition(-s, k - 1)[:k]
        best = top[np.argmax(s[top])]
        if s[best] >= SAME_DIRECTION_COS:
            out[i] = fit_xy[best]
            continue
        w = np.exp((s[top] - s[best]) / FALLBACK_TEMPERATURE)
        out[i] = (w[:, None] * fit_xy[top]).sum(axis=0) / w.sum()
    return out


def place(cmap: CorpusMap, vectors: np.ndarray) -> tuple[np.ndarray, str]:
    """Coordinates of new directions on ``cmap`` and the method used (see PLACEMENTS)."""
    v = _check_matrix(vectors, "vectors")
    if v.shape[0] == 0:
        return np.zeros((0, 2)), cmap.placement_method
    if v.shape[1] != cmap.fit_matrix.shape[1]:
        raise InvalidInputError(f"a {v.shape[1]}-d direction cannot be placed on a map of {cmap.fit_matrix.shape[1]}-d directions")
    if cmap.model is not None:
        return np.asarray(cmap.model.transform(v), dtype=np.float64), "umap-transform"
    return knn_place(v, cmap.fit_matrix, cmap.fit_xy, cmap.config.fallback_k), "knn-fallback"


def require_map_fitter(user: CurrentUser | None, policy: AccessPolicy | None = None) -> str:
    """The reviewer who fits, or PermissionDeniedError: a UMAP fit costs seconds to minutes of
    CPU and adds a map to the store, so no read-only visitor may start one. The check is the
    library's (:func:`carlos.core.access.authorize`: the policy resolved now, or ``policy``)."""
    if user is None:
        raise PermissionDeniedError(f"a caller without an acting user may not fit a map (UMAP): it needs a reviewer; {_FIT_HINT}")
    try:
        return authorize(user, "fit a map (UMAP)", policy)
    except PermissionDeniedError as e:
        raise PermissionDeniedError(f"{e}; {_FIT_HINT}") from None


_FIT_HINT = "a reviewer fits it from the Map page, and `python -m carlos corpus import` fits the default map of the corpus"


def cached_map(
    store: Store, view: CorpusView, config: MapConfig | None = None, *, fit_ids: Sequence[str] | None = None
) -> CorpusMap | None:
    """The map of ``view`` from the store's cache, or None: never fits, so any visitor may call it.

    ``fit_ids`` (default: every LoRA not uploaded) name the LoRAs the map was fitted on; the
    others are placed with :func:`place`.
    """
    return _corpus_map(store, view, config or MapConfig(), fit_ids, None, may_fit=False)


def fit_map(
    store: Store,
    view: CorpusView,
    config: MapConfig | None = None,
    *,
    user: CurrentUser | None,
    policy: AccessPolicy | None = None,
    fit_ids: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> CorpusMap:
    """The map of ``view``, fitted now (UMAP) and cached unless it is cached already.

    Only a reviewer may call it (:func:`require_map_fitter`, checked before anything is
    read or fitted; ``policy`` as in :func:`carlos.core.access.authorize`).
    ``progress(done, total)`` is called before and after the slow step.
    """
    require_map_fitter(user, policy)
    cmap = _corpus_map(store, view, config or MapConfig(), fit_ids, progress, may_fit=True)
    assert cmap is not None
    return cmap


def import_map(store: Store, view: CorpusView, config: MapConfig | None = None, *, progress: Progress | None = None) -> CorpusMap:
    """The default map fitted at corpus import (``python -m carlos corpus import``), so visitors
    find it cached; a second import finds it and fits nothing. The import command is run by
    whoever administers the store file, not by a dashboard session."""
    cmap = _corpus_map(store, view, config or MapConfig(), None, progress, may_fit=True)
    assert cmap is not None
    return cmap


def _corpus_map(
    store: Store, view: CorpusView, config: MapConfig, fit_ids: Sequence[str] | None, progress: Progress | None, *, may_fit: bool
) -> CorpusMap | None:
    # 1. the fitted set and its key, once per view (hashing every direction takes seconds at a million
    # LoRAs, and a page asks for the map, or finds none, on every read of its data)
    fit_mask, ids, key = _fitted_set(view, config, fit_ids)
    # 2. coordinates: the store's cache, else fit (one fit per key at a time in this process). Reading
    # the cache never waits on the key lock: a page reads maps inside its store session, and a fit
    # holds the key lock while it waits for the store to save its result.
    xy = _cached_xy(store, key, ids)
    fitted_now = False
    if xy is None and not may_fit:
        return None
    matrix = view.matrix[fit_mask]
    if xy is None:
        with _key_lock(key):
            xy = _cached_xy(store, key, ids)  # another thread may have fitted it meanwhile
            if xy is None:
                fitted_now = True
                if progress:
                    progress(0, 1)
                log.info("fitting UMAP %s on %d LoRAs", key, len(ids))
                model, xy = fit_umap(matrix, config)
                if not store.caches.put_map(key, ids, xy):
                    log.warning("map %s is larger than the map cache's byte limit: shown now, not cached", key)
                _remember(key, model)
                if progress:
                    progress(1, 1)
    model = model_in_memory(key)
    cmap = CorpusMap(
        key=key, config=config, frame=pd.DataFrame(), fit_ids=ids, fit_matrix=matrix, fit_xy=xy, model=model, fitted_now=fitted_now
    )
    # 3. everything else in the view is placed
    frame = pd.DataFrame({"lora_id": view.frame["lora_id"].to_numpy(), "x": np.nan, "y": np.nan, "placement": "fitted"})
    frame.loc[fit_mask, ["x", "y"]] = xy
    if (~fit_mask).any():
        placed, method = place(cmap, view.matrix[~fit_mask])
        frame.loc[~fit_mask, ["x", "y"]] = placed
        frame.loc[~fit_mask, "placement"] = method
    return replace(cmap, frame=frame)


def forget_models() -> None:
    """Drop the in-memory models (what a restart does; tests use it for the fallback)."""
    with _models_lock:
        _models.clear()


def model_in_memory(key: str) -> Any:
    """The fitted UMAP model of map ``key`` while this process holds it, else None (callers
    that remember a CorpusMap check it is still the map :func:`cached_map` would give)."""
    with _models_lock:
        return _models.get(key)


# -- internals ------------------------------------------------------------------------------------
_FITTED: OrderedDict[tuple[Any, ...], tuple[CorpusView, tuple[np.ndarray, tuple[str, ...], str]]] = OrderedDict()
_FITTED_MAX = 4


def _fitted_set(view: CorpusView, config: MapConfig, fit_ids: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...], str]:
    """(mask of the fitted rows, their ids, the map key) of ``view``, remembered per view object."""
    memo = (id(view), view.data_version, config, None if fit_ids is None else tuple(sorted(set(fit_ids))))
    with _models_lock:
        hit = _FITTED.get(memo)
        if hit is not None and hit[0] is view:
            return hit[1]
    if fit_ids is None:
        fit_mask = (view.frame["source"] != "upload").to_numpy()
    else:
        wanted = set(fit_ids)
        unknown = wanted - set(view.ids)
        if unknown:
            raise InvalidInputError(f"fit_ids not in the {view.embedder} view: {sorted(unknown)[:5]}")
        fit_mask = view.frame["lora_id"].isin(wanted).to_numpy()
    ids = tuple(view.frame["lora_id"][fit_mask])
    if len(ids) < MIN_POINTS:
        raise InvalidInputError(f"a map needs at least {MIN_POINTS} fitted LoRAs, the view has {len(ids)}")
    out = (fit_mask, ids, map_key(view.embedder, ids, view.matrix[fit_mask], config))
    with _models_lock:
        _FITTED[memo] = (view, out)
        while len(_FITTED) > _FITTED_MAX:
            _FITTED.popitem(last=False)
    return out


_models: OrderedDict[str, Any] = OrderedDict()
_models_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def _key_lock(key: str) -> threading.Lock:
    with _models_lock:
        return _key_locks.setdefault(key, threading.Lock())


def _remember(key: str, model: Any) -> None:
    with _models_lock:
        _models[key] = model
        _models.move_to_end(key)
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)


def _cached_xy(store: Store, key: str, ids: Sequence[str]) -> np.ndarray | None:
    df = store.caches.get_map(key)
    if len(df) != len(ids):
        return None
    df = df.set_index("lora_id")
    if not df.index.isin(ids).all():
        return None
    return df.loc[list(ids), ["x", "y"]].to_numpy(dtype=np.float64)


def _check_matrix(a: Any, name: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise InvalidInputError(f"{name} must be a (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInputError(f"{name} contains NaN or inf")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 1e-12)
