"""Comparability with the corpus: what differs is named, the released rows are the reference."""

from __future__ import annotations

import pandas as pd

from carlos.config import CORPUS_EMBEDDER
from carlos.core.comparability import comparability, comparable_mask

AUTHORS = {"prompt_set": "carlos-authors", "settings": {"noise": "authors"}, "backend": "sdxl", "protocol": "paper"}


def test_the_released_corpus_is_the_reference() -> None:
    c = comparability(CORPUS_EMBEDDER, {"source": "pypi:carlos==0.0.3", "prompt_set": "carlos-authors-280"})
    assert c.comparable and c.message() == "measured like the corpus"


def test_measured_the_authors_way_is_comparable_and_a_smaller_protocol_is_a_note() -> None:
    assert comparability(CORPUS_EMBEDDER, AUTHORS).comparable
    quick = comparability(CORPUS_EMBEDDER, {**AUTHORS, "protocol": "quick"})
    assert quick.comparable and "quick protocol" in quick.message()


def test_another_prompt_set_noise_or_model_is_said_plainly() -> None:
    c = comparability(CORPUS_EMBEDDER, {**AUTHORS, "prompt_set": "carlos-prompts-v1"})
    assert not c.comparable
    assert c.message() == "measured with carlos-prompts-v1: not directly comparable with the corpus"
    c = comparability(CORPUS_EMBEDDER, {**AUTHORS, "settings": {"noise": "per-image-seed"}})
    assert not c.comparable and "per-image seeds" in c.message()
    c = comparability("tiny", {**AUTHORS, "backend": "tiny"})
    assert not c.comparable and "embedded with tiny" in c.message() and "random weights" in c.message()
    assert not comparability(CORPUS_EMBEDDER, {"backend": "sdxl"}).comparable  # nothing recorded: not assumed


def test_the_mask_agrees_with_the_rule() -> None:
    frame = pd.DataFrame(
        {
            "source": ["pypi:carlos==0.0.3", "upload", "upload", "upload"],
            "prompt_set": ["carlos-authors-280", "carlos-authors", "carlos-prompts-v1", None],
            "noise": [None, "authors", "authors", None],
            "backend": ["sdxl-base-1.0-fp16", "sdxl", "sdxl", "sdxl"],
        }
    )
    assert comparable_mask(frame, CORPUS_EMBEDDER).tolist() == [True, True, False, False]
    assert not comparable_mask(frame, "tiny").any()
