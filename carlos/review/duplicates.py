"""Near-duplicates of review items without an n × n matrix, grouped with their re-uploads.

The review queue shows, for each open item, every LoRA whose Direction has cosine ≥ a
level with it (a near-duplicate) and every LoRA with the same file (sha256), and puts
items linked that way into one group. The old way normalized the whole matrix and
multiplied the queue by it on every render: q × n floats at once, n × n when the queue
is every LoRA (40 GB at 100k LoRAs).

Here, the queue's rows are scored against the view's float32 directions and row norms (what
the direction index :class:`carlos.core.index.DirectionIndex` ranks every search with; the
norms are computed here, so that the review page never builds the int8 codes of a search
index it does not use), a block of rows at a time (a few MB each, so memory stays bounded
whatever the sizes), the items sharing each pass over the corpus instead of one index search
per item (``python -m carlos bench review`` times both). Two stages, exact:

1. **A bound from a small basis.** Once per view, an orthonormal basis B of
   :data:`BASIS_DIMS` directions (the top principal axes of a sample of the unit directions)
   gives each unit direction u the coordinates Bᵀu and the length ρ(u) of what B leaves
   (``sqrt(1 − |Bᵀu|² + 1e-4)``: the slack covers float rounding). By Cauchy–Schwarz,
   cos(u, v) ≤ Bᵀu · Bᵀv + ρ(u) ρ(v): one matrix product in 65 dimensions instead of 512
   bounds every cosine from above, and only pairs whose bound reaches the level are scored
   (the bound rows are kept with the view: 65 floats per LoRA, an eighth of its directions).
   The corpus's directions are concentrated (the basis keeps ~90 % of their energy), so at
   the page's levels few pairs pass. A block where more than :data:`FULL_SHARE` of the pairs
   pass (a low level) is scored in full instead.
2. **Exact scores.** The pairs that pass are scored in float32; those within
   :data:`F32_MARGIN` of the level are re-checked in float64. The answer is the exact one:
   cosine ≥ level − :data:`COS_TOL` (the tolerance makes identical files count at level 1.0,
   where a float64 cosine can come out as 0.9999999999999998).

Answers are kept per view and level (:data:`CACHED_VIEWS`), so a re-render, or a queue that
gained one item, scores only rows it has not scored before. A queue is scored only up to
:data:`MAX_PAIRS` (item, LoRA) cosines per call, most recent items first; the rest are
marked "not looked up", and the page says so.

Groups are the connected components (union–find) of the links "near-duplicate of" and
"same file as", over the items and the LoRAs they link to: two items that share a
near-duplicate are in one group even if they are not near each other.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from carlos.core.representation import ZERO_NORM
from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError

#: A pair is a near-duplicate when its cosine is ≥ level − COS_TOL (float rounding, see above).
COS_TOL = 1e-6
#: Pairs the float32 block scores within this of the level are re-checked in float64
#: (the float32 error of a 512-d unit dot product is far below it).
F32_MARGIN = 1e-4
#: Bytes of float32 scores per block (rows of the queue at a time × every LoRA).
BLOCK_BYTES = 32 * 2**20
#: Directions of the basis that bounds the cosines (stage 1); none below twice as many dimensions.
BASIS_DIMS = 64
#: Unit directions the basis is fitted on (a fixed sample: the same view gives the same basis).
BASIS_SAMPLE = 2048
#: A block whose bound lets more than this share of its pairs through is scored in full.
FULL_SHARE = 0.01
#: Candidate pairs scored per step of stage 2 (bounds the rows gathered at once).
PAIR_CHUNK = 32_768
#: Most (item, LoRA) cosines one call computes: 2,000 items at 100k LoRAs, all 740 of the corpus.
MAX_PAIRS = 200_000_000
#: Views whose answers are kept (each: per level, per scored row, its near-duplicate rows).
CACHED_VIEWS = 2
#: Levels kept per view (the page's slider moves in steps of 0.01).
CACHED_LEVELS = 4


def near_duplicate_rows(view: CorpusView, rows: Sequence[int], level: float) -> list[np.ndarray]:
    """For each of ``rows``, the other rows of ``view`` whose direction cosine with it is ≥
    ``level`` (within :data:`COS_TOL`), ascending. Exact; bounded memory; cached per view."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level <= 1.0:
        raise InvalidInputError(f"the near-duplicate level must be a cosine within (0, 1], got {level!r}")
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size and (rows.min() < 0 or rows.max() >= len(view)):
        raise InvalidInputError(f"rows must be within the view's {len(view)} rows")
    known, prep = _answers(view, float(level))
    with _lock:
        missing = np.unique(np.array([r for r in rows.tolist() if r not in known], dtype=np.int64))
    if missing.size:
        found = _scan(prep, missing, float(level))
        with _lock:
            known.update(zip(missing.tolist(), found))
    with _lock:
        return [known[r] for r in rows.tolist()]


def group_labels(items: Sequence[int], links: Sequence[Sequence[int]]) -> np.ndarray:
    """Group number (1, 2, … in order of each group's first item) of every item, where
    ``links[i]`` are the rows item ``items[i]`` is linked to (union–find over all of them)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for item, linked in zip(items, links):
        a = find(int(item))
        for other in linked:
            b = find(int(other))
            if a != b:
                parent[b] = a
    labels: dict[int, int] = {}
    return np.array([labels.setdefault(find(int(i)), len(labels) + 1) for i in items], dtype=np.int64)


def with_duplicates(view: CorpusView, everything: pd.DataFrame, queue: pd.DataFrame, level: float) -> pd.DataFrame:
    """``queue`` (rows of ``everything``: lora_id, sha256, decided_at) with ``same_file`` and
    ``near_duplicates`` (lora ids; None: not looked up, over :data:`MAX_PAIRS`), ``group`` and
    ``group_size``, most recent first with each group together (ordered by its most recent item).

    ``queue.attrs["near_duplicates_skipped"]`` counts the items not looked up."""
    out = queue.sort_values("decided_at", ascending=False, kind="stable").copy()
    if out.empty:
        for col in ("same_file", "near_duplicates", "group", "group_size"):
            out[col] = pd.Series(dtype=object)
        out.attrs["near_duplicates_skipped"] = 0
        return out
    rows = np.array([view.row_of(lid) for lid in out["lora_id"]], dtype=np.int64)
    budget = max(1, MAX_PAIRS // max(len(view), 1))
    near = near_duplicate_rows(view, rows[:budget], level)
    ids = view.frame["lora_id"].to_numpy()
    sha = everything.dropna(subset=["sha256"])
    sha = sha[sha["sha256"].isin(set(out["sha256"].dropna()))]
    by_sha = sha.groupby("sha256")["lora_id"].apply(list).to_dict()
    same = [[x for x in by_sha.get(s, []) if x != lid] if isinstance(s, str) else [] for s, lid in zip(out["sha256"], out["lora_id"])]
    same_rows = [[r for r in (view.find(x) for x in group) if r is not None] for group in same]
    links = [[*(near[k] if k < len(near) else ()), *same_rows[k]] for k in range(len(rows))]
    out["same_file"] = same
    out["near_duplicates"] = [list(ids[near[k]]) if k < len(near) else None for k in range(len(rows))]
    groups = group_labels(rows.tolist(), links)
    out["group"] = groups
    out["group_size"] = pd.Series(groups).map(pd.Series(groups).value_counts()).to_numpy()
    out = out.sort_values("group", kind="stable")  # group numbers follow recency: recency within a group is kept
    out.attrs["near_duplicates_skipped"] = int(max(0, len(rows) - len(near)))
    return out


def forget() -> None:
    """Drop every kept answer (benchmarks time the first render with it)."""
    with _lock:
        _views.clear()


# -- internals ------------------------------------------------------------------------------------
class _Prepared:
    """What a view's scans share: the float32 matrix, inverse row norms and the stage-1 bound rows."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        norms = row_norms(self.matrix)
        self.inv = np.where(norms <= ZERO_NORM, 0.0, 1.0 / np.maximum(norms, ZERO_NORM)).astype(np.float32)  # zero rows score 0
        self.bound = _bound_rows(self.matrix, self.inv)


_lock = threading.Lock()
_views: OrderedDict[int, tuple[Any, _Prepared, OrderedDict[float, dict[int, np.ndarray]]]] = OrderedDict()


def _answers(view: CorpusView, level: float) -> tuple[dict[int, np.ndarray], _Prepared]:
    """The answers kept for (view, level) and the view's prepared arrays; a view is known by
    identity (a new data version is a new view)."""
    with _lock:
        entry = _views.get(id(view))
    if entry is None or entry[0]() is not view:
        fresh = (weakref.ref(view), _Prepared(view.matrix), OrderedDict())  # outside the lock: seconds at 1M
        with _lock:
            entry = _views.get(id(view))
            if entry is None or entry[0]() is not view:  # no other thread prepared it meanwhile
                entry = _views[id(view)] = fresh
    with _lock:
        for key in [k for k, e in _views.items() if e[0]() is None]:  # views no page holds any more
            del _views[key]
        _views.move_to_end(id(view))
        while len(_views) > CACHED_VIEWS:
            _views.popitem(last=False)
        levels = entry[2]
        answers = levels.setdefault(level, {})
        levels.move_to_end(level)
        while len(levels) > CACHED_LEVELS:
            levels.popitem(last=False)
        return answers, entry[1]


def row_norms(matrix: np.ndarray, block: int = 4096) -> np.ndarray:
    """Float32 L2 norm of every row, as the direction index computes them (blocks: no big temporary)."""
    out = np.empty(matrix.shape[0], dtype=np.float32)
    for a in range(0, matrix.shape[0], block):
        out[a : a + block] = np.linalg.norm(matrix[a : a + block], axis=1)
    return out


def _bound_rows(matrix: np.ndarray, inv: np.ndarray, block: int = 8192) -> np.ndarray | None:
    """Per row [Bᵀu, ρ(u)] (float32, see stage 1), or None when a basis would not save work."""
    n, d = matrix.shape
    if d < 2 * BASIS_DIMS or n < 2 * BASIS_DIMS:
        return None
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, size=min(n, BASIS_SAMPLE), replace=False))
    unit = matrix[sample].astype(np.float64) * inv[sample, None]
    gram = unit.T @ unit
    gram += np.eye(d) * (1e-9 * max(float(np.trace(gram)), 1.0) / d)  # a ridge: full rank even for a degenerate sample
    try:
        basis = top_axes(gram, BASIS_DIMS).astype(np.float32)  # (d, r), orthonormal
    except np.linalg.LinAlgError:  # not expected with the ridge; the full scan needs no basis
        return None
    out = np.empty((n, BASIS_DIMS + 1), dtype=np.float32)
    for a in range(0, n, block):
        coords = (matrix[a : a + block] @ basis) * inv[a : a + block, None]
        kept = np.einsum("ij,ij->i", coords.astype(np.float64), coords.astype(np.float64))
        out[a : a + block, :BASIS_DIMS] = coords
        out[a : a + block, BASIS_DIMS] = np.sqrt(np.maximum(1.0 - kept, 0.0) + 1e-4) * (inv[a : a + block] > 0)
    return out


def top_axes(gram: np.ndarray, r: int, *, iterations: int = 4, seed: int = 0) -> np.ndarray:
    """An orthonormal (d, r) basis close to the top ``r`` eigenvectors of a symmetric ``gram``.

    Subspace iteration with Cholesky QR (twice, for orthonormality to float64 rounding): a few
    matrix products, where a full eigendecomposition is a LAPACK call that can take seconds
    on a busy 2-core machine. Any orthonormal basis keeps stage 1 exact; a good one prunes more.
    """
    q = np.random.default_rng(seed).standard_normal((gram.shape[0], r))
    for step in range(iterations + 1):
        z = gram @ q if step < iterations else q
        for _ in range(2):  # CholeskyQR2
            chol = np.linalg.cholesky(z.T @ z)
            z = np.linalg.solve(chol, z.T).T
        q = z
    return q


def _scan(prep: _Prepared, rows: np.ndarray, level: float) -> list[np.ndarray]:
    """Exact near-duplicate rows of each of ``rows`` (stages 1 and 2 of the module docstring)."""
    m, inv, bound = prep.matrix, prep.inv, prep.bound
    n = m.shape[0]
    block = max(1, BLOCK_BYTES // (4 * max(n, 1)))
    cut = np.float32(level - COS_TOL - F32_MARGIN)
    out: list[np.ndarray] = []
    for a in range(0, len(rows), block):
        r = rows[a : a + block]
        qi = cj = None
        if bound is not None:
            flat = np.flatnonzero((bound[r] @ bound.T) >= cut)  # stage 1: an upper bound of every cosine
            if flat.size <= FULL_SHARE * len(r) * n:
                qi, cj = np.divmod(flat, n)
                qi, cj = _exact_pairs(m, inv, r, qi, cj, level)
        if qi is None:  # no basis, or too many pairs pass: every cosine of the block in float32
            scores = (m[r] * inv[r, None]) @ m.T
            scores *= inv[None, :]
            flat = np.flatnonzero(scores >= cut)  # 1-D: several times faster than a 2-D nonzero
            qi, cj = np.divmod(flat, n)
            qi, cj = _exact_pairs(m, inv, r, qi, cj, level, scores.ravel()[flat])
        splits = np.searchsorted(qi, np.arange(1, len(r)))  # qi is sorted (row-major nonzero)
        out.extend(np.sort(part) for part in np.split(cj.astype(np.int64), splits))
    return out


def _exact_pairs(
    m: np.ndarray, inv: np.ndarray, r: np.ndarray, qi: np.ndarray, cj: np.ndarray, level: float, f32: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs (r[qi], cj) that are near-duplicates: float32 scores (given or
    computed in chunks), float64 for those within F32_MARGIN of the level; never a row with itself."""
    keep = cj != r[qi]
    qi, cj = qi[keep], cj[keep]
    if f32 is None:
        f32 = np.empty(len(qi), dtype=np.float32)
        for a in range(0, len(qi), PAIR_CHUNK):
            left, right = r[qi[a : a + PAIR_CHUNK]], cj[a : a + PAIR_CHUNK]
            f32[a : a + PAIR_CHUNK] = np.einsum("ij,ij->i", m[left], m[right]) * inv[left] * inv[right]
    else:
        f32 = f32[keep]
    sure = f32 >= level - COS_TOL + F32_MARGIN
    border = np.flatnonzero(~sure & (f32 >= level - COS_TOL - F32_MARGIN))
    if border.size:
        left = m[r[qi[border]]].astype(np.float64)
        right = m[cj[border]].astype(np.float64)
        den = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
        dots = np.einsum("ij,ij->i", left, right)
        cos = np.divide(dots, den, out=np.zeros_like(dots), where=den > ZERO_NORM**2)
        sure[border[cos >= level - COS_TOL]] = True
    return qi[sure], cj[sure]
