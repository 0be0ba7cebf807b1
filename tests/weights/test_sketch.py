"""carlos.weights.sketch and .stats: the sketch estimates ⟨ΔW₁, ΔW₂⟩_F; norms and ranks are exact."""

from __future__ import annotations

import numpy as np
import pytest

import carlos.weights.canonical as canonical
from carlos.weights.canonical import ArrayAdapter
from carlos.weights.sketch import SketchSpec, buckets, fingerprint, summarize
from carlos.weights.stats import CAVEAT, layer_kind


def _pair(seed: int = 0) -> tuple[ArrayAdapter, ArrayAdapter, float]:
    """Two correlated 3-module LoRAs and their exact ⟨ΔW₁, ΔW₂⟩_F."""
    rng = np.random.default_rng(seed)
    shapes = {
        "unet:down_blocks_1_attentions_0_proj_in": (40, 30),
        "te1:encoder_layers_0_mlp_fc1": (24, 16),
        "te2:encoder_layers_0_mlp_fc2": (16, 24),
    }
    fa, fb, inner = {}, {}, 0.0
    for name, (o, i) in shapes.items():
        u, d = rng.standard_normal((o, 3)), rng.standard_normal((3, i))
        u2 = u + 0.8 * rng.standard_normal((o, 3))
        fa[name], fb[name] = (u, d), (u2, d)
        inner += float(np.vdot(u @ d, u2 @ d))
    return ArrayAdapter(fa), ArrayAdapter(fb), inner


def test_sketch_inner_products_are_unbiased_estimates() -> None:
    a, b, truth = _pair()
    module_est, vector_est = [], []
    for seed in range(400):
        spec = SketchSpec(dim=64, k=4, seed=seed)
        fa, fb = fingerprint(a, spec), fingerprint(b, spec)
        module_est.append(float(np.sum(fa.sketches.astype(np.float64) * fb.sketches)))
        vector_est.append(float(fa.vector.astype(np.float64) @ fb.vector))
    for est in (np.array(module_est), np.array(vector_est)):
        se = est.std(ddof=1) / np.sqrt(len(est))
        assert abs(est.mean() - truth) < 4 * se, (est.mean(), truth, se)
        assert est.std() < abs(truth)  # informative, not just unbiased


def test_norms_and_effective_ranks_are_exact_and_both_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canonical, "BLOCK", 7)  # several blocks per factor
    rng = np.random.default_rng(1)
    u, d = rng.standard_normal((30, 5)) * np.array([3.0, 2, 1, 0.5, 0.1]), rng.standard_normal((5, 20))
    name = "unet:mid_block_attentions_0_proj_out"
    factored, dense = ArrayAdapter({name: (u, d)}), ArrayAdapter(dense={name: u @ d})
    spec = SketchSpec()
    sf, sd = summarize(factored, name, spec), summarize(dense, name, spec)
    w = (u @ d).astype(np.float32)
    sigma2 = np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2
    assert sf.norm == pytest.approx(np.linalg.norm(w), rel=1e-5) and sd.norm == pytest.approx(sf.norm, rel=1e-5)
    pr = sigma2.sum() ** 2 / (sigma2**2).sum()
    assert sf.effective_rank == pytest.approx(pr, rel=1e-4) and sd.effective_rank == pytest.approx(pr, rel=1e-4)
    np.testing.assert_allclose(sf.sketch, sd.sketch, rtol=1e-4, atol=1e-4 * np.abs(sf.sketch).max())


def test_a_scaled_copy_has_exactly_the_scaled_fingerprint() -> None:
    a, _, _ = _pair(2)
    scaled = ArrayAdapter({n: (u * -2.5, d) for n, (u, d) in a.factors.items()})
    fa, fs = fingerprint(a), fingerprint(scaled)
    np.testing.assert_allclose(fs.vector, -2.5 * fa.vector, rtol=1e-5, atol=1e-6 * np.abs(fa.vector).max())
    np.testing.assert_allclose(fs.norms, 2.5 * fa.norms, rtol=1e-5)
    assert fa.spec == SketchSpec().id and fa.vector.shape == (256,) and fa.sketches.shape == (3, 16)


def test_projections_are_fixed_by_name_and_spec() -> None:
    spec = SketchSpec()
    w1, s1 = buckets(spec, "unet:a")
    w2, s2 = buckets(spec, "unet:a")
    assert (w1 == w2).all() and (s1 == s2).all() and set(np.unique(s1)) <= {-1.0, 1.0}
    assert not (buckets(spec, "unet:b")[0] == w1).all()
    assert not (buckets(SketchSpec(seed=1), "unet:a")[0] == w1).all()


def test_statistics_are_energy_shares_of_the_file() -> None:
    a, _, _ = _pair(3)
    stats = fingerprint(a).stats
    assert stats["about"] == CAVEAT and "not a prediction" in CAVEAT
    assert sum(b["share"] for b in stats["blocks"]) == pytest.approx(1.0)
    assert {b["block"] for b in stats["blocks"]} == {"unet:down_blocks_1", "te1", "te2"}
    assert stats["energy"] == pytest.approx(sum(float(np.linalg.norm(u @ d)) ** 2 for u, d in a.factors.values()), rel=1e-5)
    assert 1.0 <= stats["effective_rank"] <= 3.0 and stats["ranks"] == [3]
    assert layer_kind("unet:down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k") == "cross-attention"
    assert layer_kind("te2:encoder_layers_0_mlp_fc1") == "text MLP"
