"""How two LoRAs' weights relate: exact inner products over shared modules, and a named relationship.

Per shared module the inner product of two factored updates needs only r x r matrices:
⟨B₁A₁, B₂A₂⟩_F = tr((B₁ᵀB₂)(A₂A₁ᵀ)), accumulated over the same fixed blocks of both files
(LoHa/LoKr modules are compared materialized). Summed over modules this gives the cosine of
the whole ΔW (modules one file lacks count as zero), the cosine over the shared modules, the
relative scale ‖ΔW_a‖/‖ΔW_b‖ on them (signed: a negated copy has scale < 0), how much of each
file's energy the shared modules hold (coverage) and how much sits in modules whose weights are
the same (per-module |cos| ≥ ``same_module_cos``). From fingerprints alone
(:func:`sketch_relation`) the same quantities are estimated from the module sketches, with exact
norms. :func:`label_of` names the relationship with :class:`RelationThresholds`, whose defaults
were chosen on ``python -m carlos bench weights`` (README, "Weight-space matching").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError
from carlos.weights.canonical import FACTORED, ModuleSource, block_of
from carlos.weights.sketch import Fingerprint

IDENTICAL, RESCALED, DERIVED, PARTIAL, UNRELATED = (
    "identical",
    "rescaled copy",
    "rank-reduced or re-quantized copy",
    "partial",
    "unrelated",
)
LABELS = (IDENTICAL, RESCALED, DERIVED, PARTIAL, UNRELATED)
SUBSET, MERGE = "module subset", "merge or blend"
#: Labels that mean "the same LoRA" (a copy, whatever was done to the file).
SAME_LORA = (IDENTICAL, RESCALED, DERIVED)


@dataclass(frozen=True)
class RelationThresholds:
    """Where the labels change (defaults from the evaluation; see the module docstring)."""

    identical_cos: float = 0.999  # |cos| over all modules: identical or rescaled weights
    scale_tol: float = 0.01  # |scale - 1| still "identical"
    copy_cos: float = 0.85  # |cos| of a rank-reduced, re-quantized or further-trained copy
    partial_cos: float = 0.3  # |cos| of a merge or blend
    same_module_cos: float = 0.99  # a module carries the same weights
    full_coverage: float = 0.95  # energy share in shared modules, both sides, for a copy
    min_shared_energy: float = 0.05  # energy share in same-weight modules for a module subset

    def __post_init__(self) -> None:
        if not 0 < self.partial_cos < self.copy_cos < self.identical_cos <= 1:
            raise InvalidInputError("thresholds must satisfy 0 < partial_cos < copy_cos < identical_cos <= 1")


@dataclass(frozen=True)
class ModuleRelation:
    """One module: inner product and norms (a norm is 0 where that file lacks the module)."""

    name: str
    inner: float
    norm_a: float
    norm_b: float

    @property
    def shared(self) -> bool:
        return self.norm_a > 0 and self.norm_b > 0

    @property
    def cosine(self) -> float | None:
        return self.inner / (self.norm_a * self.norm_b) if self.shared else None


@dataclass(frozen=True)
class Relation:
    """How file a (the query) relates to file b (the match)."""

    label: str
    kind: str | None  # for "partial": "module subset" or "merge or blend"
    cosine: float
    scale: float
    cosine_shared: float
    coverage_a: float
    coverage_b: float
    same_energy_a: float
    same_energy_b: float
    n_shared: int
    n_only_a: int
    n_only_b: int
    exact: bool
    modules: tuple[ModuleRelation, ...]

    def swapped(self) -> Relation:
        """The same relation seen from b."""
        mods = tuple(ModuleRelation(m.name, m.inner, m.norm_b, m.norm_a) for m in self.modules)
        return replace(
            self,
            scale=1.0 / self.scale if self.scale else 0.0,
            coverage_a=self.coverage_b,
            coverage_b=self.coverage_a,
            same_energy_a=self.same_energy_b,
            same_energy_b=self.same_energy_a,
            n_only_a=self.n_only_b,
            n_only_b=self.n_only_a,
            modules=mods,
        )

    def sharing_blocks(self, min_cos: float = 0.3) -> dict[str, int]:
        """Per block, how many shared modules have |cos| ≥ ``min_cos``."""
        out: dict[str, int] = {}
        for m in self.modules:
            if m.cosine is not None and abs(m.cosine) >= min_cos:
                out[block_of(m.name)] = out.get(block_of(m.name), 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self, modules: int | None = 20) -> dict[str, Any]:
        """JSON-ready; ``modules``: how many per-module rows (those with most shared energy; None: all)."""
        shared = sorted((m for m in self.modules if m.shared), key=lambda m: -min(m.norm_a, m.norm_b))
        rows = shared if modules is None else shared[:modules]
        return {
            "label": self.label,
            "kind": self.kind,
            "cosine": self.cosine,
            "scale": self.scale,
            "cosine_shared": self.cosine_shared,
            "coverage_query": self.coverage_a,
            "coverage_match": self.coverage_b,
            "same_weight_share_query": self.same_energy_a,
            "same_weight_share_match": self.same_energy_b,
            "n_shared_modules": self.n_shared,
            "n_query_only_modules": self.n_only_a,
            "n_match_only_modules": self.n_only_b,
            "exact": self.exact,
            "sharing_blocks": self.sharing_blocks(),
            "modules": [{"name": m.name, "cosine": m.cosine, "norm_query": m.norm_a, "norm_match": m.norm_b} for m in rows],
        }


def label_of(
    cos: float, scale: float, cos_shared: float, cov: tuple[float, float], same: tuple[float, float], t: RelationThresholds
) -> tuple[str, str | None]:
    """(label, partial kind) from the aggregate numbers of a :class:`Relation`."""
    full = min(cov) >= t.full_coverage
    c = abs(cos)
    if full and c >= t.identical_cos:
        return (IDENTICAL, None) if abs(scale - 1.0) <= t.scale_tol else (RESCALED, None)
    if full and c >= t.copy_cos:
        return DERIVED, None
    if not full and abs(cos_shared) >= t.copy_cos and max(cov) >= t.min_shared_energy:
        return PARTIAL, SUBSET
    if c >= t.partial_cos:
        return PARTIAL, MERGE
    if max(same) >= t.min_shared_energy:
        return PARTIAL, SUBSET
    return UNRELATED, None


def aggregate(
    modules: Iterable[ModuleRelation], *, exact: bool, thresholds: RelationThresholds, cos_override: float | None = None
) -> Relation:
    """A :class:`Relation` from per-module numbers (``cos_override``: the whole-ΔW cosine, when known better)."""
    mods = tuple(sorted(modules, key=lambda m: m.name))
    ea = sum(m.norm_a**2 for m in mods)
    eb = sum(m.norm_b**2 for m in mods)
    shared = [m for m in mods if m.shared]
    inner = sum(m.inner for m in shared)
    sa, sb = sum(m.norm_a**2 for m in shared), sum(m.norm_b**2 for m in shared)
    t = thresholds
    same = [m for m in shared if abs(m.cosine or 0.0) >= t.same_module_cos]
    cos = inner / math.sqrt(ea * eb) if ea > 0 and eb > 0 else 0.0
    if cos_override is not None:
        cos = cos_override
    cos_shared = inner / math.sqrt(sa * sb) if sa > 0 and sb > 0 else 0.0
    scale = math.copysign(math.sqrt(sa / sb), inner) if sa > 0 and sb > 0 else 0.0
    cov = (sa / ea if ea > 0 else 0.0, sb / eb if eb > 0 else 0.0)
    same_e = (sum(m.norm_a**2 for m in same) / ea if ea > 0 else 0.0, sum(m.norm_b**2 for m in same) / eb if eb > 0 else 0.0)
    label, kind = label_of(cos, scale, cos_shared, cov, same_e, t)
    n_a = sum(1 for m in mods if m.norm_a > 0)
    n_b = sum(1 for m in mods if m.norm_b > 0)
    return Relation(label, kind, cos, scale, cos_shared, *cov, *same_e, len(shared), n_a - len(shared), n_b - len(shared), exact, mods)


def _module_norm(src: ModuleSource, name: str) -> float:
    m = src.modules[name]
    if m.kind != FACTORED:
        return float(np.linalg.norm(src.dense(name)))
    g = sum((u.T @ u for u in src.up_blocks(name)), np.zeros((m.rank or 0,) * 2, np.float64))
    h = sum((d @ d.T for d in src.down_blocks(name)), np.zeros((m.rank or 0,) * 2, np.float64))
    return math.sqrt(max(float(np.sum(g * h)), 0.0))


def module_relation(a: ModuleSource, b: ModuleSource, name: str) -> ModuleRelation:
    """Exact inner product and norms of one module both files have (same shape)."""
    ma, mb = a.modules[name], b.modules[name]
    if ma.kind == FACTORED and mb.kind == FACTORED:
        # One Gram of the stacked factors per block: [Ua Ub]ᵀ[Ua Ub] holds UaᵀUa, UbᵀUb and UaᵀUb.
        # numpy computes a matrix times its own transpose with BLAS syrk; a general UaᵀUb
        # product (tiny result, long inner dimension) took 40x longer on a busy 2-core machine.
        ra, rb = ma.rank or 0, mb.rank or 0
        gram_u = np.zeros((ra + rb, ra + rb))
        for ua, ub in zip(a.up_blocks(name), b.up_blocks(name)):
            both = np.concatenate([ua, ub], axis=1)
            gram_u += both.T @ both
        gram_d = np.zeros((ra + rb, ra + rb))
        for da, db in zip(a.down_blocks(name), b.down_blocks(name)):
            both = np.concatenate([da, db], axis=0)
            gram_d += both @ both.T
        inner = float(np.sum(gram_u[:ra, ra:] * gram_d[:ra, ra:]))  # tr((UaᵀUb)(DbDaᵀ)) = Σ (UaᵀUb) ⊙ (DaDbᵀ)
        na, nb = float(np.sum(gram_u[:ra, :ra] * gram_d[:ra, :ra])), float(np.sum(gram_u[ra:, ra:] * gram_d[ra:, ra:]))
        return ModuleRelation(name, inner, math.sqrt(max(na, 0.0)), math.sqrt(max(nb, 0.0)))
    wa, wb = a.dense(name), b.dense(name)
    return ModuleRelation(name, float(np.vdot(wa.astype(np.float64), wb)), float(np.linalg.norm(wa)), float(np.linalg.norm(wb)))


def exact_relation(
    a: ModuleSource,
    b: ModuleSource,
    thresholds: RelationThresholds = RelationThresholds(),
    *,
    norms_a: dict[str, float] | None = None,
    norms_b: dict[str, float] | None = None,
) -> Relation:
    """The exact relation of two files, module by module (``norms_*``: known norms of unshared modules)."""
    rows = []
    for name in sorted(set(a.modules) | set(b.modules)):
        ma, mb = a.modules.get(name), b.modules.get(name)
        if ma is not None and mb is not None and ma.shape == mb.shape:
            rows.append(module_relation(a, b, name))
            continue
        na = (norms_a or {}).get(name) if ma is not None else 0.0
        nb = (norms_b or {}).get(name) if mb is not None else 0.0
        na = _module_norm(a, name) if na is None else na
        nb = _module_norm(b, name) if nb is None else nb
        rows.append(ModuleRelation(name, 0.0, na, nb))
    return aggregate(rows, exact=True, thresholds=thresholds)


def sketch_relation(fa: Fingerprint, fb: Fingerprint, thresholds: RelationThresholds = RelationThresholds()) -> Relation:
    """The relation estimated from two fingerprints: module sketches for inner products, exact norms."""
    if fa.spec != fb.spec:
        raise InvalidInputError(f"fingerprints made with different projections ({fa.spec} vs {fb.spec}) cannot be compared")
    ia, ib = {n: i for i, n in enumerate(fa.names)}, {n: i for i, n in enumerate(fb.names)}
    rows, dot, ssa, ssb = [], 0.0, 0.0, 0.0
    for name in sorted(set(ia) | set(ib)):
        na = float(fa.norms[ia[name]]) if name in ia else 0.0
        nb = float(fb.norms[ib[name]]) if name in ib else 0.0
        sa = fa.sketches[ia[name]].astype(np.float64) if name in ia else None
        sb = fb.sketches[ib[name]].astype(np.float64) if name in ib else None
        ssa += float(sa @ sa) if sa is not None else 0.0
        ssb += float(sb @ sb) if sb is not None else 0.0
        inner = 0.0
        if sa is not None and sb is not None and na > 0 and nb > 0:
            d = float(sa @ sb)
            dot += d
            denom = math.sqrt(float(sa @ sa) * float(sb @ sb))
            inner = (d / denom) * na * nb if denom > 0 else 0.0  # sketch cosine x exact norms
        rows.append(ModuleRelation(name, inner, na, nb))
    cos = dot / math.sqrt(ssa * ssb) if ssa > 0 and ssb > 0 else 0.0  # exact for scaled copies
    return aggregate(rows, exact=False, thresholds=thresholds, cos_override=cos)
