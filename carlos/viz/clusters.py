"""Named regions of the map: density clusters of the map's points, labelled by their members' words.

* **Clusters** are HDBSCAN (scikit-learn) on the map's 2-D coordinates, as topic maps do: UMAP
  already turned cosine neighbourhoods of the Directions into 2-D density, and HDBSCAN finds the
  dense regions without a fixed number of clusters. The corpus is one loose cloud, so the "leaf"
  selection (even regions) is the default: "eom" jumps between 2 and 26 regions as the minimum size
  moves from 8 to 10 on the 740 LoRAs, "leaf" stays at 27 from 10 to 12. A point in no dense region
  joins the nearest region when it lies within that region's spacing (:func:`nearest_labels`), else
  it is *noise* (cluster ``-1``, "unclustered"; 48 of 740 on the corpus map). Above :attr:`ClusterConfig.max_fit_points` the clusters are
  found on a seeded random sample and every other point joins the cluster of its nearest sampled
  point within the sample's own noise radius (else noise), so a million points cost about what the
  sample does.
* **Labels** are the cluster's most distinctive words by class-based TF-IDF over its members'
  cleaned names and descriptions (:func:`carlos.core.text.clean_text`): a word's share of the
  cluster's words times ``log(1 + A / f)`` (``A`` the mean number of words per cluster, ``f`` the
  word's count over all clusters). Each document counts a word once, and a word must occur in at
  least :attr:`ClusterConfig.min_term_share` of the members (and in two), so one long description
  cannot name a region. A region of more than :attr:`ClusterConfig.max_label_docs` members is named
  from a seeded sample of that many (:func:`label_sample`). Labels describe what uploaders *call* the LoRAs in a region that behaves
  alike; they are words of creators, shown as plain text.
* Uploads and search hits are *assigned* to the cluster of their nearest clustered map point
  (:func:`assign`), the same rule as the sample extension.

Clusters are a pure function of the map's coordinates, the texts and the config, so they are
cached beside the map by its key (in this process; recomputing costs ~50 ms for the corpus); the
risk mix under the thresholds in force is counted per call (:func:`with_risk_mix`).
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from carlos.core.text import clean_text, tokenize
from carlos.errors import InvalidInputError

NOISE = -1
NOISE_LABEL = "unclustered"
#: A word in a member's name counts this many times its use in a description: names say what a
#: LoRA is, descriptions mostly how to use it (and where to tip the creator).
NAME_WEIGHT = 3
#: Words of LoRA pages that say nothing about what a region holds.
_DOMAIN_WORDS = (
    "lora loras lycoris locon loha lokr sdxl xl sd sd1 sd15 sd2 pony illustrious noobai model models "
    "version versions trained train training trigger triggers word words use using used weight weights "
    "recommend recommended strength base checkpoint checkpoints prompt prompts image images get thank "
    "thanks please like also new make made work works well good best one two first support enjoy "
    "epoch epochs step steps dataset civitai update updated https http www com style styles flux "
    "patreon discord kofi ko fi buy coffee join sharing tip tips donate rating ratings review reviews "
    # English words the tokenizer keeps (it drops only the commonest ones)
    "can more all any some much many most very just only even still which what when where who how "
    "will would could should may might must do does did done you your yours we us i this those "
    "with without about after before over under up down out off again here why each other such "
    "own same too s t don now was were being having am"
)
DOMAIN_STOPWORDS = frozenset(_DOMAIN_WORDS.split())


@dataclass(frozen=True)
class ClusterConfig:
    """How regions are found and named; every field is part of the clusters' cache key."""

    min_cluster_size: int | None = None  # None: max(8, points / 60): a few dozen regions at any size
    min_samples: int = 3  # HDBSCAN's density smoothing: small keeps thin regions (the corpus is one loose cloud)
    selection: str = "leaf"  # HDBSCAN cluster selection: "leaf" (many even regions) or "eom" (few large ones)
    absorb_noise: bool = True  # a noise point near a region (nearest_labels' radius) joins it
    n_terms: int = 3  # words in a label
    min_term_share: float = 0.1  # a label word occurs in at least this share of the members (and in 2)
    max_fit_points: int = 20_000  # above: cluster a seeded sample, extend to the rest (HDBSCAN's MST is O(n²): 50k cost 13 s here)
    max_label_docs: int = 2_000  # members per region whose words name it (a seeded sample above)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_cluster_size is not None and self.min_cluster_size < 2:
            raise InvalidInputError(f"min_cluster_size must be ≥ 2, got {self.min_cluster_size}")
        if self.selection not in ("leaf", "eom"):
            raise InvalidInputError(f"selection must be 'leaf' or 'eom', got {self.selection!r}")
        if self.n_terms < 1 or not 0.0 <= self.min_term_share <= 1.0 or self.max_fit_points < 100:
            raise InvalidInputError("need n_terms ≥ 1, 0 ≤ min_term_share ≤ 1 and max_fit_points ≥ 100")
        if self.max_label_docs < 10:
            raise InvalidInputError(f"max_label_docs must be ≥ 10, got {self.max_label_docs}")

    def size_for(self, n: int) -> int:
        return self.min_cluster_size or max(8, round(n / 60))


@dataclass(frozen=True)
class Cluster:
    """One named region of the map."""

    cluster_id: int
    label: str  # the top terms joined by " · " (NOISE_LABEL for noise)
    terms: tuple[str, ...]
    size: int
    centroid: tuple[float, float]  # mean map position: where the label is drawn
    risk_mix: dict[str, int] = field(default_factory=dict)  # risk class -> members

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["terms"], d["centroid"] = list(self.terms), list(self.centroid)
        return d


@dataclass(frozen=True)
class MapClusters:
    """The regions of one map: ``assignment`` has a ``cluster_id`` per map point (``lora_id``)."""

    clusters: list[Cluster]  # by size, largest first; noise (if any) last
    assignment: pd.DataFrame  # lora_id, cluster_id, cluster (its label)
    config: ClusterConfig
    map_key: str | None
    sampled: bool  # True when found on a sample of max_fit_points

    def labels(self) -> dict[int, str]:
        return {c.cluster_id: c.label for c in self.clusters}

    def members(self, cluster_id: int) -> list[str]:
        return self.assignment.loc[self.assignment["cluster_id"] == cluster_id, "lora_id"].tolist()

    def to_dict(self) -> dict[str, Any]:
        return {
            "map_key": self.map_key,
            "config": asdict(self.config),
            "sampled": self.sampled,
            "n_points": len(self.assignment),
            "n_clusters": sum(c.cluster_id != NOISE for c in self.clusters),
            "noise": int((self.assignment["cluster_id"] == NOISE).sum()),
            "clusters": [c.to_dict() for c in self.clusters],
        }


def find_clusters(xy: np.ndarray, config: ClusterConfig | None = None) -> np.ndarray:
    """HDBSCAN cluster ids (``-1`` noise) of 2-D points; a seeded sample above ``max_fit_points``."""
    from sklearn.cluster import HDBSCAN

    cfg = config or ClusterConfig()
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
        raise InvalidInputError(f"map coordinates must be finite (n, 2), got shape {xy.shape}")
    n = len(xy)
    size = cfg.size_for(min(n, cfg.max_fit_points))
    if n < max(2 * size, 4):
        return np.full(n, NOISE, dtype=np.int64)
    sample = (
        np.arange(n) if n <= cfg.max_fit_points else np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.max_fit_points, replace=False))
    )
    model = HDBSCAN(min_cluster_size=size, min_samples=min(cfg.min_samples, size), cluster_selection_method=cfg.selection, copy=True)
    labels = model.fit_predict(xy[sample]).astype(np.int64)
    if cfg.absorb_noise and (labels == NOISE).any():
        noise = labels == NOISE
        labels[noise] = nearest_labels(xy[sample][noise], xy[sample][~noise], labels[~noise])
    if n == len(sample):
        return labels
    return nearest_labels(xy, xy[sample], labels)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0, 1, … by decreasing size (ties by first member), noise stays ``-1``."""
    labels = np.asarray(labels, dtype=np.int64)
    ids, first, counts = np.unique(labels[labels != NOISE], return_index=True, return_counts=True)
    order = ids[np.lexsort((first, -counts))]
    lookup = np.full(int(labels.max(initial=NOISE)) + 2, NOISE, dtype=np.int64)
    lookup[order + 1] = np.arange(len(order))
    return lookup[labels + 1]


def nearest_labels(points: np.ndarray, ref_xy: np.ndarray, ref_labels: np.ndarray) -> np.ndarray:
    """The label of each point's nearest clustered reference point, or noise when that point is
    farther than the clustered points' own nearest-neighbour distance (their 99th percentile)."""
    from sklearn.neighbors import KDTree

    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    keep = ref_labels != NOISE
    if not keep.any() or not len(points):
        return np.full(len(points), NOISE, dtype=np.int64)
    ref, labels = np.asarray(ref_xy, dtype=np.float64)[keep], ref_labels[keep]
    tree = KDTree(ref)
    radius = float(np.quantile(tree.query(ref, k=2)[0][:, 1], 0.99)) if len(ref) > 1 else math.inf
    dist, idx = tree.query(points, k=1)
    out = labels[idx[:, 0]].astype(np.int64)
    out[dist[:, 0] > 2.0 * radius] = NOISE
    return out


def distinctive_terms(
    names: Sequence[str | None],
    descriptions: Sequence[str | None],
    labels: np.ndarray,
    config: ClusterConfig | None = None,
) -> dict[int, list[str]]:
    """Class-based TF-IDF: each cluster's ``n_terms`` most distinctive words (module docstring).
    A word counts :data:`NAME_WEIGHT` times in a member's name and once in its description."""
    cfg = config or ClusterConfig()
    labels = np.asarray(labels)
    weighted: dict[int, Counter[str]] = {}
    docs: dict[int, Counter[str]] = {}
    rows = label_sample(labels, cfg.max_label_docs, cfg.seed)
    sizes = Counter(int(c) for c in labels[rows])
    for i in rows:
        name, desc, c = names[i], descriptions[i], int(labels[i])
        in_name, in_desc = _words(clean_text(name or "", is_html=False)), _words(clean_text(desc or ""))
        weighted.setdefault(int(c), Counter()).update({t: NAME_WEIGHT for t in in_name})
        weighted[int(c)].update(in_desc - in_name)
        docs.setdefault(int(c), Counter()).update(in_name | in_desc)
    if not weighted:
        return {}
    total: Counter[str] = Counter()
    for counts in weighted.values():
        total.update(counts)
    mean_words = sum(total.values()) / len(weighted)
    out: dict[int, list[str]] = {}
    for c, counts in weighted.items():
        n_words = sum(counts.values()) or 1
        floor = max(2, math.ceil(cfg.min_term_share * sizes[c]))
        scored = [(w / n_words * math.log(1 + mean_words / total[t]), t) for t, w in counts.items() if docs[c][t] >= floor]
        out[c] = [t for _, t in sorted(scored, key=lambda st: (-st[0], st[1]))[: cfg.n_terms]]
    return out


def label_sample(labels: np.ndarray, max_docs: int, seed: int = 0) -> np.ndarray:
    """Rows (sorted) of the clustered points whose texts name their region: every member of a
    region up to ``max_docs``, a seeded random ``max_docs`` of a larger one (a million-point
    map is named from a few thousand documents per region, in seconds)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels[labels != NOISE]):
        members = np.flatnonzero(labels == c)
        out.append(members if len(members) <= max_docs else rng.choice(members, max_docs, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def _words(text: str) -> set[str]:
    return {t for t in tokenize(text, stem=False) if len(t) >= 2 and t not in DOMAIN_STOPWORDS and not t.isdigit()}


def cluster_map(
    xy: np.ndarray,
    ids: Sequence[str],
    names: Sequence[str | None],
    descriptions: Sequence[str | None] | None = None,
    *,
    risk: Sequence[str] | None = None,
    config: ClusterConfig | None = None,
    map_key: str | None = None,
) -> MapClusters:
    """Clusters of a map's points with labels, sizes, centroids and risk mix."""
    cfg = config or ClusterConfig()
    xy = np.asarray(xy, dtype=np.float64)
    descriptions = list(descriptions) if descriptions is not None else [None] * len(ids)
    if not len(ids) == len(names) == len(descriptions) == len(xy) or (risk is not None and len(risk) != len(xy)):
        raise InvalidInputError("coordinates, ids, texts and risk classes must have one row per point")
    labels = renumber(find_clusters(xy, cfg))
    terms = distinctive_terms(names, descriptions, labels, cfg)
    ids_present = np.unique(labels)
    sizes = np.bincount(labels + 1, minlength=int(labels.max(initial=NOISE)) + 2)  # index 0: noise
    sums_x = np.bincount(labels + 1, weights=xy[:, 0], minlength=len(sizes))
    sums_y = np.bincount(labels + 1, weights=xy[:, 1], minlength=len(sizes))
    clusters = []
    for c in sorted(ids_present.tolist(), key=lambda c: (c == NOISE, c)):
        words = tuple(terms.get(c, ())) if c != NOISE else ()
        label = NOISE_LABEL if c == NOISE else (" · ".join(words) or f"region {c + 1}")
        n = int(sizes[c + 1])
        clusters.append(Cluster(int(c), label, words, n, (float(sums_x[c + 1] / n), float(sums_y[c + 1] / n))))
    frame = pd.DataFrame({"lora_id": list(ids), "cluster_id": labels})
    frame["cluster"] = frame["cluster_id"].map({c.cluster_id: c.label for c in clusters})
    result = MapClusters(clusters, frame, cfg, map_key, sampled=len(xy) > cfg.max_fit_points)
    return with_risk_mix(result, risk) if risk is not None else result


def with_risk_mix(result: MapClusters, risk: Sequence[str] | pd.Series) -> MapClusters:
    """``result`` with each region's risk mix: ``risk`` is one class per assigned point (in
    ``result.assignment`` order), or a Series of classes indexed by ``lora_id`` (a point it does
    not name counts as "unknown"). One vectorised count, so a new threshold costs no re-clustering."""
    if isinstance(risk, pd.Series):
        classes = risk.reindex(result.assignment["lora_id"].to_numpy()).fillna("unknown").astype(str).to_numpy()
    else:
        if len(risk) != len(result.assignment):
            raise InvalidInputError(f"need one risk class per map point ({len(result.assignment)}), got {len(risk)}")
        classes = np.asarray([str(r) for r in risk], dtype=object)
    counts = pd.crosstab(result.assignment["cluster_id"].to_numpy(), classes)
    mix = {int(c): {str(k): int(v) for k, v in row.items() if v} for c, row in counts.iterrows()}
    return replace(result, clusters=[replace(c, risk_mix=mix.get(c.cluster_id, {})) for c in result.clusters])


def assign(result: MapClusters, map_xy: pd.DataFrame, points_xy: np.ndarray) -> list[int]:
    """Cluster ids for new map positions (uploads, search hits placed on the map): the nearest
    clustered point's cluster (:func:`nearest_labels`). ``map_xy`` holds ``lora_id, x, y``."""
    merged = map_xy.merge(result.assignment, on="lora_id", how="inner")
    return nearest_labels(points_xy, merged[["x", "y"]].to_numpy(), merged["cluster_id"].to_numpy()).tolist()


_CACHE: OrderedDict[tuple[str, str], MapClusters] = OrderedDict()
_LOCK = threading.Lock()
MAX_CACHED = 8


def cached_clusters(map_key: str, compute: Any, config: ClusterConfig | None = None) -> MapClusters:
    """``compute()`` once per map key and config in this process (least recently used evicted)."""
    key = (map_key, repr(config or ClusterConfig()))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    result = compute()
    with _LOCK:
        _CACHE[key] = result
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)
    return result


def corpus_clusters(
    store: Any, view: Any, cmap: Any, *, risk: Sequence[str] | None = None, config: ClusterConfig | None = None
) -> MapClusters:
    """The regions of a cached map (``carlos.viz.maps.CorpusMap``) of ``view``'s fitted LoRAs,
    named from the store's names and descriptions; ``risk`` (one class per row of ``view.frame``)
    gives each region its risk mix. Uploads placed on the map are assigned, not clustered.
    The clusters are computed once per map (and config); the risk mix is counted per call."""
    fitted = cmap.frame[cmap.frame["placement"] == "fitted"]

    def compute() -> MapClusters:
        ids = fitted["lora_id"].tolist()
        xy = fitted[["x", "y"]].to_numpy(dtype=np.float64)
        docs = store.loras.text_documents().set_index("lora_id").reindex(ids)
        name = docs["name"].where(docs["name"].fillna("").astype(str).str.strip() != "", docs["folder_name"])
        names = [v if isinstance(v, str) else None for v in name.tolist()]
        descriptions = [v if isinstance(v, str) else None for v in docs["description"].tolist()]
        return cluster_map(xy, ids, names, descriptions, config=config, map_key=cmap.key)

    result = cached_clusters(cmap.key, compute, config)
    if risk is None:
        return result
    if len(risk) != len(view.frame):
        raise InvalidInputError(f"need one risk class per row of the view ({len(view.frame)}), got {len(risk)}")
    return with_risk_mix(result, pd.Series(np.asarray(risk, dtype=object), index=view.frame["lora_id"].to_numpy()))
