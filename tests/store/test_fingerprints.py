"""store.fingerprints: weight fingerprints and weight-space matches round-trip through DuckDB."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.errors import InvalidInputError
from carlos.store.store import Store


def _row(lora_id: str, seed: int, n: int = 3, dim: int = 8) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "lora_id": lora_id,
        "sha256": f"{seed:064x}",
        "file_name": f"file{seed}.safetensors",
        "file_path": f"/tmp/file{seed}.safetensors",
        "format": "kohya",
        "spec": "weights-v1/test",
        "vector": rng.standard_normal(dim).astype(np.float32),
        "norm": 1.5,
        "module_names": [f"unet:m{i}" for i in range(n)],
        "module_norms": rng.random(n).astype(np.float32),
        "module_sketches": rng.standard_normal((n, 16)).astype(np.float32),
        "stats": {"energy": 2.25, "blocks": [{"block": "unet:mid_block", "share": 1.0}]},
        "code_version": "test",
    }


def test_fingerprints_round_trip_and_replace(empty_store: Store) -> None:
    store = empty_store
    assert store.schema_version() >= 4 and store.fingerprints.count() == 0
    a = _row("sha256:a", 1)
    before = store.data_version()
    store.fingerprints.put(a)
    assert store.data_version() > before
    got = store.fingerprints.get("sha256:a")
    assert got is not None
    np.testing.assert_array_equal(got["vector"], a["vector"])
    np.testing.assert_array_equal(got["module_norms"], a["module_norms"])
    np.testing.assert_array_equal(got["module_sketches"], a["module_sketches"])
    assert got["module_names"] == a["module_names"] and got["stats"] == a["stats"] and got["dim"] == 8
    first_seen = got["created_at"]
    store.fingerprints.put({**a, "norm": 9.0})  # a second fingerprint of the same id replaces the first ...
    again = store.fingerprints.get("sha256:a")
    assert store.fingerprints.count() == 1 and again["norm"] == 9.0 and again["created_at"] == first_seen  # ... first seen kept
    store.fingerprints.put(_row("sha256:b", 2))
    store.fingerprints.put({**_row("sha256:c", 3), "spec": "other"})
    ids, m = store.fingerprints.vectors("weights-v1/test")
    assert ids == ["sha256:a", "sha256:b"] and m.dtype == np.float32 and m.shape == (2, 8) and m.flags.c_contiguous
    assert store.fingerprints.vectors("nothing")[0] == []
    assert store.fingerprints.find_by_sha256(f"{2:064x}") == "sha256:b" and store.fingerprints.find_by_sha256("0") is None
    assert store.fingerprints.files(["sha256:b"])["sha256:b"]["file_name"] == "file2.safetensors"
    assert store.fingerprints.get("sha256:none") is None


def test_bad_fingerprint_rows_are_refused(empty_store: Store) -> None:
    with pytest.raises(InvalidInputError):
        empty_store.fingerprints.put({**_row("sha256:a", 1), "colour": "red"})
    with pytest.raises(InvalidInputError):
        empty_store.fingerprints.put({**_row("sha256:a", 1), "module_norms": np.ones(2, np.float32)})
    assert empty_store.fingerprints.count() == 0


def test_matches_are_stored_from_both_sides_with_names(empty_store: Store) -> None:
    store = empty_store
    store.fingerprints.put(_row("sha256:a", 1))
    store.fingerprints.put(_row("sha256:b", 2))
    store.loras.upsert([{"lora_id": "sha256:a", "source": "upload", "name": "Original"}])
    rows = [
        {
            "lora_id": "sha256:b",
            "other_id": "sha256:a",
            "label": "identical",
            "cosine": 0.9999,
            "scale": 1.0,
            "exact": True,
            "detail": {"n": 3},
        },
        {
            "lora_id": "sha256:a",
            "other_id": "sha256:b",
            "label": "identical",
            "cosine": 0.9999,
            "scale": 1.0,
            "exact": True,
            "detail": {"n": 3},
        },
    ]
    assert store.fingerprints.put_matches(rows) == 2
    of_b = store.fingerprints.matches("sha256:b")
    assert len(of_b) == 1 and of_b[0]["other_id"] == "sha256:a" and of_b[0]["other_name"] == "Original"
    assert of_b[0]["detail"] == {"n": 3} and of_b[0]["other_file_name"] == "file1.safetensors"
    assert len(store.fingerprints.matches()) == 2 and store.fingerprints.matches(labels=["partial"]) == []
    store.fingerprints.put_matches([{**rows[0], "label": "partial", "cosine": 0.7}])  # re-matched: replaced
    assert [r["label"] for r in store.fingerprints.matches("sha256:b")] == ["partial"]
    with pytest.raises(InvalidInputError):
        store.fingerprints.put_matches([{**rows[0], "other_id": "sha256:b"}])
