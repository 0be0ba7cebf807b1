"""``prompt-sets`` (list, ``--show``) and the ``--prompt-set`` / ``--trigger`` options of the commands that use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carlos.cli.main import build_parser, main
from carlos.data import prompts as P
from carlos.data.corpus import AUTHORS_RELEASE


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prompt_sets_json_lists_every_set_with_its_source(capsys, corpus_parquet: Path) -> None:
    code, out, _ = _run(capsys, "prompt-sets", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and sorted(rows) == P.list_prompt_sets() == ["carlos-authors", "carlos-prompts-v1"]
    authors, team = rows["carlos-authors"], rows["carlos-prompts-v1"]
    assert authors["default"] is True and team["default"] is False
    src = authors["source"]
    assert (src["kind"], src["wheel"], src["member"], src["sha256"]) == (
        "wheel",
        "carlos==0.0.3",
        "carlos/generative_prompts.py",
        AUTHORS_RELEASE.prompts_sha256,
    )
    assert src["present"] and src["path"].endswith("generative_prompts.py")
    assert team["source"]["kind"] == "file" and team["source"]["path"].endswith("data/prompts.json")
    for name, r in rows.items():
        pset = P.get_prompt_set(name)
        assert r["available"] and r["counts"] == {"index": 280, "query": 280}
        assert r["content_hash"] == pset.content_hash
        assert [c["name"] for c in r["categories"]] == list(pset.category_names)
        assert sum(len(c["subcategories"]) for c in r["categories"]) == 35
    assert authors["categories"][0]["subcategories"][0] == "Realistic or Stylized Human Portraits"
    code, out, _ = _run(capsys, "prompt-sets")
    assert code == 0 and "carlos-authors  (default)" in out and AUTHORS_RELEASE.prompts_sha256 in out and "data/prompts.json" in out


def test_show_prints_the_prompts_per_split(capsys) -> None:
    code, out, _ = _run(capsys, "prompt-sets", "--show", "carlos-authors", "--json")
    data = json.loads(out)
    pset = P.get_prompt_set("carlos-authors")
    assert code == 0 and data["name"] == "carlos-authors" and data["content_hash"] == pset.content_hash
    assert [p["text"] for p in data["index"]] == [p.text for p in pset.index_prompts]
    assert [p["text"] for p in data["query"]] == [p.text for p in pset.query_prompts]
    assert data["query"][0]["sub_index"] == 0 and data["query"][0]["category"] == "Portraits"
    code, out, _ = _run(capsys, "prompt-sets", "--show", "carlos-prompts-v1")
    team = P.get_prompt_set("carlos-prompts-v1")
    assert code == 0 and "index prompts (280)" in out and "query prompts (280)" in out
    assert team.index_prompts[0].text in out and team.query_prompts[-1].text in out


def test_a_missing_authors_file_is_listed_and_show_fails_clearly(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(P, "candidate_paths", lambda: [tmp_path / "generative_prompts.py"])
    code, out, _ = _run(capsys, "prompt-sets", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["carlos-authors"]["available"] is False and rows["carlos-prompts-v1"]["available"]
    code, _, err = _run(capsys, "prompt-sets", "--show", "carlos-authors")
    assert code == 2 and AUTHORS_RELEASE.prompts_sha256 in err and "python -m carlos corpus import" in err


def test_prompt_set_and_trigger_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["characterize", "x.safetensors", "--trigger", "pcut style", "--trigger", "paper art"])
    assert args.trigger == ["pcut style", "paper art"] and args.prompt_set == "carlos-authors"
    assert parser.parse_args(["characterize", "x.safetensors"]).trigger is None
    args = parser.parse_args(["characterize-many", "m.csv", "--prompt-set", "carlos-prompts-v1"])
    assert args.prompt_set == "carlos-prompts-v1"
    assert parser.parse_args(["search", "pixel art"]).prompt_set == "carlos-authors"
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "pixel art", "--prompt-set", "nope"])


def test_search_passes_the_prompt_set_to_the_config(capsys, real_store_path: Path, monkeypatch) -> None:
    from carlos.search import service

    seen = []
    real = service.SearchService.search

    def spy(self, query, config):  # noqa: ANN001, ANN202
        seen.append(config.prompt_set)
        return real(self, query, config)

    monkeypatch.setattr(service.SearchService, "search", spy)
    for argv, want in ((["--prompt-set", "carlos-prompts-v1"], "carlos-prompts-v1"), ([], "carlos-authors")):
        code, _, _ = _run(capsys, "--db", str(real_store_path), "search", "pixel art", "--retriever", "bm25", "--json", *argv)
        assert code == 0 and seen[-1] == want
