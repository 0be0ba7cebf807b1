"""The authors' prompt set (``carlos-authors``), read as data from their released file.

The ``carlos==0.0.3`` wheel that holds the corpus also holds ``carlos/generative_prompts.py``:
ten dict literals, one per category, each subcategory name -> 16 prompts. Set-up
(:func:`carlos.data.corpus.fetch_release`) extracts it next to the parquet and checks its
pinned sha256; it is never committed, imported or run. This module checks the hash again,
``ast.parse``-s the text and ``ast.literal_eval``-s only the values assigned to the ten
names below (any other statement is ignored), and builds the
:class:`~carlos.data.prompt_set.PromptSet`: of each subcategory's 16 prompts in file order
the first 8 are the index prompts P and the last 8 the query prompts P' (PAPER.md, "The
authors' procedure as released").

Pure Python on purpose: importing this module must stay cheap.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from pathlib import Path

from carlos.config import REPO_ROOT, default_paths
from carlos.data.corpus import AUTHORS_RELEASE, release_dir, sha256_of
from carlos.data.prompt_file import PAPER_PER_SUBCATEGORY, PAPER_SHAPE, build_prompt_set
from carlos.data.prompt_set import PromptSet
from carlos.errors import CorpusIntegrityError

AUTHORS_PROMPT_SET = "carlos-authors"
#: Set it to the path of a verified ``generative_prompts.py`` kept somewhere else.
PROMPTS_ENV = "CARLOS_AUTHORS_PROMPTS"
FETCH_COMMAND = "python -m carlos corpus import"

#: The ten dict names of the file, in file order -> the paper's category names.
CATEGORY_NAMES: Mapping[str, str] = {
    "prompts_dict_portraits": "Portraits",
    "prompts_dict_landscapes": "Landscapes",
    "prompts_dict_art_styles": "Artistic Styles",
    "prompts_dict_conceptual_arts": "Conceptual Arts",
    "prompts_dict_animals": "Animals",
    "prompts_dict_fashion": "Fashion",
    "prompts_dict_vehicles": "Vehicles",
    "prompts_dict_food": "Food",
    "prompts_dict_cinematic": "Cinematic",
    "prompts_dict_logos": "Logos",
}
#: Prompts per subcategory in the file: the first 8 index LoRAs, the last 8 form query directions.
PER_SUBCATEGORY_IN_FILE = 2 * PAPER_PER_SUBCATEGORY
DESCRIPTION = (
    "The CARLoS authors' prompt set, read from carlos/generative_prompts.py of the carlos==0.0.3 wheel "
    "(Apache-2.0): per subcategory the first 8 prompts index LoRAs (P), the last 8 form query directions (P')."
)


def default_path(cache_dir: Path) -> Path:
    """Where set-up puts the verified file under ``cache_dir`` (next to the corpus parquet)."""
    return release_dir(cache_dir, AUTHORS_RELEASE) / Path(AUTHORS_RELEASE.prompts_member).name


def candidate_paths() -> list[Path]:
    """Where :func:`find_prompts_file` looks, in order: ``$CARLOS_AUTHORS_PROMPTS``, the cache of
    the default store (``$CARLOS_DB`` / ``$CARLOS_HOME``), the repository's ``data/cache``."""
    found = [Path(os.environ[PROMPTS_ENV]).expanduser()] if os.environ.get(PROMPTS_ENV) else []
    for cache in (default_paths().cache_dir, REPO_ROOT / "data" / "cache"):
        path = default_path(cache)
        if path not in found:
            found.append(path)
    return found


def find_prompts_file() -> Path:
    """The first candidate that exists; raises :class:`CorpusIntegrityError` naming the fix if none does."""
    candidates = candidate_paths()
    for path in candidates:
        if path.is_file():
            return path
    raise missing_file_error(candidates)


def load_authors_prompts(path: str | Path | None = None, *, expected_sha256: str = AUTHORS_RELEASE.prompts_sha256) -> PromptSet:
    """The ``carlos-authors`` prompt set from the verified file at ``path`` (default: :func:`find_prompts_file`)."""
    path = find_prompts_file() if path is None else Path(path)
    if not path.is_file():
        raise missing_file_error([path])
    got = sha256_of(path)
    if got != expected_sha256:
        raise CorpusIntegrityError(
            f"the authors' prompt file {path} has sha256 {got}, expected {expected_sha256}: it is not the file "
            f"released in {AUTHORS_RELEASE.package}=={AUTHORS_RELEASE.version}. Delete it and run `{FETCH_COMMAND}` again."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusIntegrityError(f"cannot read the authors' prompt file {path}: {exc}") from None
    return prompt_set_from_source(text, str(path))


def parse_prompt_source(text: str, where: str = "<authors' prompt file>") -> dict[str, dict[str, list[str]]]:
    """Category name -> subcategory -> its 16 prompts, from the file's text, as data only.

    The text is parsed, never run: only the values assigned at the top level to the ten
    names of :data:`CATEGORY_NAMES` are evaluated, with :func:`ast.literal_eval` (literals
    only, no names or calls). Anything else in the file is ignored.
    """
    try:
        tree = ast.parse(text, filename=where)
    except SyntaxError as exc:
        raise CorpusIntegrityError(f"{where} is not valid Python source (line {exc.lineno}): {exc.msg}") from None
    values: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in CATEGORY_NAMES:
                if name in values:
                    raise CorpusIntegrityError(f"{where}: {name} is assigned twice (line {node.lineno})")
                values[name] = node.value
    missing = [n for n in CATEGORY_NAMES if n not in values]
    if missing:
        raise CorpusIntegrityError(f"{where} assigns no dict literal to {missing}")
    out: dict[str, dict[str, list[str]]] = {}
    for name, category in CATEGORY_NAMES.items():
        try:
            value = ast.literal_eval(values[name])
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise CorpusIntegrityError(f"{where}: {name} is not a plain literal (line {values[name].lineno})") from None
        if not isinstance(value, dict) or not value:
            raise CorpusIntegrityError(f"{where}: {name} must be a non-empty dict of subcategory -> prompts")
        for sub, prompts in value.items():
            if not isinstance(sub, str) or not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                raise CorpusIntegrityError(f"{where}: {name}[{sub!r}] must map a name to a list of prompt strings")
            if len(prompts) != PER_SUBCATEGORY_IN_FILE:
                raise CorpusIntegrityError(
                    f"{where}: {name}[{sub!r}] has {len(prompts)} prompts; expected {PER_SUBCATEGORY_IN_FILE} "
                    f"({PAPER_PER_SUBCATEGORY} index + {PAPER_PER_SUBCATEGORY} query)"
                )
        out[category] = value
    return out


def prompt_set_from_source(text: str, where: str = "<authors' prompt file>") -> PromptSet:
    """The validated ``carlos-authors`` :class:`PromptSet` of the file's text (first 8: index, last 8: query)."""
    parsed = parse_prompt_source(text, where)
    k = PAPER_PER_SUBCATEGORY
    doc = {
        "id": AUTHORS_PROMPT_SET,
        "description": DESCRIPTION,
        "categories": [
            {"name": cat, "subcategories": [{"name": sub, "index": p[:k], "query": p[k:]} for sub, p in subs.items()]}
            for cat, subs in parsed.items()
        ],
    }
    return build_prompt_set(doc, where, shape=PAPER_SHAPE, per_subcategory=k)


def missing_file_error(looked: list[Path]) -> CorpusIntegrityError:
    """The error for an absent file: its member and sha256, where it was looked for, the command that fetches it."""
    where = ", ".join(str(p) for p in looked)
    return CorpusIntegrityError(
        f"the authors' prompt set ({AUTHORS_PROMPT_SET}) needs {AUTHORS_RELEASE.prompts_member} from the "
        f"{AUTHORS_RELEASE.package}=={AUTHORS_RELEASE.version} wheel (sha256 {AUTHORS_RELEASE.prompts_sha256}), "
        f"which is not on this machine (looked in: {where}). Run `{FETCH_COMMAND}` (or `make store`) to fetch "
        f"and verify it, or set {PROMPTS_ENV} to a verified copy."
    )
