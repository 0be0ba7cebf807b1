"""The command line on the real corpus: stats, show, similar, help and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from carlos.cli.main import build_parser, main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_json_reports_the_paper_counts(real_store_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--db", str(real_store_path), "stats", "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["loras"], data["over_strength"], data["under_consistency"], data["retained"]) == (
        740,
        21,
        204,
        515,
    )
    assert (data["strength_max"], data["consistency_min"]) == (9.8, 0.041)


def test_stats_thresholds_are_options(real_store_path: Path, capsys) -> None:
    _, out, _ = run_cli(capsys, "--db", str(real_store_path), "stats", "--json", "--strength-max", "100", "--no-consistency-filter")
    data = json.loads(out)
    assert data["over_strength"] == 0 and data["under_consistency"] == 0 and data["retained"] == 740


def test_similar_to_pixel_art_xl_is_pixel_art(real_store_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--db", str(real_store_path), "similar", "130580", "--top-k", "5", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and len(hits) == 5
    assert all("pixel" in h["name"].lower() for h in hits), [h["name"] for h in hits]
    assert "civitai:130580" not in [h["lora_id"] for h in hits]
    assert all(h["strength"] <= 9.8 and h["consistency"] >= 0.041 for h in hits)


def test_show(real_store_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "--db", str(real_store_path), "show", "130580", "--json")
    data = json.loads(out)
    assert code == 0 and data["name"] == "Pixel Art XL"
    rep = data["representations"][0]
    assert rep["embedder"] == "ViT-B-32/openai" and 0 < rep["strength_pct"] <= 100
    code, out, _ = run_cli(capsys, "--db", str(real_store_path), "show", "130580")
    assert "Strength 4.742" in out


def test_unknown_lora_is_a_message_not_a_traceback(real_store_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--db", str(real_store_path), "show", "424242424")
    assert code == 2 and err.startswith("error: no LoRA with id")


def _subcommands(parser) -> list[list[str]]:
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append([name])
                found.extend([name, *rest] for rest in _subcommands(sub))
    return found


def test_every_command_has_help(capsys: pytest.CaptureFixture) -> None:
    out = subprocess.run([sys.executable, "-m", "carlos", "--help"], capture_output=True, text=True)  # as a user starts it
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr
    commands = _subcommands(build_parser())
    assert ["corpus", "import"] in commands and ["stats"] in commands and ["store", "copy"] in commands
    for cmd in commands:  # in this process: the same parser, without a Python start per command
        with pytest.raises(SystemExit) as done:
            main([*cmd, "--help"])
        assert done.value.code == 0, cmd
        assert "usage:" in capsys.readouterr().out, cmd
