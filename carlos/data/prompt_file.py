"""Reading a prompt-set JSON file and refusing any that is malformed, with the place to fix.

The file holds categories, their subcategories, and per subcategory equally many
``index`` and ``query`` prompts (:func:`build_prompt_set` takes the same structure from
another source). This module owns the checks (keys, names, whitespace,
trailing punctuation, duplicates, index/query overlap, the expected shape) and builds
the :class:`~carlos.data.prompt_set.PromptSet`, whose hash covers the categories only.

Pure Python on purpose: importing this module must stay cheap.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from carlos.data.prompt_set import SPLITS, Category, Prompt, PromptSet, sha256_json
from carlos.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: The paper's shape: category -> number of subcategories (35 in all) ...
PAPER_SHAPE: Mapping[str, int] = {
    "Portraits": 4,
    "Landscapes": 4,
    "Artistic Styles": 4,
    "Conceptual Arts": 4,
    "Animals": 3,
    "Fashion": 4,
    "Vehicles": 3,
    "Food": 3,
    "Cinematic": 3,
    "Logos": 3,
}
#: ... and prompts per subcategory in each split (8 x 35 = 280 index + 280 query).
PAPER_PER_SUBCATEGORY = 8

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TRAILING_PUNCT = ".,;:"  # a trigger word is appended as ", <trigger>": no dangling punctuation


def load_prompt_set(
    path: str | Path,
    *,
    shape: Mapping[str, int] | None = PAPER_SHAPE,
    per_subcategory: int | None = PAPER_PER_SUBCATEGORY,
) -> PromptSet:
    """Read and validate a prompt-set JSON file.

    ``shape`` (category -> subcategory count, in order) and ``per_subcategory``
    pin the expected structure; pass ``None`` to accept any non-empty structure
    with equally sized index and query lists.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"prompt set file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read prompt set file {path}: {exc}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return _build(doc, str(path), shape, per_subcategory)


def build_prompt_set(
    doc: Any,
    where: str,
    *,
    shape: Mapping[str, int] | None = PAPER_SHAPE,
    per_subcategory: int | None = PAPER_PER_SUBCATEGORY,
) -> PromptSet:
    """Validate a prompt-set document (the JSON file's structure, from any source) and build it.

    ``where`` names the source in messages; the checks and the hash are those of
    :func:`load_prompt_set` (the authors' set, :mod:`carlos.data.authors_prompts`, uses it).
    """
    return _build(doc, where, shape, per_subcategory)


def _build(doc: Any, where: str, shape: Mapping[str, int] | None, per_sub: int | None) -> PromptSet:
    def fail(msg: str) -> InvalidInputError:
        return InvalidInputError(f"invalid prompt set {where}: {msg}")

    _check_keys(doc, {"id", "categories"}, {"description"}, "top level", fail)
    set_id, description = doc["id"], doc.get("description", "")
    if not isinstance(set_id, str) or not _ID_RE.match(set_id):
        raise fail(f"id must be a lowercase slug like 'carlos-prompts-v1', got {set_id!r}")
    if not isinstance(description, str):
        raise fail("description must be a string")
    cats = doc["categories"]
    if not isinstance(cats, list) or not cats:
        raise fail("categories must be a non-empty list")

    categories: list[Category] = []
    flat: dict[str, list[Prompt]] = {s: [] for s in SPLITS}
    seen: dict[str, tuple[str, str]] = {}  # normalized text -> (location, split)
    sub_names: dict[str, str] = {}
    for ci, cat in enumerate(cats):
        loc_c = f"categories[{ci}]"
        _check_keys(cat, {"name", "subcategories"}, set(), loc_c, fail)
        cname = _check_name(cat["name"], f"{loc_c}.name", fail)
        if any(c.name == cname for c in categories):
            raise fail(f"category name {cname!r} appears twice")
        subs = cat["subcategories"]
        if not isinstance(subs, list) or not subs:
            raise fail(f"{loc_c} ({cname}): subcategories must be a non-empty list")
        names: list[str] = []
        for si, sub in enumerate(subs):
            loc_s = f"{loc_c}.subcategories[{si}]"
            _check_keys(sub, {"name", *SPLITS}, set(), loc_s, fail)
            sname = _check_name(sub["name"], f"{loc_s}.name", fail)
            if sname in sub_names:
                raise fail(f"subcategory {sname!r} is used in both {sub_names[sname]} and {cname}")
            sub_names[sname] = cname
            names.append(sname)
            sizes = {}
            for split in SPLITS:
                texts = sub[split]
                if not isinstance(texts, list) or not texts:
                    raise fail(f"{loc_s} ({cname} / {sname}): {split} must be a non-empty list")
                sizes[split] = len(texts)
                for pi, text in enumerate(texts):
                    loc_p = f"{cname} / {sname} / {split}[{pi}]"
                    _check_text(text, loc_p, fail)
                    key = " ".join(text.lower().split())
                    if key in seen:
                        other, other_split = seen[key]
                        kind = "duplicate prompt" if other_split == split else "index/query overlap"
                        raise fail(f"{kind}: {loc_p} {text!r} repeats {other}")
                    seen[key] = (loc_p, split)
                    flat[split].append(Prompt(text, cname, sname, split, len(flat[split]), pi))
            want = f"{per_sub} of each" if per_sub else "the same number in both splits"
            if sizes["index"] != sizes["query"] or per_sub not in (None, sizes["index"]):
                raise fail(f"{cname} / {sname} has {sizes['index']} index and {sizes['query']} query prompts; expected {want}")
        categories.append(Category(cname, tuple(names)))

    if shape is not None:
        got = [(c.name, len(c.subcategories)) for c in categories]
        want = list(shape.items())
        if got != want:
            raise fail(f"expected categories with subcategory counts {want} (in this order), got {got}")

    # Keys are validated above, so the parsed categories are the content; description and id
    # are left out so rewording the description does not invalidate stored representations.
    canonical = {"categories": cats}
    index_prompts, query_prompts = tuple(flat["index"]), tuple(flat["query"])
    pset = PromptSet(
        id=set_id,
        description=description,
        content_hash=sha256_json(canonical),
        categories=tuple(categories),
        index_prompts=index_prompts,
        query_prompts=query_prompts,
        _by_text=MappingProxyType({p.text: p for p in index_prompts + query_prompts}),
    )
    logger.debug(
        "loaded prompt set %s from %s: %d index / %d query prompts, hash %s",
        set_id,
        where,
        len(index_prompts),
        len(query_prompts),
        pset.content_hash[:12],
    )
    return pset


def _check_keys(obj: Any, required: set[str], optional: set[str], loc: str, fail) -> None:
    if not isinstance(obj, dict):
        raise fail(f"{loc} must be a JSON object, got {type(obj).__name__}")
    missing = sorted(required - obj.keys())
    if missing:
        raise fail(f"{loc} is missing key(s) {missing}")
    extra = sorted(obj.keys() - required - optional)
    if extra:
        raise fail(f"{loc} has unknown key(s) {extra}; allowed: {sorted(required | optional)}")


def _check_name(name: Any, loc: str, fail) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise fail(f"{loc} must be a non-empty string without surrounding spaces, got {name!r}")
    return name


def _check_text(text: Any, loc: str, fail) -> None:
    if not isinstance(text, str):
        raise fail(f"{loc} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise fail(f"{loc} is empty")
    if text != text.strip() or "  " in text or any(ord(ch) < 32 for ch in text):
        raise fail(f"{loc} {text!r} has surrounding, doubled or control whitespace")
    if text[-1] in _TRAILING_PUNCT:
        raise fail(f"{loc} {text!r} ends with {text[-1]!r}; prompts must not end in punctuation")
