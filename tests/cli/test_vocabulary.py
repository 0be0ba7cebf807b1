"""One command-line vocabulary: one spelling per concept, ``--json`` everywhere, old spellings warn."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from carlos.cli.common import DeprecatedAlias
from carlos.cli.main import build_parser, main
from carlos.config import CORPUS_EMBEDDER, DEFAULT_BACKEND, DEFAULT_PROTOCOL, RANDOM_CLIP


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    out = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    for action in subs:
        for name, sub in action.choices.items():
            out.update(_leaves(sub, (*path, name)))
    return out


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings if not isinstance(a, DeprecatedAlias)}


LEAVES = _leaves(build_parser())


def test_every_command_that_prints_results_has_json() -> None:
    missing = [" ".join(cmd) for cmd, p in LEAVES.items() if "--json" not in _options(p)]
    assert not missing, f"commands without --json: {missing}"


@pytest.mark.parametrize("old", ["--profile", "--clip", "--no-progress"])
def test_old_spellings_are_only_deprecated_aliases(old: str) -> None:
    for cmd, p in LEAVES.items():
        assert old not in _options(p), f"{' '.join(cmd)} still offers {old} as a main option"


def test_one_kind_per_option_name() -> None:
    """A name is a count everywhere or a path everywhere; never both (``--queries`` was both)."""
    kinds: dict[str, set[str]] = {}
    for p in LEAVES.values():
        for name, action in _options(p).items():
            if action.type in (int, float):
                kinds.setdefault(name, set()).add("number")
            elif action.nargs != 0 and not action.choices:
                kinds.setdefault(name, set()).add("text")
    mixed = {n: k for n, k in kinds.items() if len(k) > 1}
    assert not mixed, mixed
    assert "--queries" not in kinds and "--n-queries" in kinds and "--query-file" in kinds


def test_defaults_come_from_the_config() -> None:
    def default(cmd: tuple[str, ...], opt: str) -> object:
        return _options(LEAVES[cmd])[opt].default

    assert default(("search",), "--clip-model") == CORPUS_EMBEDDER
    assert default(("evaluate",), "--clip-model") == CORPUS_EMBEDDER
    assert default(("bench", "query"), "--clip-model") == RANDOM_CLIP
    assert default(("characterize",), "--protocol") == DEFAULT_PROTOCOL
    assert default(("characterize-many",), "--protocol") == DEFAULT_PROTOCOL
    assert default(("characterize",), "--backend") == DEFAULT_BACKEND


@pytest.mark.parametrize(
    ("argv", "old", "new", "dest", "value"),
    [
        (["characterize", "x.safetensors", "--profile", "quick"], "--profile", "--protocol", "protocol", "quick"),
        (["characterize-many", "m.csv", "--no-progress"], "--no-progress", "--quiet", "quiet", True),
        (["bench", "query", "--clip", RANDOM_CLIP], "--clip", "--clip-model", "clip_model", RANDOM_CLIP),
        (["bench", "scale", "--queries", "7"], "--queries", "--n-queries", "n_queries", 7),
        (["evaluate", "--queries", "q.json"], "--queries", "--query-file", "query_file", "q.json"),
    ],
)
def test_deprecated_alias_works_and_warns_once(
    argv: list[str], old: str, new: str, dest: str, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err.strip().splitlines() == [f"warning: {old} is deprecated; use {new}"]


def test_unknown_choice_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["characterize", "x.safetensors", "--protocol", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "paper" in err and "quick" in err and "smoke" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "characterize", "--backend", "nope"])
    assert "tiny" in capsys.readouterr().err


def test_make_test_lora_and_worker_print_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.safetensors"
    assert main(["make-test-lora", str(out), "--seed", "3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(out) and info["seed"] == 3 and out.exists()
    assert main(["--db", str(tmp_path / "s.duckdb"), "worker", "--once", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"processed_jobs": 0}
