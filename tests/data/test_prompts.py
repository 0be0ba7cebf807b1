"""The team's prompt set (data/prompts.json) and its loader, hashes, subsets and profiles.

The default set is the authors' (``carlos-authors``, tests/data/test_authors_prompts.py); the
team's set is used where it is named, so these tests name it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carlos.config import REPO_ROOT
from carlos.data import prompts as P
from carlos.data.prompt_file import load_prompt_set
from carlos.data.prompt_set import PromptSet
from carlos.errors import InvalidInputError

DATA_FILE = REPO_ROOT / "data" / "prompts.json"
TEAM = "carlos-prompts-v1"
PAPER_COUNTS = [
    ("Portraits", 4),
    ("Landscapes", 4),
    ("Artistic Styles", 4),
    ("Conceptual Arts", 4),
    ("Animals", 3),
    ("Fashion", 4),
    ("Vehicles", 3),
    ("Food", 3),
    ("Cinematic", 3),
    ("Logos", 3),
]


@pytest.fixture(scope="module")
def pset() -> PromptSet:
    return P.get_prompt_set(TEAM)


@pytest.fixture()
def raw() -> dict[str, Any]:
    """A fresh parsed copy of the data file, read independently of the module."""
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def _all_texts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(split, text) for c in doc["categories"] for s in c["subcategories"] for split in ("index", "query") for text in s[split]]


def _write(tmp_path: Path, doc: Any, name: str = "p.json", **dump_kw: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, **dump_kw), encoding="utf-8")
    return path


# --- shape and content of the data file --------------------------------------------------------


def test_paper_shape(pset: PromptSet, raw: dict[str, Any]) -> None:
    assert [(c["name"], len(c["subcategories"])) for c in raw["categories"]] == PAPER_COUNTS
    assert [(c.name, len(c.subcategories)) for c in pset.categories] == PAPER_COUNTS
    assert sum(n for _, n in PAPER_COUNTS) == 35
    for c in raw["categories"]:
        for s in c["subcategories"]:
            assert len(s["index"]) == 8 and len(s["query"]) == 8, (c["name"], s["name"])
    assert len(pset.index_prompts) == 280 and len(pset.query_prompts) == 280
    assert pset.id == "carlos-prompts-v1" == raw["id"]
    assert P.list_prompt_sets() == ["carlos-authors", "carlos-prompts-v1"]
    assert P.get_prompt_set().id == "carlos-authors" != pset.id  # the default is the authors' set


def test_all_prompts_distinct_and_splits_disjoint(raw: dict[str, Any]) -> None:
    pairs = _all_texts(raw)
    assert len(pairs) == 560
    normalized = [" ".join(t.lower().split()) for _, t in pairs]
    dups = [t for t, n in Counter(normalized).items() if n > 1]
    assert dups == []
    index = {n for (s, _), n in zip(pairs, normalized) if s == "index"}
    query = {n for (s, _), n in zip(pairs, normalized) if s == "query"}
    assert len(index) == len(query) == 280 and not index & query
    subs = [s["name"] for c in raw["categories"] for s in c["subcategories"]]
    assert len(set(subs)) == 35


def test_prompt_text_style(raw: dict[str, Any]) -> None:
    for _, text in _all_texts(raw):
        words = text.split()
        assert 6 <= len(words) <= 18, text
        assert text == text.strip() and "  " not in text, text
        assert text[-1] not in ".,;:!?", text
        assert text.isascii(), text


def test_prompt_metadata_and_category_lookup(pset: PromptSet, raw: dict[str, Any]) -> None:
    for split in ("index", "query"):
        prompts = pset.prompts(split)
        assert [p.split_index for p in prompts] == list(range(280))
        assert all(p.split == split for p in prompts)
        expected = [(c["name"], s["name"], i, t) for c in raw["categories"] for s in c["subcategories"] for i, t in enumerate(s[split])]
        assert [(p.category, p.subcategory, p.sub_index, p.text) for p in prompts] == expected
        for p in prompts:
            assert pset.category_of(p.text) == p.category
            assert P.category_of(p.text, TEAM) == p.category
            assert pset.lookup(p.text) == p
    with pytest.raises(InvalidInputError, match="not a prompt of carlos-prompts-v1"):
        pset.category_of(pset.index_prompts[0].text + ", some trigger")
    with pytest.raises(InvalidInputError, match="split must be one of"):
        pset.prompts("train")


def test_prompt_objects_are_frozen(pset: PromptSet) -> None:
    with pytest.raises(AttributeError):
        pset.index_prompts[0].text = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        pset.content_hash = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pset._by_text["x"] = pset.index_prompts[0]  # type: ignore[index]


def test_import_is_cheap() -> None:
    code = "import sys, carlos.data.prompts; print('torch' in sys.modules or 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- registry ----------------------------------------------------------------------------------


def test_registry(pset: PromptSet) -> None:
    assert P.get_prompt_set("carlos-prompts-v1") is pset
    with pytest.raises(InvalidInputError, match=r"unknown prompt set 'nope'.*carlos-prompts-v1"):
        P.get_prompt_set("nope")


def test_registry_rejects_id_mismatch(tmp_path: Path, raw: dict[str, Any], monkeypatch) -> None:
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data", raw, "other.json")
    monkeypatch.setattr(P, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(P, "_REGISTRY", {"other-set": "other.json"})
    P._load_registered.cache_clear()
    try:
        with pytest.raises(InvalidInputError, match="declares id 'carlos-prompts-v1'.*'other-set'"):
            P.get_prompt_set("other-set")
    finally:
        P._load_registered.cache_clear()


# --- content hash ------------------------------------------------------------------------------


def _reverse_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _reverse_keys(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reverse_keys(v) for v in obj]
    return obj


def test_hash_ignores_key_order_and_formatting(tmp_path: Path, pset: PromptSet, raw: dict[str, Any]) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", pset.content_hash)
    assert load_prompt_set(DATA_FILE).content_hash == pset.content_hash
    variants = [
        _write(tmp_path, _reverse_keys(raw), "a.json", indent=7),
        _write(tmp_path, raw, "b.json", separators=(",", ":")),
        _write(tmp_path, raw, "c.json", indent=1, ensure_ascii=True, sort_keys=True),
    ]
    described = dict(raw, description="reworded description")
    variants.append(_write(tmp_path, described, "d.json"))
    for path in variants:
        assert load_prompt_set(path).content_hash == pset.content_hash, path.name


def test_hash_changes_with_content(tmp_path: Path, pset: PromptSet, raw: dict[str, Any]) -> None:
    def edit(fn: Callable[[dict[str, Any]], None]) -> str:
        doc = copy.deepcopy(raw)
        fn(doc)
        return load_prompt_set(_write(tmp_path, doc)).content_hash

    sub0 = lambda d: d["categories"][0]["subcategories"][0]  # noqa: E731
    hashes = {
        pset.content_hash,
        edit(lambda d: sub0(d)["index"].__setitem__(0, "a completely new prompt about a red kite")),
        edit(lambda d: sub0(d)["query"].__setitem__(7, sub0(d)["query"][7] + " at dawn")),
        edit(lambda d: sub0(d)["index"].reverse()),  # order defines subsets, so it is content
        edit(lambda d: sub0(d).__setitem__("name", "Renamed Headshots")),
    }
    assert len(hashes) == 5


# --- subsets and profiles ----------------------------------------------------------------------


def test_subsets_are_first_k_and_deterministic(pset: PromptSet) -> None:
    seen_hashes = set()
    for split in ("index", "query"):
        for k in range(1, 9):
            sub = pset.subset(split, per_subcategory=k)
            again = P.get_prompt_set(TEAM).subset(split=split, per_subcategory=k)
            assert sub == again
            assert sub.id == f"carlos-prompts-v1/{split}/k{k}"
            assert len(sub) == 35 * k
            assert [p.text for p in sub] == [p.text for p in pset.prompts(split) if p.sub_index < k]
            assert sub.parent_hash == pset.content_hash and sub.split == split
            seen_hashes.add(sub.content_hash)
    assert len(seen_hashes) == 16 and pset.content_hash not in seen_hashes
    assert pset.subset("index") == pset.subset("index", per_subcategory=8)


def test_subset_by_category(pset: PromptSet) -> None:
    a = pset.subset("query", per_subcategory=2, categories=["Logos", "Animals"])
    b = pset.subset("query", per_subcategory=2, categories=["Animals", "Logos"])
    assert a == b and a.id == "carlos-prompts-v1/query/k2/animals+logos"
    assert len(a) == (3 + 3) * 2 and {p.category for p in a} == {"Animals", "Logos"}
    assert [p.category for p in a][:6] == ["Animals"] * 6  # file order, not argument order
    full = pset.subset("query", per_subcategory=2, categories=list(pset.category_names))
    assert full == pset.subset("query", per_subcategory=2)
    assert a.content_hash != full.content_hash
    same_in_index = pset.subset("index", per_subcategory=2, categories=["Animals", "Logos"])
    assert a.content_hash != same_in_index.content_hash


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"per_subcategory": 0}, "per_subcategory must be an integer 1..8"),
        ({"per_subcategory": 9}, "per_subcategory must be an integer 1..8"),
        ({"per_subcategory": 2.0}, "per_subcategory must be an integer"),
        ({"per_subcategory": True}, "per_subcategory must be an integer"),
        ({"categories": ["Dogs"]}, r"unknown category \['Dogs'\].*valid categories: \['Portraits'"),
        ({"categories": []}, "at least one category"),
        ({"split": "both"}, "split must be one of"),
        ({"subcategories_per_category": 5}, "subcategories_per_category must be an integer 1..4"),
    ],
)
def test_subset_rejects_bad_arguments(pset: PromptSet, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        pset.subset(**kwargs)


def test_profiles(pset: PromptSet) -> None:
    assert P.list_profiles() == ["paper", "quick", "smoke"]
    paper, quick, smoke = (P.prompts_for_profile(n, TEAM) for n in ("paper", "quick", "smoke"))
    assert paper.prompts == pset.index_prompts
    assert len(quick) == 35 and all(p.sub_index == 0 for p in quick)
    assert len({(p.category, p.subcategory) for p in quick}) == 35
    assert [(p.category, p.subcategory, p.sub_index) for p in smoke] == [
        ("Portraits", pset.categories[0].subcategories[0], 0),
        ("Landscapes", pset.categories[1].subcategories[0], 0),
    ]
    assert smoke.id == "carlos-prompts-v1/index/k1/s1/portraits+landscapes"
    assert len({paper.content_hash, quick.content_hash, smoke.content_hash}) == 3
    for s in (paper, quick, smoke):
        assert s.split == "index" and s.parent_hash == pset.content_hash
    assert P.prompts_for_profile("quick", "carlos-prompts-v1") == quick
    assert P.prompts_for_profile("quick", pset) == quick
    assert P.prompts_for_profile("quick").parent_id == "carlos-authors"  # not the team's set unless named
    valid = r"unknown profile 'full'.*\['paper', 'quick', 'smoke'\]"
    with pytest.raises(InvalidInputError, match=valid):
        P.prompts_for_profile("full")


# --- CLIP token budget -------------------------------------------------------------------------


def test_clip_token_budget(pset: PromptSet) -> None:
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    query = "a watercolor style with soft pastel colors, loose brush strokes and visible paper texture everywhere"
    assert len(query.split()) >= 15
    q_ids = tok.encode(query)
    for p in pset.index_prompts + pset.query_prompts:
        ids = tok.encode(p.text)
        assert len(ids) + 2 <= 30, (p.text, len(ids) + 2)  # + start and end tokens
        joined = tok.encode(p.text + " " + query)
        assert len(joined) + 2 <= tok.context_length, p.text  # no silent truncation
        # Retrieval caches each prompt's prefix states: that needs the query to tokenize apart.
        assert joined == ids + q_ids, p.text
    n = (tok([p.text for p in pset.query_prompts]) != 0).sum(dim=1)
    assert int(n.max()) <= 30


# --- invalid files -----------------------------------------------------------------------------


def _sub(d: dict, c: int = 0, s: int = 0) -> dict:
    return d["categories"][c]["subcategories"][s]


BAD_EDITS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("drop category", lambda d: d["categories"].pop(), r"expected categories with subcategory"),
    ("drop subcategory", lambda d: d["categories"][4]["subcategories"].pop(), r"\('Animals', 2\)"),
    ("rename category", lambda d: d["categories"][0].__setitem__("name", "People"), r"\('People', 4\)"),
    ("seven prompts", lambda d: _sub(d)["index"].pop(), r"has 7 index and 8 query prompts; expected 8"),
    (
        "duplicate",
        lambda d: _sub(d, 1)["index"].__setitem__(3, _sub(d, 1)["index"][0].upper()),
        r"duplicate prompt: .*index\[3\].*repeats .*index\[0\]",
    ),
    (
        "overlap",
        lambda d: _sub(d, 2, 1)["query"].__setitem__(0, _sub(d)["index"][5]),
        r"index/query overlap: Artistic Styles / .* / query\[0\] .* repeats Portraits / .* / "
        r"index\[5\]",
    ),
    ("unknown key", lambda d: _sub(d).__setitem__("indx", []), r"unknown key\(s\) \['indx'\]"),
    ("missing key", lambda d: _sub(d).pop("query"), r"missing key\(s\) \['query'\]"),
    ("trailing period", lambda d: _sub(d)["index"].__setitem__(2, "a red barn in the snow."), r"ends with '\.'"),
    ("not a string", lambda d: _sub(d)["query"].__setitem__(2, 42), r"query\[2\] must be a string"),
    ("empty prompt", lambda d: _sub(d)["query"].__setitem__(2, "  "), r"query\[2\] is empty"),
    ("double space", lambda d: _sub(d)["query"].__setitem__(2, "a red  barn at dusk"), r"doubled"),
    ("bad id", lambda d: d.__setitem__("id", "Carlos Prompts"), r"id must be a lowercase slug"),
    (
        "same subcategory twice",
        lambda d: _sub(d, 0, 1).__setitem__("name", _sub(d)["name"]),
        r"subcategory .* is used in both Portraits and Portraits",
    ),
    ("same category twice", lambda d: d["categories"][1].__setitem__("name", "Portraits"), r"category name 'Portraits' appears twice"),
    ("categories not a list", lambda d: d.__setitem__("categories", {}), r"categories must be a non-empty list"),
]


@pytest.mark.parametrize("label, edit, message", BAD_EDITS, ids=[b[0] for b in BAD_EDITS])
def test_bad_files_rejected(tmp_path: Path, raw: dict[str, Any], label: str, edit: Callable, message: str) -> None:
    edit(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(InvalidInputError, match=message) as info:
        load_prompt_set(path)
    assert str(path) in str(info.value)


def test_unreadable_files_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_prompt_set(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "x",\n  "categories": [', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"not valid JSON \(line 2"):
        load_prompt_set(broken)
    with pytest.raises(InvalidInputError, match="top level must be a JSON object"):
        load_prompt_set(_write(tmp_path, ["a", "b"]))


def test_custom_shape_and_uneven_subset(tmp_path: Path) -> None:
    doc = {
        "id": "tiny",
        "categories": [
            {
                "name": "A",
                "subcategories": [
                    {"name": "a1", "index": ["one cat", "two cats", "three cats"], "query": ["x", "y", "z"]},
                    {"name": "a2", "index": ["a dog"], "query": ["w"]},
                ],
            },
            {"name": "B", "subcategories": [{"name": "b1", "index": ["a bird"], "query": ["v"]}]},
        ],
    }
    with pytest.raises(InvalidInputError, match="expected 8 of each"):
        load_prompt_set(_write(tmp_path, doc))
    tiny = load_prompt_set(_write(tmp_path, doc), shape=None, per_subcategory=None)
    assert tiny.description == "" and len(tiny.index_prompts) == 5
    assert tiny.subset("index").texts == ("one cat", "two cats", "three cats", "a dog", "a bird")
    two_each = tiny.subset("index", per_subcategory=2)
    assert two_each.texts == ("one cat", "two cats", "a dog", "a bird")
    assert P.prompts_for_profile("smoke", tiny).texts == ("one cat", "a bird")
    doc["categories"][1]["subcategories"][0]["query"].append("u")
    with pytest.raises(InvalidInputError, match="1 index and 2 query prompts; expected the same"):
        load_prompt_set(_write(tmp_path, doc), shape=None, per_subcategory=None)
