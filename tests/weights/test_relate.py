"""carlos.weights.relate: exact re-ranking equals the dense computation; every transformation gets its label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import carlos.weights.canonical as canonical
from carlos.bench import weight_variants as wv
from carlos.files.validate import LoRAFileLimits
from carlos.models.sdxl_arch import TINY_SDXL
from carlos.weights.canonical import AdapterFile, ArrayAdapter
from carlos.weights.relate import (
    DERIVED,
    IDENTICAL,
    MERGE,
    PARTIAL,
    RESCALED,
    SUBSET,
    UNRELATED,
    RelationThresholds,
    exact_relation,
    sketch_relation,
)
from carlos.weights.sketch import fingerprint

TARGETS = wv.sdxl_lora_targets(TINY_SDXL)


def _lora(seed: int, rank: int = 8) -> wv.Factors:
    return wv.synthetic_lora(TARGETS, rank=rank, seed=seed)


def test_exact_inner_products_equal_the_dense_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canonical, "BLOCK", 6)
    rng = np.random.default_rng(0)
    names = ["unet:down_blocks_1_attentions_0_proj_in", "te1:encoder_layers_0_mlp_fc1", "te2:encoder_layers_0_mlp_fc2", "unet:only_a"]
    a = {n: (rng.standard_normal((20, 3)), rng.standard_normal((3, 14))) for n in names}
    b = {n: (a[n][0] + rng.standard_normal((20, 5))[:, :3], rng.standard_normal((3, 14))) for n in names[:2]}
    dense_b = {names[2]: rng.standard_normal((20, 14)), "te2:only_b": rng.standard_normal((5, 5))}
    rel = exact_relation(ArrayAdapter(a), ArrayAdapter(b, dense_b))
    wa = {n: u @ d for n, (u, d) in a.items()}
    wb = {**{n: u @ d for n, (u, d) in b.items()}, **dense_b}
    for m in rel.modules:
        if m.shared:
            assert m.inner == pytest.approx(float(np.vdot(wa[m.name], wb[m.name])), rel=1e-4)
        assert m.norm_a == pytest.approx(float(np.linalg.norm(wa.get(m.name, 0.0))), rel=1e-5)
        assert m.norm_b == pytest.approx(float(np.linalg.norm(wb.get(m.name, 0.0))), rel=1e-5)
    total = sum(float(np.vdot(wa[n], wb[n])) for n in names[:3])
    ea, eb = sum(np.linalg.norm(w) ** 2 for w in wa.values()), sum(np.linalg.norm(w) ** 2 for w in wb.values())
    assert rel.cosine == pytest.approx(total / np.sqrt(ea * eb), rel=1e-4)
    assert (rel.n_shared, rel.n_only_a, rel.n_only_b) == (3, 1, 1)


def _both(query: wv.Factors, original: wv.Factors):
    """(exact, from-fingerprints) relations of two in-memory LoRAs."""
    qa, oa = ArrayAdapter(query), ArrayAdapter(original)
    return exact_relation(qa, oa), sketch_relation(fingerprint(qa), fingerprint(oa))


@pytest.mark.parametrize(
    ("make", "label", "kind"),
    [
        (lambda o, other: wv.up_halved_down_doubled(o), IDENTICAL, None),
        (lambda o, other: wv.rescaled(o, 2.0), RESCALED, None),
        (lambda o, other: wv.rescaled(o, -1.0), RESCALED, None),
        (lambda o, other: wv.svd_rank(o, 0.5), DERIVED, None),
        (lambda o, other: wv.perturbed(o, 0.1, seed=3), DERIVED, None),
        (lambda o, other: wv.pruned(o, 0.3, seed=4), PARTIAL, SUBSET),
        (lambda o, other: wv.merged(o, other), PARTIAL, MERGE),
        (lambda o, other: wv.merged(other, o), PARTIAL, MERGE),
        (lambda o, other: other, UNRELATED, None),
    ],
    ids=["factors", "rescaled", "negated", "svd-half", "perturbed", "pruned", "merge-a", "merge-b", "unrelated"],
)
def test_each_transformation_gets_its_label(make, label: str, kind: str | None) -> None:
    original, other = _lora(1), _lora(2)
    for rel in _both(make(original, other), original):
        assert (rel.label, rel.kind) == (label, kind), (rel.exact, rel.cosine, rel.cosine_shared, rel.coverage_a, rel.coverage_b)
    exact, _ = _both(make(original, other), original)
    if label == RESCALED:
        assert abs(exact.scale) == pytest.approx(2.0 if exact.scale > 0 else 1.0, rel=1e-4)
    if kind == SUBSET:
        assert exact.coverage_a == pytest.approx(1.0) and 0.5 < exact.coverage_b < 0.9 and exact.n_only_b > 0
        assert exact.same_energy_a == pytest.approx(1.0) and exact.sharing_blocks()


def test_files_in_other_formats_and_dtypes_are_identical(tmp_path: Path) -> None:
    original = _lora(5)
    paths = {
        "kohya-f32": wv.write_lora_file(original, TARGETS, tmp_path / "a.safetensors", layout="kohya", alpha=2.0),
        "diffusers-bf16": wv.write_lora_file(original, TARGETS, tmp_path / "b.safetensors", layout="diffusers", dtype="BF16"),
        "kohya-f16": wv.write_lora_file(original, TARGETS, tmp_path / "c.safetensors", dtype="F16", metadata={}),
    }
    limits = LoRAFileLimits(sdxl_context_dims=(2048, 96))
    files = {k: AdapterFile.open(p, limits) for k, p in paths.items()}
    try:
        base = files["kohya-f32"]
        for key in ("diffusers-bf16", "kohya-f16"):
            rel = exact_relation(files[key], base)
            assert rel.label == IDENTICAL and rel.cosine > 0.9999 and abs(rel.scale - 1) < 2e-3, key
            assert sketch_relation(fingerprint(files[key]), fingerprint(base)).label == IDENTICAL
    finally:
        for f in files.values():
            f.close()


def test_thresholds_are_ordered_and_swapping_inverts_the_scale() -> None:
    with pytest.raises(Exception, match="thresholds"):
        RelationThresholds(copy_cos=0.2, partial_cos=0.3)
    rel, _ = _both(wv.rescaled(_lora(1), 4.0), _lora(1))
    back = rel.swapped()
    assert back.scale == pytest.approx(0.25, rel=1e-5) and back.label == RESCALED
    assert rel.to_dict(modules=3)["modules"] and len(rel.to_dict(modules=3)["modules"]) == 3
