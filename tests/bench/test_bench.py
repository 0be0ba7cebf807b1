"""Benchmarks at tiny sizes: output structure and exactness checks (never timings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carlos.bench.common import update_readme
from carlos.bench.synthetic import CorpusModel, corpus_statistics
from carlos.cli.main import main
from carlos.config import Thresholds
from carlos.core.index import DirectionIndex, same_top_k
from carlos.errors import InvalidInputError
from carlos.models.int8 import FbgemmInt8, fbgemm_available
from carlos.store.store import Store


def _run_json(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


# -- the index ---------------------------------------------------------------------------------
def test_index_top_k_equals_float32_brute_force_with_filters() -> None:
    rng = np.random.default_rng(0)
    n, d = 5000, 64
    base = rng.standard_normal(d)
    m = (base + 0.7 * rng.standard_normal((n, d))).astype(np.float32)  # correlated, many near ties
    m[7] = 0.0  # a zero direction scores 0, never NaN
    strength, consistency = rng.uniform(1, 11, n), rng.uniform(0, 0.5, n)
    index = DirectionIndex(m, strength, consistency, block_rows=1024, kernel="int8" if fbgemm_available() else "float32", int8=FbgemmInt8())
    assert index.kernel == ("int8-fbgemm+exact-rerank" if fbgemm_available() else "float32-scan")
    assert DirectionIndex(m, strength, consistency).kernel == "float32-scan"  # small: no codes needed
    t = Thresholds(strength_max=9.8, consistency_min=0.041)
    for q in rng.standard_normal((15, d)).astype(np.float32):
        rows, scores, stats = index.search(q, 10, t)
        ref_rows, ref_scores = index.exact_search(q, 10, t)
        assert same_top_k(rows, scores, ref_rows, ref_scores)
        assert all(strength[r] <= 9.8 and consistency[r] >= 0.041 for r in rows)
        assert stats.eligible == int(((strength <= 9.8) & (consistency >= 0.041)).sum())
    if index._packed:  # the rigorous bound the exactness rests on holds for every row
        x = q / np.linalg.norm(q)
        approx, bound = index._approx(x)
        assert (np.abs(approx - index._scan(x)) <= bound).all()
    nobody = Thresholds(strength_max=0.5, consistency_min=None)
    assert len(index.search(q, 10, nobody)[0]) == 0
    with pytest.raises(InvalidInputError):
        index.search(np.zeros(d, np.float32), 10, t)


def test_synthetic_corpus_matches_the_real_statistics(corpus_parquet: Path) -> None:
    import pyarrow.parquet as pq

    tab = pq.read_table(corpus_parquet, columns=["direction", "strength", "consistency"])
    m = np.asarray(tab.column("direction").to_pylist(), dtype=np.float32)
    s, c = tab.column("strength").to_numpy(), tab.column("consistency").to_numpy()
    model = CorpusModel.fit(m, s, c)
    blocks = list(model.sample(4000, seed=1, block=1500))
    assert [len(b[0]) for b in blocks] == [1500, 1500, 1000]
    syn = corpus_statistics(*(np.concatenate(x) for x in zip(*blocks)))
    real = corpus_statistics(m, s, c)
    assert syn["mean_norm"] == pytest.approx(real["mean_norm"], rel=0.1)
    assert syn["share_under_consistency"] == pytest.approx(real["share_under_consistency"], abs=0.05)
    assert syn["corr_norm_strength"] > 0.8 and syn["var_top16_pcs"] == pytest.approx(real["var_top16_pcs"], abs=0.1)


def test_bulk_insert_and_chunked_loader_round_trip(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "b.duckdb")
    rng = np.random.default_rng(1)
    m = rng.standard_normal((300, 16)).astype(np.float32)
    ids = [f"x:{i}" for i in range(300)]
    assert store.reps.bulk_insert(ids, m, rng.random(300), rng.random(300), embedder="E", source="test") == 300
    got_ids, got, s, c = store.reps.load_directions("E", chunk_rows=64)
    order = [got_ids.index(i) for i in ids]
    np.testing.assert_array_equal(got[order], m)
    arrow_ids, arrow = store.reps.direction_matrix("E")
    np.testing.assert_array_equal(arrow[[arrow_ids.index(i) for i in got_ids]], got)
    with pytest.raises(InvalidInputError, match="already have"):
        store.reps.bulk_insert(["x:3"], m[:1], [1.0], [0.1], embedder="E", source="test")
    with pytest.raises(InvalidInputError, match="out must be"):
        store.reps.load_directions("E", out=np.empty((300, 15), np.float32))
    assert store.reps.load_directions("nothing")[1].shape == (0, 0)


# -- the commands ------------------------------------------------------------------------------
def test_bench_scale_command_structure(capsys: pytest.CaptureFixture, real_store_path: Path) -> None:
    r = _run_json(capsys, ["--db", str(real_store_path), "bench", "scale", "--sizes", "1500", "--n-queries", "6", "--no-isolate", "--json"])
    assert r["model"]["source"].startswith("store") and r["model"]["real"]["n"] == 740
    (row,) = r["sizes"]
    assert row["n"] == 1500 and row["import"]["store_bytes"] > 1500 * 512 * 4 * 0.5
    sv = row["serve"]
    assert sv["n"] == 1500 and sv["exact_agree"] == sv["exact_checked"] == 6  # every measured query
    assert sv["raw_bytes"] == 1500 * 512 * 4 and sv["peak_bytes"] > 0
    assert set(sv["topk"]) == {"p50_ms", "p95_ms", "min_ms", "max_ms"}
    assert row["library"]["by_direction"]["p50_ms"] > 0 and row["umap"] is None
    capsys.readouterr()
    assert main(["--db", str(real_store_path), "bench", "scale", "--sizes", "200", "--n-queries", "3", "--no-isolate", "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| LoRAs |" in md and "| 200 |" in md and "1M targets are not assessed" in md


def test_bench_query_command_checks_exactness(capsys: pytest.CaptureFixture) -> None:
    r = _run_json(
        capsys,
        ["bench", "query", "--clip", "tiny", "--query", "pixel art", "--query", "snowy winter scene", "--warm-repeats", "2", "--json"],
    )
    assert [q["query"] for q in r["queries"]] == ["pixel art", "snowy winter scene"]
    assert r["n_prompts"] == 280 and r["prefix_cache"]["build_s"] > 0
    for q in r["queries"]:
        assert q["cos_reference_vs_cold"] >= 0.99999 and q["cos_reference_vs_service"] >= 0.99999
        assert q["cos_store_vs_memory"] >= 0.99999 and q["ratio"] > 0
    assert r["summary"]["exact"] is True and set(r["targets"]) == {"cold_ratio", "warm_ms", "cos"}
    assert 0 < r["summary"]["store_connect_ms"] <= r["summary"]["median_warm_store_ms"] * 10


def test_bench_characterize_command_compares_both_procedures(capsys: pytest.CaptureFixture) -> None:
    import torch

    r = _run_json(capsys, ["bench", "characterize", "--protocol", "smoke", "--loras", "2", "--json"])
    (case,) = r["cases"][:1]
    assert case["config"]["backend"] == "tiny" and case["pairs"] == 8
    assert case["ours"]["pipeline_loads"] == 1 and case["reference"]["pipeline_loads"] == 2
    assert case["ours"]["images"] == 4 + 8 and case["reference"]["images"] == 16  # base images shared
    assert case["agreement"]["min_direction_cos"] > 0.9999
    assert case["agreement"]["max_strength_rel_diff"] < 1e-4
    assert set(case["cost_per_lora"]) == {"paper", "quick", "smoke"}
    assert case["cost_per_lora"]["paper"]["pairs"] == 4480
    assert set(case["ours"]["seconds"]) == {"generate", "embed", "store", "attach+bookkeeping+summarise"}
    assert (r["gpu_skipped"] is None) == torch.cuda.is_available()
    assert r["paper_gpu_hours_per_lora"] == 7.0


def test_random_lora_writer_makes_valid_sdxl_loras(tmp_path: Path) -> None:
    from carlos.bench.characterize import write_random_lora
    from carlos.characterize.jobs import validate_upload
    from carlos.models.sdxl_arch import TINY_SDXL

    path = write_random_lora(tmp_path / "r.safetensors", TINY_SDXL, seed=1)
    report = validate_upload(path, "r.safetensors", "tiny")
    assert report.ok and report.base_family == "sdxl" and report.format == "diffusers" and report.n_tensors > 0


def test_readme_sections_are_replaced_in_place(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n")
    update_readme("scale", "| a |\n|---|\n| 1 |", readme)
    update_readme("query", "query table", readme)
    update_readme("scale", "| a |\n|---|\n| 2 |", readme)
    text = readme.read_text()
    assert text.count("<!-- bench:scale:start -->") == 1 and "| 2 |" in text and "| 1 |" not in text
    assert text.startswith("# Benchmarks\n\nintro") and "query table" in text
