"""The weight fingerprint: a fixed-size sketch whose inner products estimate ⟨ΔW₁, ΔW₂⟩_F.

Per module, fixed random matrices L (k x out) and R (in x k), seeded by the module's canonical
name, give the k x k sketch S = L ΔW R, computed from the factors without forming ΔW:
L (s·up) (down R). Entries are N(0, 1/k), so E[LᵀL] = I and E[R Rᵀ] = I and
E⟨S₁, S₂⟩ = ⟨ΔW₁, ΔW₂⟩_F for two files with that module. The search vector mixes the module
sketches into ``dim`` numbers with a count sketch (each entry of vec(S_m) added, with a seeded
sign, to a seeded one of the ``dim`` buckets), so ⟨g₁, g₂⟩ estimates the inner product of the
whole ΔW; it is what the direction index searches. Sketches are
linear in ΔW: a rescaled copy has exactly the rescaled sketch, whatever the projections.

Per module we also keep the exact Frobenius norm, ‖s·BA‖² = tr((BᵀB)(AAᵀ)) from r x r Gram
matrices, and the effective rank (Σσ²)²/Σσ⁴ from the same Grams, which
:mod:`carlos.weights.stats` turns into per-block energy and effective rank. The random blocks
follow the fixed :data:`~carlos.weights.canonical.BLOCK` boundaries, so every file and every
machine draws the same projections.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from carlos import __version__
from carlos.errors import InvalidInputError, InvalidLoRAFileError
from carlos.weights.canonical import FACTORED, CanonicalModule, ModuleSource, spans
from carlos.weights.stats import weight_stats

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SketchSpec:
    """The projections: ``dim`` numbers searched, a ``k`` x ``k`` sketch per module, their seed."""

    dim: int = 256
    k: int = 4
    seed: int = 20_260_415

    def __post_init__(self) -> None:
        if not (8 <= self.dim <= 4096 and 1 <= self.k <= 32):
            raise InvalidInputError(f"sketch dim must be 8..4096 and k 1..32, got {self.dim}, {self.k}")

    @property
    def id(self) -> str:
        """Fingerprints are comparable only under the same spec id."""
        return f"weights-v1/d{self.dim}/k{self.k}/s{self.seed}"


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def _gauss(spec: SketchSpec, name: str, stream: int, block: int, shape: tuple[int, int], var: float) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, _name_key(name), stream, block])
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(var**0.5)
    return out


def left(spec: SketchSpec, name: str, a: int, b: int) -> np.ndarray:
    """Columns ``a:b`` of the module's L (k x out); ``a`` on a block boundary."""
    return _gauss(spec, name, 0, a, (spec.k, b - a), 1.0 / spec.k)


def right(spec: SketchSpec, name: str, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` of the module's R (in x k); ``a`` on a block boundary."""
    return _gauss(spec, name, 1, a, (b - a, spec.k), 1.0 / spec.k)


def buckets(spec: SketchSpec, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Where the module's k² sketch entries go in the search vector, and their signs (a count sketch)."""
    rng = np.random.default_rng([spec.seed, _name_key(name), 2])
    where = rng.integers(0, spec.dim, size=spec.k * spec.k)
    sign = rng.integers(0, 2, size=spec.k * spec.k).astype(np.float64) * 2.0 - 1.0
    return where, sign


@dataclass(frozen=True)
class ModuleSummary:
    """One module of a fingerprint: its sketch, exact norm and effective rank."""

    name: str
    sketch: np.ndarray  # (k*k,) float32: vec(L ΔW R)
    norm: float  # exact ‖ΔW‖_F
    effective_rank: float  # participation ratio (Σσ²)² / Σσ⁴ of ΔW's singular values σ
    rank: int | None
    exact_spectrum: bool  # False: estimated from a randomized range (wide LoHa/LoKr modules)


def participation(sum_l: float, sum_l2: float) -> float:
    """(Σλ)² / Σλ² for λ = σ²: 1 when one direction carries all the energy, r when r carry it equally."""
    return sum_l * sum_l / sum_l2 if sum_l2 > 0 else 0.0


def factored_summary(source: ModuleSource, m: CanonicalModule, spec: SketchSpec) -> ModuleSummary:
    """Sketch, norm and effective rank of s·up·down in one streamed pass over each factor.

    With G = UᵀU and H = DDᵀ (r x r), ‖UD‖² = tr(GH) and Σσ⁴ = tr(GHGH): no decomposition,
    no LAPACK call (whose threads cost milliseconds per call on a busy 2-core machine).
    """
    r = m.rank or 0
    gram_u = np.zeros((r, r), np.float64)
    lu = np.zeros((spec.k, r), np.float64)
    for (a, b), u in zip(spans(m.out_features), source.up_blocks(m.name)):
        gram_u += u.T @ u  # float32 product, float64 sum: no float64 copy of the block
        lu += left(spec, m.name, a, b) @ u
    gram_d = np.zeros((r, r), np.float64)
    dr = np.zeros((r, spec.k), np.float64)
    for (a, b), d in zip(spans(m.in_features), source.down_blocks(m.name)):
        gram_d += d @ d.T
        dr += d @ right(spec, m.name, a, b)
    gh = gram_u @ gram_d
    energy = max(float(np.trace(gh)), 0.0)
    sketch = (lu @ dr).astype(np.float32).ravel()
    return ModuleSummary(m.name, sketch, float(np.sqrt(energy)), participation(energy, float(np.sum(gh * gh.T))), m.rank, True)


def dense_summary(delta: np.ndarray, m: CanonicalModule, spec: SketchSpec, probe: int = 48) -> ModuleSummary:
    """Sketch, norm and effective rank of a materialized ΔW (LoHa, LoKr); the spectrum is a
    randomized estimate from its top ``probe`` directions when ΔW is wider than that."""
    ld = np.zeros((spec.k, m.in_features), np.float32)
    for a, b in spans(m.out_features):
        ld += left(spec, m.name, a, b) @ delta[a:b]
    sketch = np.zeros((spec.k, spec.k), np.float64)
    for a, b in spans(m.in_features):
        sketch += ld[:, a:b] @ right(spec, m.name, a, b)
    if min(delta.shape) <= probe:
        sigma = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
        exact = True
    else:
        omega = _gauss(spec, m.name, 3, 0, (m.in_features, probe), 1.0)
        q, _ = np.linalg.qr(delta @ omega)
        sigma = np.linalg.svd(q.T @ delta, compute_uv=False).astype(np.float64)
        exact = False
    lam = sigma**2
    return ModuleSummary(
        m.name,
        sketch.astype(np.float32).ravel(),
        float(np.linalg.norm(delta)),
        participation(float(lam.sum()), float((lam**2).sum())),
        m.rank,
        exact,
    )


def summarize(source: ModuleSource, name: str, spec: SketchSpec) -> ModuleSummary:
    m = source.modules[name]
    if m.kind == FACTORED:
        return factored_summary(source, m, spec)
    return dense_summary(source.dense(name), m, spec)


@dataclass(frozen=True)
class Fingerprint:
    """A file's weight fingerprint (see the module docstring); ``stats`` from :mod:`carlos.weights.stats`."""

    spec: str
    vector: np.ndarray  # (dim,) float32, searched by cosine
    names: tuple[str, ...]  # canonical module names, sorted
    norms: np.ndarray  # (n,) float32 exact ‖ΔW_m‖_F
    sketches: np.ndarray  # (n, k*k) float32
    format: str
    stats: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    code_version: str = __version__

    @property
    def norm(self) -> float:
        return float(np.sqrt(np.sum(self.norms.astype(np.float64) ** 2)))

    def to_dict(self, *, vector: bool = True) -> dict[str, Any]:
        """JSON-ready summary (the module sketches are left out: they are for the store)."""
        out: dict[str, Any] = {
            "spec": self.spec,
            "sha256": self.sha256,
            "format": self.format,
            "n_modules": len(self.names),
            "norm": self.norm,
            "code_version": self.code_version,
            "stats": self.stats,
        }
        if vector:
            out["vector"] = [round(float(x), 7) for x in self.vector]
        return out

    def to_row(self, lora_id: str, *, file_name: str | None = None, file_path: str | None = None) -> dict[str, Any]:
        """The row ``store.fingerprints.put`` takes."""
        return {
            "lora_id": lora_id,
            "sha256": self.sha256,
            "file_name": file_name,
            "file_path": file_path,
            "format": self.format,
            "spec": self.spec,
            "vector": self.vector,
            "norm": self.norm,
            "module_names": list(self.names),
            "module_norms": self.norms,
            "module_sketches": self.sketches,
            "stats": self.stats,
            "code_version": self.code_version,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Fingerprint:
        """A fingerprint from a row of ``store.fingerprints.get``."""
        return cls(
            row["spec"],
            np.asarray(row["vector"], np.float32),
            tuple(row["module_names"]),
            np.asarray(row["module_norms"], np.float32),
            np.asarray(row["module_sketches"], np.float32),
            row.get("format") or "unknown",
            dict(row.get("stats") or {}),
            row.get("sha256"),
            row.get("code_version") or "unknown",
        )


def fingerprint(
    source: ModuleSource,
    spec: SketchSpec = SketchSpec(),
    *,
    fmt: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
) -> Fingerprint:
    """The fingerprint of every module of ``source``, one module at a time."""
    names = tuple(source.modules)
    if not names:
        raise InvalidLoRAFileError("the adapter has no modules to fingerprint")
    vector = np.zeros(spec.dim, np.float64)
    norms = np.zeros(len(names), np.float32)
    eranks = np.zeros(len(names), np.float64)
    sketches = np.zeros((len(names), spec.k * spec.k), np.float32)
    exact = True
    for i, name in enumerate(names):
        s = summarize(source, name, spec)
        where, sign = buckets(spec, name)
        np.add.at(vector, where, sign * s.sketch)
        norms[i], sketches[i], eranks[i] = s.norm, s.sketch, s.effective_rank
        exact = exact and s.exact_spectrum
        if progress is not None:
            progress(i + 1, len(names))
    if not (np.isfinite(vector).all() and np.isfinite(norms).all()):
        raise InvalidLoRAFileError("the weights are not finite (the file changed after validation, or overflows float32)")
    stats = weight_stats(names, norms, eranks, source.modules, spectrum_exact=exact)
    return Fingerprint(
        spec.id, vector.astype(np.float32), names, norms, sketches, fmt or getattr(source, "format", "unknown"), stats, sha256
    )
