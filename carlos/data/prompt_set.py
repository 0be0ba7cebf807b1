"""A prompt set as typed values: prompts, categories, and derived subsets with their own hashes.

A LoRA's representation is only comparable with another one when both were made
from the same prompts, so a :class:`PromptSet` carries a content hash that stored
representations record and check. Smaller protocols are *derived* subsets
(:meth:`PromptSet.subset`) that carry their own id and hash, so a cheap run is
never mistaken for a full one. Reading and validating a file is
:mod:`carlos.data.prompt_file`; the registry and profiles are :mod:`carlos.data.prompts`.

Pure Python on purpose: importing this module must stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from carlos.errors import InvalidInputError

SPLITS = ("index", "query")


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
    """A validated prompt set; build it with :func:`carlos.data.prompts.get_prompt_set` or
    :func:`carlos.data.prompt_file.load_prompt_set`."""

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
            content_hash=sha256_json(selection),
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


def sha256_json(obj: Any) -> str:
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
