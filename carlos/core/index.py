"""Exact filtered top-k by cosine that stays fast at a million LoRAs.

Every search of the product ends here (through :attr:`carlos.core.view.CorpusView.index`),
and so does the scale benchmark: what it measures is what the dashboard runs.

:class:`DirectionIndex` answers "top k by cosine, with Strength/Consistency
filters" exactly, in two stages. Stage 1 scores every row against int8 codes of
the unit directions (an int8 GEMV backend, fbgemm through
:mod:`carlos.models.int8`: a quarter of the float32 bytes to read,
which is what bounds a 1M x 512 scan on a small machine). Every code row carries
a rigorous bound on its error, so stage 2 recomputes in float32 only the rows
whose upper bound reaches the k-th best lower bound; the answer is the float32
answer (``exact_search`` is the brute-force reference the tests compare with).
Small corpora, and machines without the fbgemm kernel, use the float32 scan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from carlos.config import Thresholds
from carlos.core.representation import ZERO_NORM
from carlos.errors import InvalidInputError

log = logging.getLogger(__name__)

#: Rows per block when quantizing, packing and scoring (bounds temporary memory).
BLOCK_ROWS = 65_536
_QUANT_ROWS = 4_096
#: "auto" builds int8 codes from this many rows on.
INT8_MIN_ROWS = 20_000


# ------------------------------------------------------------------------------ the index
class Int8Kernel(Protocol):
    """An int8 GEMV backend for stage 1 (e.g. :class:`carlos.models.int8.FbgemmInt8`).

    The quantization and the error bound are computed here in numpy; the backend only
    packs the int8 codes and multiplies them with a float query. Kept behind this
    protocol so the core never imports torch.
    """

    name: str

    def available(self) -> bool: ...

    def pack(self, codes: np.ndarray, scales: np.ndarray) -> Any: ...

    def scores(self, packed: Sequence[Any], x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchStats:
    """What one search did: which kernel, how many rows it re-scored exactly, how many were eligible."""

    kernel: str  # "int8-fbgemm+exact-rerank" or "float32-scan"
    candidates: int  # rows recomputed in float32 (stage 2)
    eligible: int  # rows passing the filters


class DirectionIndex:
    """Exact filtered top-k by cosine over an (n, d) float32 direction matrix.

    Holds a reference to ``matrix`` (no copy), the row norms and, with the int8
    kernel, packed codes (n * d bytes) plus two float32 error terms per row.
    """

    def __init__(
        self,
        matrix: np.ndarray,
        strength: np.ndarray,
        consistency: np.ndarray,
        *,
        kernel: str = "auto",
        int8: Int8Kernel | None = None,
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        if matrix.dtype != np.float32 or matrix.ndim != 2 or not matrix.flags.c_contiguous:
            raise InvalidInputError("matrix must be a C-contiguous float32 (n, d) array")
        n = matrix.shape[0]
        self.strength = np.asarray(strength, dtype=np.float64)
        self.consistency = np.asarray(consistency, dtype=np.float64)
        if self.strength.shape != (n,) or self.consistency.shape != (n,):
            raise InvalidInputError(f"strength and consistency must have {n} values")
        if kernel not in ("auto", "int8", "float32"):
            raise InvalidInputError(f"kernel must be 'auto', 'int8' or 'float32', got {kernel!r}")
        self.matrix = matrix
        self.block_rows = int(block_rows)
        self.norms = np.empty(n, dtype=np.float32)
        for a in range(0, n, _QUANT_ROWS):  # small blocks: norm() squares a temporary copy
            self.norms[a : a + _QUANT_ROWS] = np.linalg.norm(matrix[a : a + _QUANT_ROWS], axis=1)
        if not np.isfinite(self.norms).all():
            raise InvalidInputError("directions must be finite (a row is NaN, inf, or too long for float32)")
        # below INT8_MIN_ROWS the float32 scan takes well under a millisecond: no codes, no torch
        use_int8 = kernel == "int8" or (kernel == "auto" and n >= INT8_MIN_ROWS and int8 is not None and int8.available())
        if kernel == "int8" and (int8 is None or not int8.available()):
            raise InvalidInputError("the int8 kernel needs an int8 backend: carlos.models.int8.FbgemmInt8 (torch with fbgemm)")
        self._int8 = int8
        self._packed: list[Any] = []
        self._err_code = self._l1_code = None
        if use_int8 and n:
            self._build_int8()
        self.kernel = f"int8-{int8.name}+exact-rerank" if self._packed and int8 is not None else "float32-scan"
        self._mask_key: tuple[Any, ...] | None = None
        self._mask: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory of the index itself, beyond the direction matrix it references."""
        extra = self.norms.nbytes + self.strength.nbytes + self.consistency.nbytes
        if self._packed:
            extra += self.matrix.shape[0] * self.matrix.shape[1] + 2 * self._err_code.nbytes
        return int(extra)

    def _build_int8(self) -> None:
        """Per-row symmetric int8 codes of the unit rows, packed for fbgemm in blocks.

        For a row u with code w (dequantized) and a unit query x quantized by fbgemm to
        x' (|x - x'| <= s_x / 2 per element): |u.x - w.x'| <= ||u - w||_2 + ||w||_1 s_x / 2.
        """
        n, _ = self.matrix.shape
        self._err_code = np.empty(n, dtype=np.float32)
        self._l1_code = np.empty(n, dtype=np.float32)
        d = self.matrix.shape[1]
        assert self._int8 is not None
        for a in range(0, n, self.block_rows):
            b = min(n, a + self.block_rows)
            codes = np.empty((b - a, d), dtype=np.int8)
            scale = np.empty(b - a, dtype=np.float64)
            for s0 in range(a, b, _QUANT_ROWS):  # float32 temporaries of a few MB
                s1 = min(b, s0 + _QUANT_ROWS)
                norms = self.norms[s0:s1, None]
                unit = self.matrix[s0:s1] / np.maximum(norms, np.float32(ZERO_NORM))
                unit[norms[:, 0] <= ZERO_NORM] = 0.0
                sc = np.maximum(np.abs(unit).max(axis=1), np.float32(ZERO_NORM)) / np.float32(127.0)
                c = np.clip(np.rint(unit / sc[:, None]), -127, 127).astype(np.int8)
                deq = c * sc[:, None]
                self._err_code[s0:s1] = np.linalg.norm(unit - deq, axis=1)
                self._l1_code[s0:s1] = np.abs(deq).sum(axis=1)
                codes[s0 - a : s1 - a] = c
                scale[s0 - a : s1 - a] = sc
            self._packed.append(self._int8.pack(codes, scale))

    def _approx(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 scores of every row against unit query ``x`` and each row's error bound."""
        assert self._int8 is not None
        approx = self._int8.scores(self._packed, x)
        # fbgemm quantizes x affinely over [min(x, 0), max(x, 0)] in 7 bits (reduce_range) or 8;
        # assuming 7 bits keeps the bound valid for both. The factor 2 and the constant cover the
        # float32 rounding of the scales and of the dequantized accumulation.
        s_x = (max(float(x.max()), 0.0) - min(float(x.min()), 0.0)) / 127.0
        bound = 2.0 * (self._err_code + self._l1_code * (s_x / 2.0)) + 1e-5
        return approx, bound

    def filter_mask(self, thresholds: Thresholds) -> np.ndarray:
        """Rows passing ``thresholds`` (the last mask is kept: the dashboard repeats its filters)."""
        key = (thresholds.strength_max, thresholds.consistency_min)
        if self._mask_key != key or self._mask is None:
            self._mask_key, self._mask = key, thresholds.keeps(self.strength, self.consistency)
        return self._mask

    def _exact(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: a few thousand rows gain nothing from threads, and waking BLAS
        # threads on a busy 2-core machine costs milliseconds. Gathered in blocks: a query
        # unlike every LoRA leaves many candidates, and a single gather would copy them all.
        dots = np.empty(len(rows), dtype=np.float32)
        for a in range(0, len(rows), _QUANT_ROWS):
            dots[a : a + _QUANT_ROWS] = np.einsum("ij,j->i", self.matrix[rows[a : a + _QUANT_ROWS]], x)
        norms = self.norms[rows]
        out = dots / np.maximum(norms, ZERO_NORM)
        out[norms <= ZERO_NORM] = 0.0
        return out.astype(np.float32)

    def search(self, query: np.ndarray, k: int = 10, thresholds: Thresholds | None = None) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        """(row indices, cosines, stats) of the ``k`` best rows passing ``thresholds``, best first."""
        return self.search_masks(query, k, [self.filter_mask(thresholds or Thresholds())])[0]

    def search_masks(self, query: np.ndarray, k: int, masks: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, SearchStats]]:
        """The ``k`` best rows within each boolean row mask, from one pass over the corpus.

        Ranking needs two answers per query (the LoRAs that pass the filters and the best
        of those they remove); both come from the same stage-1 scores. Ties are broken by
        row order, so equal scores keep corpus order.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        x = _unit_query(query, self.matrix.shape[1])
        for m in masks:
            if m.dtype != np.bool_ or m.shape != (len(self),):
                raise InvalidInputError(f"masks must be boolean arrays of {len(self)} rows")
        if not self._packed:
            scores = self._scan(x)
            return [(*top_within(scores, int(k), m), SearchStats(self.kernel, len(self), int(m.sum()))) for m in masks]
        approx, bound = self._approx(x)
        out = []
        for mask in masks:
            eligible = int(mask.sum())
            kk = min(int(k), eligible)
            if kk == 0:
                out.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), SearchStats(self.kernel, 0, 0)))
                continue
            lower = np.where(mask, approx - bound, -np.inf)
            tau = np.partition(lower, len(lower) - kk)[len(lower) - kk]  # k-th best lower bound
            cand = np.flatnonzero(mask & (approx + bound >= tau))
            exact = self._exact(cand, x)
            order = np.lexsort((cand, -exact))[:kk]  # score desc, then row asc
            out.append((cand[order], exact[order], SearchStats(self.kernel, int(cand.size), eligible)))
        return out

    def _scan(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(self), dtype=np.float32)
        for a in range(0, len(self), self.block_rows):
            b = a + self.block_rows
            out[a:b] = self.matrix[a:b] @ x
        norms = self.norms
        out /= np.maximum(norms, ZERO_NORM)
        out[norms <= ZERO_NORM] = 0.0
        return out

    def cosines(self, query: np.ndarray) -> np.ndarray:
        """Float32 cosine of every row with ``query`` (zero rows score 0)."""
        return self._scan(_unit_query(query, self.matrix.shape[1]))

    def exact_search(self, query: np.ndarray, k: int = 10, thresholds: Thresholds | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force float32 reference for :meth:`search`."""
        x = _unit_query(query, self.matrix.shape[1])
        return top_within(self._scan(x), k, self.filter_mask(thresholds or Thresholds()))


def _unit_query(query: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(query, dtype=np.float32).ravel()
    if q.shape != (dim,) or not np.isfinite(q).all():
        raise InvalidInputError(f"query must be {dim} finite floats, got shape {q.shape}")
    n = float(np.linalg.norm(q))
    if n <= ZERO_NORM:
        raise InvalidInputError("query direction is the zero vector")
    return q / n


def top_within(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of the ``k`` best ``scores`` within ``mask``, best first; ties keep row order.

    ``mask`` (bool, the shape of ``scores``; None: every row) marks the eligible rows. NaN
    scores are never returned, so fewer than ``k`` rows come back when fewer are eligible.
    Partial selection first: a million scores need not be sorted for ten.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise InvalidInputError(f"scores must be 1-D, got shape {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InvalidInputError(f"k must be an int >= 0, got {k!r}")
    if mask is None:
        cand = np.arange(scores.shape[0], dtype=np.int64)
    else:
        mask = np.asarray(mask)
        if mask.shape != scores.shape or mask.dtype != np.bool_:
            raise InvalidInputError(f"mask must be a bool array of shape {scores.shape}")
        cand = np.flatnonzero(mask)
    vals = scores[cand]
    if vals.dtype.kind == "f" and np.isnan(vals).any():
        known = ~np.isnan(vals)
        cand, vals = cand[known], vals[known]
    if k == 0:
        cand = cand[:0]
    elif cand.size > k:
        part = np.argpartition(-vals, k - 1)[:k]
        kth = vals[part].min()
        cand = cand[vals >= kth]  # keep ties at the k-th value; the sort below settles them
    order = np.lexsort((cand, -scores[cand]))[:k]
    return cand[order], scores[cand[order]]


def same_top_k(a_rows: np.ndarray, a_scores: np.ndarray, b_rows: np.ndarray, b_scores: np.ndarray, tol: float = 1e-5) -> bool:
    """Two top-k answers agree: same scores (within ``tol``) and the same rows except where
    scores tie within ``tol`` (float32 GEMV and row dots may round differently)."""
    if len(a_rows) != len(b_rows) or not np.allclose(a_scores, b_scores, atol=tol, rtol=0):
        return False
    if set(a_rows.tolist()) == set(b_rows.tolist()):
        return True
    last = float(min(a_scores.min(), b_scores.min())) if len(a_scores) else 0.0
    diff = set(a_rows.tolist()) ^ set(b_rows.tolist())
    sa = dict(zip(a_rows.tolist(), a_scores.tolist()))
    sa.update(zip(b_rows.tolist(), b_scores.tolist()))
    return all(abs(sa[r] - last) <= tol for r in diff)
