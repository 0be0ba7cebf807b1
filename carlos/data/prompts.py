"""The prompt sets P (index) and P' (query) CARLoS characterizes with, by name, and the protocols.

Registered prompt sets live under ``data/`` and are loaded and validated once
(:func:`get_prompt_set`); a characterization profile (``paper``, ``quick``, ``smoke``)
names which index prompts it uses (:func:`prompts_for_profile`). The values are
:mod:`carlos.data.prompt_set`; reading a file is :mod:`carlos.data.prompt_file`.

Pure Python on purpose: importing this module must stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from carlos.config import DEFAULT_PROMPT_SET, REPO_ROOT
from carlos.data.prompt_file import load_prompt_set
from carlos.data.prompt_set import PromptSet, PromptSubset
from carlos.errors import InvalidInputError



#: Registered prompt sets: name -> file under ``data/``.
_REGISTRY: Mapping[str, str] = {DEFAULT_PROMPT_SET: "prompts.json"}


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
