"""``bench weights`` at a tiny profile: every transformation row, false positives, speed and search sections (never timings)."""

from __future__ import annotations

import json

import pytest

from carlos.bench.weights import FILE_TRANSFORMS, TRANSFORMS, WeightsBenchConfig
from carlos.bench.weights_report import verdicts, weights_bench_markdown
from carlos.cli.main import main
from carlos.errors import InvalidInputError


def test_the_weights_bench_runs_at_a_tiny_profile(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "weights", "--shapes", "tiny", "--ranks", "4,8", "--originals", "2", "--negatives", "6"]
    argv += ["--library-size", "3000", "--n-queries", "4", "--speed-rank", "4", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    d = result["detection"]
    assert [r["transformation"] for r in d["rows"]] == [*TRANSFORMS, *FILE_TRANSFORMS]
    assert d["originals"] == 4 and d["negatives"] == 6 and d["modules"] == 168
    by_name = {r["transformation"]: r for r in d["rows"]}
    assert all(r["n"] == 4 for name, r in by_name.items() if name in TRANSFORMS)
    assert all(r["n"] == 2 for name, r in by_name.items() if name in FILE_TRANSFORMS)  # one original per rank
    assert all(r["rate"] == 1.0 and r["as_labelled"] == r["n"] for r in d["rows"]), d["rows"]
    assert d["false_positives"] == 0 and d["false_positive_pairs"] == (4 * len(TRANSFORMS) + 2 * len(FILE_TRANSFORMS)) * 6 + 6 * 5
    speed = result["fingerprint_speed"]
    assert speed["modules"] == 168 and speed["bf16_diffusers_copy"]["label"] == "identical"
    assert speed["traced_peak_bytes"] > 0 and speed["largest_module_bytes"] > 0
    search = result["search_speed"]
    assert search["n"] == 3000 and search["exact_agree"] == search["exact_checked"] == 4
    lines = verdicts(result)
    assert lines[0].endswith("met)") and "NOT" not in lines[0]
    markdown = weights_bench_markdown(result, "cmd")
    assert (
        markdown.startswith("## Weight-space matching")
        and "| 50/50 merge with another LoRA | partial (merge or blend) | 4 | 4 |" in markdown
    )


def test_the_config_is_checked() -> None:
    with pytest.raises(InvalidInputError):
        WeightsBenchConfig(shapes="sd15")
    with pytest.raises(InvalidInputError):
        WeightsBenchConfig(originals=1)
