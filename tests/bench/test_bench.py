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


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_bulk_insert_and_chunked_loader_round_trip(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """Both stores: PostgreSQL's vectors cross in its binary format (carlos.store.pgbinary), exactly."""
    store = Store.open(tmp_path / "b.duckdb" if backend == "duckdb" else request.getfixturevalue("pg_url"))
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


def test_bench_scale_on_a_team_store_runs_beside_duckdb_and_drops_its_database(
    capsys: pytest.CaptureFixture, real_store_path: Path, pg_server
) -> None:
    import psycopg

    from carlos.bench.scale_report import team_verdicts
    from carlos.store.postgres import redact

    server = pg_server.get_uri()

    def databases() -> set[str]:
        with psycopg.connect(server) as con:
            return {r[0] for r in con.execute("SELECT datname FROM pg_database").fetchall()}

    before = databases()
    argv = ["--db", str(real_store_path), "--store", server, "bench", "scale", "--sizes", "400", "--n-queries", "3", "--no-isolate"]
    r = _run_json(capsys, [*argv, "--json"])
    (row,) = r["sizes"]
    team = row["team_store"]
    assert r["team_store"] == redact(server)  # never the URL itself (tests/store/test_postgres.py: a password never shows)
    assert team["serve"]["n"] == row["serve"]["n"] == 400 and team["serve"]["exact_agree"] == team["serve"]["exact_checked"] == 3
    assert team["import"]["store_bytes"] > 0 and team["pages"]["reads"] == row["pages"]["reads"] == 30
    (verdict,) = team_verdicts(r)
    assert verdict["n"] == 400 and verdict["search_ratio"] > 0 and verdict["page_read_ratio"] > 0
    assert databases() == before  # the scratch database is gone
    capsys.readouterr()
    assert main([*argv, "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| PostgreSQL |" in md and "| DuckDB file |" in md and "team store at 400" in md and "--store postgresql://…" in md


def test_bench_query_command_checks_exactness(capsys: pytest.CaptureFixture) -> None:
    argv = ["bench", "query", "--clip", "tiny", "--query", "pixel art", "--query", "snowy winter scene"]
    r = _run_json(capsys, [*argv, "--warm-repeats", "2", "--repeats", "2", "--json"])
    assert [q["query"] for q in r["queries"]] == ["pixel art", "snowy winter scene"]
    assert r["n_prompts"] == 280 and r["prefix_cache"]["build_s"] > 0
    assert set(r["sides"]) == {"reference_shipped", "reference_77", "cold"}
    assert "padded to its longest text" in r["sides"]["reference_shipped"] and "77" in r["sides"]["reference_77"]
    for q in r["queries"]:
        # the pad-to-longest (shipped) row exists and is the main reference; the 77-padded one is kept
        assert len(q["reference_shipped_runs_s"]) == len(q["cold_runs_s"]) == 2 and q["reference_77_s"] > 0
        assert q["ratio_vs_shipped"] > 0 and q["ratio_vs_77"] > 0
        lo, hi = q["ratio_vs_shipped_range"]
        assert lo <= q["ratio_vs_shipped"] <= hi
        tp, tc = q["shipped_tokens_per_text"]
        assert tp < tc < 77 and q["shipped_positions"] == 280 * (tp + tc) < q["padded_77_positions"] == 2 * 280 * 77
        assert q["cold_positions"] == 280 * (q["query_tokens"] + 1)
        # the cached direction equals both references, and the references equal each other
        assert q["cos_shipped_vs_cold"] >= 0.99999 and q["cos_77_vs_cold"] >= 0.99999
        assert q["cos_shipped_vs_77"] >= 0.99999 and q["cos_shipped_vs_service"] >= 0.99999
        assert q["cos_store_vs_memory"] >= 0.99999
    s = r["summary"]
    assert s["exact"] is True and s["min_cos_shipped_vs_77"] >= 0.99999
    assert set(r["targets"]) == {"cold_ratio_vs_shipped", "short_query_tokens", "warm_ms", "cos"}
    assert s["cold_target_met"] in (True, False) and s["min_ratio_vs_shipped_short"] > 0
    assert 0 < s["store_connect_ms"] <= s["median_warm_store_ms"] * 10
    assert main([*argv, "--warm-repeats", "1", "--repeats", "1", "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| shipped s (tokens/text) | 77-padded s |" in md and "vs shipped (range)" in md and "shipped (main reference)" in md


def test_bench_characterize_command_compares_both_procedures(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    import torch

    argv = ["bench", "characterize", "--protocol", "smoke", "--seeds", "4", "--loras", "2", "--adaptive-images", "900", "--json"]
    r = _run_json(capsys, argv)
    (case,) = r["cases"][:1]
    assert case["config"]["backend"] == "tiny" and case["config"]["protocol_run"] == "smoke-x4" and case["pairs"] == 16
    o, ref = case["ours"], case["reference"]
    assert o["pipeline_loads"] == 1 and ref["pipeline_loads"] == ref["clip_loads"] == 3  # the base run + one run per LoRA
    assert o["images"] == ref["images"] == 8 + 16 and ref["base_images"] == 8  # both make base images once
    assert o["empty_cache_calls"] == 0 and o["fast_path"]["fuse_lora"] and o["batch"] == 8
    assert ref["clip_image_processor"] == "CLIPImageProcessorPil"  # the release's (transformers 4) PIL processor
    assert case["agreement"]["min_direction_cos"] > 0.9999  # same noise, LoRA, CLIP weights: fused vs adapter rounding only
    assert case["agreement"]["max_strength_rel_diff"] < 1e-3
    costs = case["cost_per_lora"]
    assert set(costs) == {"paper", "quick", "smoke", "smoke-x4", "adaptive (expected)"} and costs["smoke-x4"]["measured"]
    assert costs["paper"]["pairs"] == 4480 and costs["adaptive (expected)"]["pairs"] == 900
    assert costs["adaptive (expected)"]["expected_not_measured"] and not costs["paper"]["expected_not_measured"]
    assert set(o["seconds"]) == {"generate", "embed", "store", "attach+bookkeeping+summarise"}
    assert set(o["stages"]) == set(ref["stages"]) == {"unet", "vae", "text", "other"} and o["stages"]["unet"] > 0
    saved = tmp_path / "r.json"  # a saved result (bench/gpu.sh's) renders without measuring anything
    saved.write_text(json.dumps(r))
    assert main(["bench", "characterize", "--from-json", str(saved), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert r["command"] in md and "| tiny | reference | 2 x 8 |" in md and "adaptive (expected)" in md
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


# -- adaptive protocol simulation ----------------------------------------------------------------
def test_adaptive_bench_small_profile(capsys: pytest.CaptureFixture) -> None:
    out = _run_json(capsys, ["bench", "adaptive", "--loras", "40", "--splits", "0.5", "--workers", "1", "--json"])
    assert out["loras"] == 40 and out["full_pairs"] == 4480 and len(out["splits"]) == 1
    s = out["splits"][0]
    assert {"median_images", "median_saving", "changed_class_share", "median_direction_cosine", "median_top10_overlap"} <= set(s)
    assert 70 <= s["median_images"] <= s["p90_images"] <= 4480
    assert s["median_saving"] == pytest.approx(4480 / s["median_images"])
    assert 0.0 <= s["changed_class_share"] <= 1.0 and 0 <= s["median_top10_overlap"] <= 10
    assert sum(s["reasons"].values()) == 40
    assert set(s["reasons"]) <= {
        "risk class settled: too strong",
        "risk class settled: too unstable",
        "direction and intervals settled",
        "reached the paper's 4,480 pairs",
    }
