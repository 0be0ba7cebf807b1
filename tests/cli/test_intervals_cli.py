"""Intervals on the command line: ``characterize --json`` and ``show`` of an upload (tiny backend)
and of a corpus LoRA, which has no per-pair data and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carlos.cli.main import main
from carlos.core.confidence import NO_INTERVAL
from carlos.files.testing import make_test_lora


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_characterize_and_show_print_intervals(tmp_path: Path, capsys) -> None:
    db, lora = tmp_path / "c.duckdb", tmp_path / "l.safetensors"
    make_test_lora(lora, seed=5)
    code, out, _ = run_cli(
        capsys, "--db", str(db), "characterize", str(lora), "--backend", "tiny", "--protocol", "smoke", "--quiet", "--json"
    )
    data = json.loads(out)
    assert code == 0 and data["uncertainty"]["n_clusters"] == 2  # smoke: 2 prompts x 2 seeds
    lo, hi = data["strength_interval"]
    assert lo <= data["strength"] <= hi and data["strength_se"] > 0
    assert len(data["consistency_interval"]) == 2 and data["consistency_se"] >= 0
    assert data["provenance"]["uncertainty"] == data["uncertainty"]

    code, out, _ = run_cli(capsys, "--db", str(db), "characterize", str(lora), "--backend", "tiny", "--protocol", "smoke", "--quiet")
    assert code == 0 and " ± " in out and "(95%: " in out  # the same job again, as text

    code, out, _ = run_cli(capsys, "--db", str(db), "show", data["lora_id"], "--json")
    rep = json.loads(out)["representations"][0]
    assert rep["uncertainty"] == data["uncertainty"]
    assert " ± " in rep["strength_text"] and rep["strength_text"].endswith(")")
    assert rep["risk_confidence"].startswith(("uncertain: ", "low risk", "too strong", "too unstable", "review"))
    assert abs(sum(rep["risk_probabilities"].values()) - 1) < 1e-9
    code, out, _ = run_cli(capsys, "--db", str(db), "show", data["lora_id"])
    assert "(95%: " in out and "risk class: " in out


def test_show_of_a_corpus_lora_has_no_interval(real_store_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--db", str(real_store_path), "show", "130580", "--json")
    rep = json.loads(out)["representations"][0]
    assert code == 0 and rep["uncertainty"] is None and rep["risk_confidence"] == NO_INTERVAL
    _, out, _ = run_cli(capsys, "--db", str(real_store_path), "show", "130580")
    assert NO_INTERVAL in out
