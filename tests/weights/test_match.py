"""carlos.weights.match: index search over fingerprints, exact re-ranking where files open, plain words."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from carlos.bench import weight_variants as wv
from carlos.errors import InvalidInputError
from carlos.models.sdxl_arch import TINY_SDXL
from carlos.weights.canonical import ArrayAdapter
from carlos.weights.match import FingerprintIndex, describe, find_matches
from carlos.weights.relate import DERIVED, IDENTICAL, MERGE, PARTIAL, RESCALED, SUBSET, UNRELATED
from carlos.weights.sketch import fingerprint

TARGETS = wv.sdxl_lora_targets(TINY_SDXL)


@pytest.fixture(scope="module")
def library() -> dict:
    loras = {f"lora:{i}": wv.synthetic_lora(TARGETS, rank=4, seed=i) for i in range(12)}
    fps = {k: fingerprint(ArrayAdapter(v)) for k, v in loras.items()}
    ids = list(fps)
    index = FingerprintIndex(ids, np.stack([fps[i].vector for i in ids]))
    return {"loras": loras, "fps": fps, "index": index}


def _known(library: dict):
    return lambda ids: {i: library["fps"][i] for i in ids if i in library["fps"]}


def test_a_rescaled_copy_is_found_first_and_reranked_exactly(library: dict) -> None:
    query = ArrayAdapter(wv.rescaled(library["loras"]["lora:5"], 0.5))
    fp = fingerprint(query)
    opened = []

    @contextlib.contextmanager
    def open_source(lora_id: str):
        opened.append(lora_id)
        yield ArrayAdapter(library["loras"][lora_id]) if lora_id != "lora:7" else None

    sketch_only = find_matches(fp, library["index"], _known(library), top_k=3)
    assert sketch_only[0].other_id == "lora:5" and sketch_only[0].relation.label == RESCALED and not sketch_only[0].relation.exact
    exact = find_matches(fp, library["index"], _known(library), query_source=query, open_source=open_source, top_k=3)
    assert exact[0].other_id == "lora:5" and exact[0].relation.exact and exact[0].relation.scale == pytest.approx(0.5, rel=1e-4)
    assert opened == ["lora:5"]  # unrelated candidates far below the floor are never opened
    assert all(m.relation.label == UNRELATED for m in exact[1:]) and len(exact) == 3
    rest = find_matches(fp, library["index"], _known(library), exclude=["lora:5"], top_k=20)
    assert "lora:5" not in {m.other_id for m in rest} and len(rest) == 11
    with pytest.raises(InvalidInputError):
        find_matches(fp, library["index"], _known(library), top_k=0)


def test_named_relationships_come_before_higher_unrelated_cosines(library: dict) -> None:
    merged = ArrayAdapter(wv.merged(library["loras"]["lora:1"], library["loras"]["lora:2"]))
    found = find_matches(fingerprint(merged), library["index"], _known(library), top_k=4)
    assert {m.other_id for m in found[:2]} == {"lora:1", "lora:2"} and {m.relation.kind for m in found[:2]} == {MERGE}
    assert found[2].relation.label == UNRELATED
    assert FingerprintIndex([], np.zeros((0, 256), np.float32)).search(np.ones(256, np.float32), 5) == []


def test_matches_in_plain_words() -> None:
    assert describe(IDENTICAL, None, "Orig", cosine=1.0, scale=1.0, status="flagged", by="bob", when="2026-12-01 10:00") == (
        "same weights as Orig, flagged by bob on 2026-12-01"
    )
    assert describe(RESCALED, None, "O", cosine=1.0, scale=0.5).startswith("same weights as O, scaled ×0.5")
    assert "rank-reduced" in describe(DERIVED, None, "O", cosine=0.97, scale=1.0, status="unreviewed").rstrip()
    assert describe(DERIVED, None, "O", cosine=0.97, scale=1.0, status="unreviewed").endswith("not reviewed yet")
    assert describe(PARTIAL, SUBSET, "O", cosine=0.8, scale=1.0) == "shares modules with O"
    assert "merge or blend" in describe(PARTIAL, MERGE, "O", cosine=0.7, scale=1.0)
    assert describe(UNRELATED, None, "O", cosine=0.01, scale=1.0).startswith("unrelated to O")
