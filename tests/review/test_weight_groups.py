"""carlos.review.weight_groups: weight-space copies grouped with their original, its decision suggested."""

from __future__ import annotations

import numpy as np

from carlos.core.access import CurrentUser
from carlos.review import workflow
from carlos.review.weight_groups import COLUMNS, weight_groups
from carlos.store.store import Store

BOB = CurrentUser.local("bob@example.org")


def _fingerprint(store: Store, lora_id: str) -> None:
    store.fingerprints.put(
        {
            "lora_id": lora_id,
            "spec": "test",
            "vector": np.ones(8, np.float32),
            "norm": 1.0,
            "module_names": ["unet:a"],
            "module_norms": np.ones(1, np.float32),
            "module_sketches": np.ones((1, 16), np.float32),
            "file_name": f"{lora_id}.safetensors",
        }
    )


def _link(store: Store, a: str, b: str, label: str, kind: str | None = None) -> None:
    row = {"label": label, "kind": kind, "cosine": 0.99, "scale": 1.0, "exact": True}
    store.fingerprints.put_matches([{"lora_id": a, "other_id": b, **row}, {"lora_id": b, "other_id": a, **row}])


def test_copies_are_grouped_with_the_original_and_get_its_decision(empty_store: Store) -> None:
    store = empty_store
    assert list(weight_groups(store).columns) == list(COLUMNS) and weight_groups(store).empty
    for lid in ("sha256:orig", "sha256:copy1", "sha256:copy2", "sha256:merge", "sha256:alone"):
        store.loras.upsert([{"lora_id": lid, "source": "upload", "name": lid.split(":")[1].upper()}])
        _fingerprint(store, lid)  # fingerprinted in this order: orig first
    _link(store, "sha256:copy1", "sha256:orig", "identical")
    _link(store, "sha256:copy2", "sha256:copy1", "rescaled copy")  # linked through copy1 only
    _link(store, "sha256:merge", "sha256:orig", "partial", "merge or blend")
    g = weight_groups(store).set_index("lora_id")
    assert "sha256:alone" not in g.index
    assert g.loc["sha256:orig", "role"] == "original" and g.loc["sha256:copy2", "role"] == "copy"
    assert g.loc["sha256:orig", "group"] == g.loc["sha256:copy1", "group"] == g.loc["sha256:copy2", "group"]
    assert g.loc["sha256:merge", "group"] != g.loc["sha256:orig", "group"] and g.loc["sha256:merge", "role"] == "shares weights"
    assert g.loc["sha256:merge", "shares_weights_with"] == ["sha256:orig"] and g.loc["sha256:orig", "shares_weights_with"] == [
        "sha256:merge"
    ]
    assert g["suggested_decision"].isna().all()  # nobody decided yet
    workflow.claim(store, "sha256:orig", BOB)
    workflow.decide(store, "sha256:orig", BOB, "flag")
    g = weight_groups(store).set_index("lora_id")
    assert g.loc["sha256:copy2", "suggested_decision"] == "flagged" and g.loc["sha256:copy1", "suggested_decision"] == "flagged"
    assert g.loc["sha256:copy2", "suggested_because"] == "its original ORIG was flagged by bob@example.org"
    assert g.loc["sha256:orig", "suggested_decision"] is None and g.loc["sha256:merge", "suggested_decision"] is None


def test_an_undecided_original_passes_on_a_copys_decision(empty_store: Store) -> None:
    store = empty_store
    for lid in ("sha256:a", "sha256:b", "sha256:c"):
        store.loras.upsert([{"lora_id": lid, "source": "upload", "name": lid}])
        _fingerprint(store, lid)
    _link(store, "sha256:a", "sha256:b", "identical")
    _link(store, "sha256:a", "sha256:c", "rank-reduced or re-quantized copy")
    workflow.claim(store, "sha256:c", BOB)
    workflow.decide(store, "sha256:c", BOB, "approve")
    g = weight_groups(store).set_index("lora_id")
    assert g.loc["sha256:a", "role"] == "original" and g.loc["sha256:a", "suggested_decision"] == "approved"
    assert g.loc["sha256:b", "suggested_because"].startswith("a copy in its group sha256:c was approved")
