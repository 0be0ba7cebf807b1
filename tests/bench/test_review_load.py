"""The review and load benchmarks at tiny sizes: output structure, agreement with the old code,
and the load benchmark's checks of a page (never timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carlos.bench.load import LoadBenchConfig
from carlos.bench.load_clients import Outcome, check_elements, plan
from carlos.bench.load_procs import tree_cpu_seconds
from carlos.bench.review import ReviewBenchConfig, review_bench_markdown
from carlos.cli.main import main
from carlos.errors import InvalidInputError


def test_bench_review_profile(capsys: pytest.CaptureFixture, real_store_path: Path, tmp_path: Path) -> None:
    capsys.readouterr()
    argv = ["--db", str(real_store_path), "bench", "review", "--sizes", "400", "--open-items", "40", "--repeats", "1"]
    assert main([*argv, "--json", "--workdir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["sizes"]
    assert row["n"] == 400 and row["open_items"] == 40 and row["looked_up"] == 40
    assert row["agrees_with_old_code"] is True
    assert row["items_with_near_duplicates"] >= 1 and row["groups"] <= 40  # planted copies were found and grouped
    assert row["old_show_all_bytes"] == 4 * 400 * 400 + 4 * 400 * 512
    assert out["target"]["met"] is None  # 100k was not measured
    md = review_bench_markdown(out, "python -m carlos bench review --sizes 400")
    assert "| 400 |" in md and "not measured" in md
    with pytest.raises(InvalidInputError):
        ReviewBenchConfig(sizes=(1000,), open_items=2000)


def test_load_plan_and_page_checks() -> None:
    acts = plan(["pixel art"], ["civitai:1"])
    assert [(a.kind, a.page, a.query) for a in acts] == [
        ("search", "search", "q=pixel+art&r=behaviour&k=10"),
        ("search", "search", "q=pixel+art&r=bm25&k=10"),
        ("detail", "detail", "lora=civitai%3A1"),
    ]
    search = [("heading", "Behaviour search (text-seeded): 10 results"), ("dataframe", "")]
    detail = [("heading:h1", "Pixel Art XL"), ("metric", "")]
    assert check_elements("search", search) is None and check_elements("detail", detail) is None
    assert "no results" in check_elements("search", search[:1])
    assert "no title" in check_elements("detail", detail[1:])
    assert "exception" in check_elements("detail", [*detail, ("exception", "StoreBusyError: x")])
    assert "error element" in check_elements("search", [*search, ("alert:error", "Could not search")])
    assert "database is locked" in check_elements("search", [*search, ("markdown", "IO Error: database is locked")])
    assert Outcome("search", "q=x", 0.0, 1.0).error is None
    with pytest.raises(InvalidInputError):
        LoadBenchConfig(client="firefox")


def test_tree_cpu_counts_children() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('burnt', flush=True)\ninput()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "burnt"
        assert tree_cpu_seconds(os.getpid()) >= tree_cpu_seconds(child.pid) >= 0.25
    finally:
        child.communicate("\n", timeout=10)
