"""The prompt set P (index) and P' (query) that every LoRA is characterized with.

A LoRA's representation is only comparable with another one when both were made
from the same prompts, so a prompt set carries a content hash that stored
representations can record and check. Smaller protocols (``quick``, ``smoke``)
are *derived* subsets of the one data file, never separate files, and carry their
own id and hash so a cheap run is never mistaken for a full (``paper``) one.

Pure Python on purpose: importing this module must stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from carlos.config import REPO_ROOT
from carlos.errors import InvalidInputError

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_SET = "carlos-prompts-v1"
SPLITS = ("index", "query")

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

#: Registered prompt sets: name -> file under ``data/``.
_REGISTRY: Mapping[str, str] = {DEFAULT_PROMPT_SET: "prompts.json"}

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TRAILING_PUNCT = ".,;:"  # a trigger word is appended as ", <trigger>": no dangling punctuation


@dataclass(frozen=True)
class Prompt:
    """One prompt with where it sits in its set."""

    text: str
    category: str
    subcategory: str
    split: str  # "index" or "query"
    split_index: int  # position in the flat list of its split (0..279 for the paper's set)
    sub_index: int  # position within its subcategory's list (0..7)


@dataclass(frozen=True)
class Category:
    """A category and the names of its subcategories, in file order."""

    name: str
    subcategories: tuple[str, ...]


@dataclass(frozen=True)
class PromptSubset:
    """A deterministic selection of one split of a :class:`PromptSet`.

    ``content_hash`` depends on the parent's hash and on exactly which prompts
    were selected, so two subsets with the same prompts have the same hash and
    any other selection has a different one.
    """

    id: str
    content_hash: str
    parent_id: str
    parent_hash: str
    split: str
    prompts: tuple[Prompt, ...]

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(p.text for p in self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)


@dataclass(frozen=True)
class PromptSet:
    """A validated prompt set; build it with :func:`get_prompt_set` or :func:`load_prompt_set`."""

    id: str
    description: str
    content_hash: str
    categories: tuple[Category, ...]
    index_prompts: tuple[Prompt, ...]
    query_prompts: tuple[Prompt, ...]
    # text -> Prompt, for category_of(); derived from the tuples above
    _by_text: Mapping[str, Prompt] = field(default_factory=dict, repr=False, compare=False)

    def prompts(self, split: str) -> tuple[Prompt, ...]:
        """The prompts of ``split`` ("index" or "query") in file order."""
        _check_split(split)
        return self.index_prompts if split == "index" else self.query_prompts

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def lookup(self, text: str) -> Prompt:
        """The :class:`Prompt` whose text is exactly ``text`` (either split)."""
        try:
            return self._by_text[text]
        except (KeyError, TypeError):
            raise InvalidInputError(
                f"{text!r} is not a prompt of {self.id}; pass the prompt text exactly as stored, without an appended trigger word or query"
            ) from None

    def category_of(self, text: str) -> str:
        """Category of a prompt of this set, for per-category statistics."""
        return self.lookup(text).category

    def subset(
        self,
        split: str = "index",
        per_subcategory: int | None = None,
        categories: Sequence[str] | None = None,
        subcategories_per_category: int | None = None,
    ) -> PromptSubset:
        """The first ``per_subcategory`` prompts of each selected subcategory.

        ``categories`` restricts to named categories (kept in file order);
        ``subcategories_per_category`` keeps only the first m subcategories of
        each. ``None`` means "all" for each of them.
        """
        _check_split(split)
        # None means "all"; the maxima (not minima) keep that true for uneven custom sets.
        max_k = max(p.sub_index + 1 for p in self.prompts(split))
        k = _check_count("per_subcategory", per_subcategory, max_k)
        max_m = max(len(c.subcategories) for c in self.categories)
        m = _check_count("subcategories_per_category", subcategories_per_category, max_m)
        chosen = self._check_categories(categories)

        keep_subs = {(c.name, s) for c in self.categories if c.name in chosen for s in c.subcategories[:m]}
        selected = tuple(p for p in self.prompts(split) if (p.category, p.subcategory) in keep_subs and p.sub_index < k)
        parts = [self.id, split, f"k{k}"]
        if m < max_m:
            parts.append(f"s{m}")
        if len(chosen) < len(self.categories):
            parts.append("+".join(_slug(c) for c in self.category_names if c in chosen))
        selection = {
            "parent": self.content_hash,
            "split": split,
            "selection": [p.split_index for p in selected],
        }
        return PromptSubset(
            id="/".join(parts),
            content_hash=_sha256_json(selection),
            parent_id=self.id,
            parent_hash=self.content_hash,
            split=split,
            prompts=selected,
        )

    def _check_categories(self, categories: Sequence[str] | None) -> set[str]:
        names = self.category_names
        if categories is None:
            return set(names)
        if isinstance(categories, str):
            categories = [categories]
        chosen = set(categories)
        unknown = sorted(chosen - set(names))
        if unknown:
            raise InvalidInputError(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown} in {self.id}; valid categories: {list(names)}"
            )
        if not chosen:
            raise InvalidInputError("categories must name at least one category, or be None")
        return chosen


# ---------------------------------------------------------------------------------------------
# Registry and profiles


def list_prompt_sets() -> list[str]:
    """Names accepted by :func:`get_prompt_set`."""
    return sorted(_REGISTRY)


def get_prompt_set(name: str = DEFAULT_PROMPT_SET) -> PromptSet:
    """A registered prompt set, loaded from ``data/`` and validated (cached)."""
    if name not in _REGISTRY:
        raise InvalidInputError(f"unknown prompt set {name!r}; valid prompt sets: {list_prompt_sets()}")
    return _load_registered(name)


@cache
def _load_registered(name: str) -> PromptSet:
    pset = load_prompt_set(REPO_ROOT / "data" / _REGISTRY[name])
    if pset.id != name:
        raise InvalidInputError(
            f'data/{_REGISTRY[name]} declares id {pset.id!r} but is registered as {name!r}; fix the file\'s "id" or the registry'
        )
    return pset


#: Characterization protocols: name -> what it selects (for help texts).
PROFILES: Mapping[str, str] = {
    "paper": "all index prompts (280 for the paper's set), as in the paper",
    "quick": "the first index prompt of every subcategory (35)",
    "smoke": "the first index prompt of the first subcategory of the first 2 categories (2)",
}


def list_profiles() -> list[str]:
    return list(PROFILES)


def prompts_for_profile(name: str, prompt_set: PromptSet | str | None = None) -> PromptSubset:
    """The index prompts a characterization profile uses."""
    if name not in PROFILES:
        raise InvalidInputError(f"unknown profile {name!r}; valid profiles: {list_profiles()}")
    pset = _resolve(prompt_set)
    if name == "paper":
        return pset.subset("index")
    if name == "quick":
        return pset.subset("index", per_subcategory=1)
    return pset.subset("index", per_subcategory=1, categories=pset.category_names[:2], subcategories_per_category=1)


def category_of(text: str, prompt_set: PromptSet | str | None = None) -> str:
    """Category of a prompt text in ``prompt_set`` (default: the team's set)."""
    return _resolve(prompt_set).category_of(text)


def _resolve(prompt_set: PromptSet | str | None) -> PromptSet:
    if prompt_set is None:
        return get_prompt_set()
    if isinstance(prompt_set, str):
        return get_prompt_set(prompt_set)
    return prompt_set


# ---------------------------------------------------------------------------------------------
# Loading and validation


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
        content_hash=_sha256_json(canonical),
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


# ---------------------------------------------------------------------------------------------
# Small helpers


def _sha256_json(obj: Any) -> str:
    """Hash of a canonical JSON form: sorted keys, no whitespace, UTF-8."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {list(SPLITS)}, got {split!r}")


def _check_count(name: str, value: int | None, maximum: int) -> int:
    if value is None:
        return maximum
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInputError(f"{name} must be an integer 1..{maximum} or None, got {value!r}")
    return value


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
