"""Bounded caches: the vector and map caches evict the least recently used entries beyond
their entry and byte limits, a read refreshes the last-used time at most once per touch
interval, and the v3 migration gives entries cached before it a size and a last use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import carlos.store.store as store_module
from carlos.config import CacheLimits
from carlos.errors import InvalidInputError
from carlos.store.caches import map_entry_bytes, vector_entry_bytes
from carlos.store.schema import MIGRATIONS
from carlos.store.store import Store

KIND = "query-direction"


class Clock:
    """A settable clock (unix seconds), so uses are ordered without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def _store(backend: str, **limits: float) -> tuple[Store, Clock]:
    store = Store.open(backend)
    clock = Clock()
    store.caches.limits = CacheLimits(**limits)
    store.caches.clock = clock
    return store, clock


def _keys(store: Store) -> set[str]:
    """The cached keys, looked at without counting as a use."""
    with store.session():  # one connection for all the looks
        return {k for k in (f"q{i}" for i in range(10)) if store.caches.has_vector(KIND, k)}


def _put(store: Store, clock: Clock, key: str, dim: int = 8) -> bool:
    clock.tick()
    return store.caches.put_vector(KIND, key, np.ones(dim, np.float32), {"query": key})


def test_vector_cache_evicts_the_least_recently_used_beyond_the_entry_limit(backend: str) -> None:
    store, clock = _store(backend, vector_max_entries=3, touch_interval_s=0)
    for k in ("q0", "q1", "q2"):
        assert _put(store, clock, k)
    clock.tick()
    assert store.caches.get_vector(KIND, "q0") is not None  # q0 used again: q1 is now the oldest
    _put(store, clock, "q3")
    assert _keys(store) == {"q0", "q2", "q3"}
    usage = store.caches.vector_usage()
    assert (usage.entries, usage.max_entries) == (3, 3)
    # replacing an entry in place neither grows the cache nor evicts anything
    clock.tick(10)
    _put(store, clock, "q3")
    assert store.caches.vector_usage().entries == 3


def test_lru_order_follows_reads_not_insertion(backend: str) -> None:
    store, clock = _store(backend, vector_max_entries=4, touch_interval_s=0)
    for k in ("q0", "q1", "q2", "q3"):
        _put(store, clock, k)
    for k in ("q2", "q0", "q3", "q1"):  # read in this order: oldest use first
        clock.tick()
        store.caches.get_vector(KIND, k)
    evicted = []
    for k in ("q4", "q5", "q6"):
        before = _keys(store)
        _put(store, clock, k)
        (gone,) = before - _keys(store)
        evicted.append(gone)
    assert evicted == ["q2", "q0", "q3"]


def test_vector_cache_evicts_by_bytes_and_refuses_an_entry_larger_than_the_limit(backend: str) -> None:
    one = vector_entry_bytes(KIND, "q0", 64, '{"query": "q0"}')
    store, clock = _store(backend, vector_max_bytes=3 * one + one // 2, touch_interval_s=0)
    for k in ("q0", "q1", "q2", "q3", "q4"):
        assert _put(store, clock, k, dim=64)
    usage = store.caches.vector_usage()
    assert usage.entries == 3 and usage.bytes == 3 * one <= usage.max_bytes
    assert _keys(store) == {"q2", "q3", "q4"}  # the two oldest went
    # an entry that alone is over the byte limit is not cached and evicts nothing
    assert not store.caches.put_vector(KIND, "huge", np.ones(10_000, np.float32), {})
    assert store.caches.get_vector(KIND, "huge") is None and store.caches.vector_usage().entries == 3


def test_a_read_refreshes_last_use_only_after_the_touch_interval(backend: str) -> None:
    store, clock = _store(backend, vector_max_entries=2, touch_interval_s=60)
    _put(store, clock, "q0")
    _put(store, clock, "q1")
    clock.tick(30)
    store.caches.get_vector(KIND, "q0")  # 31 s after its put: not refreshed, still the oldest
    _put(store, clock, "q2")
    assert _keys(store) == {"q1", "q2"}
    clock.tick(61)
    store.caches.get_vector(KIND, "q1")  # stale: refreshed now, so q2 is the oldest
    _put(store, clock, "q3")
    assert _keys(store) == {"q1", "q3"}


def _map(store: Store, clock: Clock, key: str, n: int = 10) -> bool:
    clock.tick()
    return store.caches.put_map(key, [f"l:{i}" for i in range(n)], np.arange(2 * n, dtype=float).reshape(n, 2))


def test_map_cache_evicts_whole_maps_by_entries_and_bytes(backend: str) -> None:
    store, clock = _store(backend, map_max_entries=2, touch_interval_s=0)
    assert _map(store, clock, "m0") and _map(store, clock, "m1")
    clock.tick()
    assert len(store.caches.get_map("m0")) == 10  # a use: m1 is now the oldest
    _map(store, clock, "m2")
    assert [store.caches.has_map(k) for k in ("m0", "m1", "m2")] == [True, False, True]
    assert store.caches.get_map("m1").empty and store.table_counts()["map_cache"] == 20  # its points went too
    # by bytes: a limit of 1.5 maps keeps only the newest
    one = map_entry_bytes("m3", [f"l:{i}" for i in range(10)])
    store.caches.limits = CacheLimits(map_max_bytes=one + one // 2, touch_interval_s=0)
    _map(store, clock, "m3")
    assert [store.caches.has_map(k) for k in ("m0", "m2", "m3")] == [False, False, True]
    usage = store.caches.map_usage()
    assert (usage.entries, usage.bytes) == (1, one) and store.table_counts()["map_cache"] == 10
    assert not _map(store, clock, "big", n=100)  # larger than the whole limit: not cached, m3 kept
    assert not store.caches.has_map("big") and store.caches.has_map("m3")
    with pytest.raises(InvalidInputError):
        store.caches.put_map("bad", ["a", "b"], np.zeros((3, 2)))


def test_limits_are_checked_and_read_from_the_environment() -> None:
    env = {"CARLOS_CACHE_VECTORS_MAX_ENTRIES": "5", "CARLOS_CACHE_MAPS_MAX_BYTES": "1000", "CARLOS_CACHE_TOUCH_S": "0.5"}
    limits = CacheLimits.from_env(env)
    assert (limits.vector_max_entries, limits.map_max_bytes, limits.touch_interval_s) == (5, 1000, 0.5)
    assert limits.map_max_entries == CacheLimits().map_max_entries
    for bad in ({"CARLOS_CACHE_MAPS_MAX_ENTRIES": "many"}, {"CARLOS_CACHE_VECTORS_MAX_BYTES": "0"}):
        with pytest.raises(InvalidInputError, match="CARLOS_CACHE|must be"):
            CacheLimits.from_env(bad)
    with pytest.raises(InvalidInputError):
        CacheLimits(touch_interval_s=float("inf"))


def test_migration_3_sizes_and_dates_entries_cached_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 3])
    old = Store.open(path)
    with old.session() as con:  # what the code before the bounded caches wrote
        con.execute("INSERT INTO vector_cache (kind, cache_key, vector, info) VALUES ('query-direction', 'q0', [1, 2, 3], '{}')")
        con.execute("INSERT INTO map_cache VALUES ('m0', 'l:0', 0, 0), ('m0', 'l:1', 1, 1)")
    monkeypatch.undo()
    store = Store.open(path)
    assert store.schema_version() == MIGRATIONS[-1][0] >= 3
    assert store.caches.vector_usage().bytes == vector_entry_bytes(KIND, "q0", 3, "{}")
    assert store.caches.has_map("m0") and store.caches.map_usage().bytes == map_entry_bytes("m0", ["l:0", "l:1"])
    store.caches.limits = CacheLimits(vector_max_entries=1)
    store.caches.put_vector(KIND, "q1", np.ones(3), {})  # the migrated entry is older: it goes
    assert store.caches.get_vector(KIND, "q0") is None and store.caches.get_vector(KIND, "q1") is not None
