"""The authors' release and the prompt sets: fetch, verify and import the corpus (``corpus``),
and the prompt sets P and P' by name (``prompts``, typed in ``prompt_set``, read from files
by ``prompt_file``; the authors' set read as data from their wheel by ``authors_prompts``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["ensure_corpus", "fetch_release", "get_prompt_set", "list_prompt_sets"]
__getattr__, __dir__ = exports(
    __name__, {"ensure_corpus": "corpus", "fetch_release": "corpus", "get_prompt_set": "prompts", "list_prompt_sets": "prompts"}
)
