"""Long-lived objects out of the post-run collection: a slow full collection asks for a freeze,
the next page run freezes once (collecting what became garbage first), and a fast one does not."""

from __future__ import annotations

import gc

import pytest

from app import memory


@pytest.fixture
def settler(monkeypatch: pytest.MonkeyPatch):
    memory.install()
    monkeypatch.setattr(memory._SETTLER, "pending", False)
    monkeypatch.setattr(memory._SETTLER, "compacted_at", -float("inf"))
    yield memory
    gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_slow_full_collection_freezes_the_survivors_once(settler, monkeypatch) -> None:
    monkeypatch.setattr(memory, "SLOW_FULL_COLLECTION_S", 0.0)  # every full collection counts as slow
    keep = [Cycle() for _ in range(1000)]  # long-lived state
    gc.collect()
    before = memory.freezes()
    assert memory.settle() and memory.freezes() == before + 1
    assert gc.get_freeze_count() >= len(keep)
    assert not memory.settle()  # nothing grew since: no second freeze


def test_frozen_garbage_is_freed_at_the_next_freeze(settler, monkeypatch) -> None:
    import weakref

    monkeypatch.setattr(memory, "SLOW_FULL_COLLECTION_S", 0.0)
    old = Cycle()
    ref = weakref.ref(old)
    gc.collect()
    assert memory.settle()
    del old  # a previous data version's state: unreachable, but frozen and cyclic
    gc.collect()
    assert ref() is not None  # a frozen cycle survives ordinary collections
    assert memory.settle() and ref() is not None  # within COMPACT_EVERY_S of the last compaction: a freeze only
    monkeypatch.setattr(memory._SETTLER, "compacted_at", -float("inf"))  # a minute later
    gc.collect()
    assert memory.settle()  # this growth event unfreezes and collects first
    assert ref() is None


def test_fast_collections_ask_for_nothing(settler, monkeypatch) -> None:
    monkeypatch.setattr(memory, "SLOW_FULL_COLLECTION_S", 60.0)
    gc.collect()
    assert not memory.settle()
