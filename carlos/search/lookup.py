"""One LoRA by any of its names (lora_id, Civitai version id, sha256) and what is known of it.

The reads that the detail page, ``show`` and the review tools share; every answer comes
from the store through its repositories.
"""

from __future__ import annotations

from typing import Any

from carlos.store.representations import StoredRepresentation
from carlos.store.store import Store


def resolve(store: Store, key: str | int) -> str:
    """The lora_id of ``key``; raises NotFoundError naming what was looked for."""
    return store.loras.resolve(key)


def lora(store: Store, key: str | int) -> dict[str, Any]:
    """The LoRA's row (metadata, file report) by any of its names; raises NotFoundError."""
    return store.loras.get(key)


def representations(store: Store, lora_id: str) -> list[StoredRepresentation]:
    """Every representation of one LoRA, newest first, with provenance."""
    return store.reps.of(lora_id)


def by_sha256(store: Store, sha256: str) -> str | None:
    """The lora_id whose file has this sha256, or None (an upload seen before)."""
    return store.loras.find_by_sha256(sha256)
