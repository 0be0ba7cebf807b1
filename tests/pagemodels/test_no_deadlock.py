"""No deadlock between a page's store session and what other sessions compute.

The interleaving that deadlocked an earlier attempt: session A holds the store while it waits on a
``st.cache_data`` entry that session B is computing, and B's computation waits for the store. Page
models read inside ``carlos`` (which never imports streamlit) and release the store before a page
touches a cache, so A finishes its read, B gets the store, and A then gets B's entry. The same
interleaving with the old order is run too, and shown to block (a store with a 1 s lock timeout
turns the deadlock into an error), so the first test exercises the real race.

A second interleaving of the same kind lived in the map code: a UMAP fit holds its map key's lock
while it waits for the store to save the coordinates, and a page reading inside its store session
asked for the cached map under that key's lock. Reading a cached map no longer takes the key lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import streamlit as st

from carlos.core.access import AccessPolicy, CurrentUser
from carlos.errors import StoreBusyError
from carlos.pagemodels.detail import read_detail
from carlos.store.store import Store
from carlos.viz import maps

PIXEL = "civitai:130580"
WAIT_S = 20.0


def run_threads(*targets: Callable[[], Any]) -> list[Any]:
    """Run each target in a thread; its result or its exception, in order (a hang fails the test)."""
    out: list[Any] = [None] * len(targets)

    def wrap(i: int, fn: Callable[[], Any]) -> None:
        try:
            out[i] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out[i] = e

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
        time.sleep(0.05)  # in order: the first one takes the store first
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive(), "deadlock: a thread is still waiting"
    return out


def cache_race(store: Store, monkeypatch: pytest.MonkeyPatch, *, page_holds_store_while_caching: bool) -> list[Any]:
    """Session A renders the detail page while session B computes a cache entry that reads the store."""
    a_has_store, b_in_cache = threading.Event(), threading.Event()

    @st.cache_data(show_spinner=False)
    def entry(key: str, salt: float) -> str:
        b_in_cache.set()
        return store.loras.resolve(key)  # waits for the store while A holds it

    salt = time.time()  # a fresh cache key per run
    original = store.review.claim_holder

    def claim_holder(lora_id: str) -> str | None:  # inside A's store session
        a_has_store.set()
        assert b_in_cache.wait(WAIT_S)
        time.sleep(0.3)  # B now waits for the store
        if page_holds_store_while_caching:
            entry(PIXEL, salt)  # the old order: waits on B's computation with the store held
        return original(lora_id)

    monkeypatch.setattr(store.review, "claim_holder", claim_holder)

    def session_a() -> str | None:
        data = read_detail(store, PIXEL)
        entry(PIXEL, salt)  # the page's cache use comes after its read
        return data.lora_id

    def session_b() -> str:
        assert a_has_store.wait(WAIT_S)
        return entry(PIXEL, salt)

    return run_threads(session_a, session_b)


def test_a_page_read_and_a_cache_entry_needing_the_store_both_finish(store_copy: Store, monkeypatch) -> None:
    store = Store.open(store_copy.path, lock_timeout=1.0)  # a deadlock would raise StoreBusyError after 1 s
    assert cache_race(store, monkeypatch, page_holds_store_while_caching=False) == [PIXEL, PIXEL]


def test_the_old_order_deadlocks(store_copy: Store, monkeypatch) -> None:
    store = Store.open(store_copy.path, lock_timeout=1.0)
    a, b = cache_race(store, monkeypatch, page_holds_store_while_caching=True)
    assert isinstance(b, StoreBusyError), (a, b)  # B gave up on the store A held while waiting for B


def test_a_page_read_does_not_wait_on_a_map_fit_that_waits_for_the_store(store_copy: Store, monkeypatch) -> None:
    store = Store.open(store_copy.path, lock_timeout=3.0)
    with store.session() as con:  # no cached map: a reviewer is fitting the default one now
        con.execute("DELETE FROM map_cache")
        con.execute("DELETE FROM map_cache_entries")
    maps.forget_models()
    fitting, page_has_store = threading.Event(), threading.Event()

    def slow_fit(matrix: np.ndarray, config: maps.MapConfig) -> tuple[Any, np.ndarray]:  # holds the map key's lock
        fitting.set()
        assert page_has_store.wait(WAIT_S)
        time.sleep(0.3)  # the page now asks for the cached map inside its session
        return None, np.zeros((len(matrix), 2))

    monkeypatch.setattr(maps, "fit_umap", slow_fit)
    original = store.jobs.pair_results_of

    def pair_results_of(lora_id: str) -> Any:  # inside the page's store session, before the map is read
        assert fitting.wait(WAIT_S)
        page_has_store.set()
        return original(lora_id)

    monkeypatch.setattr(store.jobs, "pair_results_of", pair_results_of)
    from carlos.search.views import corpus_view

    view = corpus_view(store)

    def reviewer_fits() -> str:
        return maps.fit_map(store, view, maps.MapConfig(), user=CurrentUser.local("ada"), policy=AccessPolicy(None)).key

    def page_reads() -> Any:
        return read_detail(store, PIXEL)

    fitted, data = run_threads(reviewer_fits, page_reads)
    assert isinstance(fitted, str), fitted  # the fit saved its map (it got the store after the page)
    assert data.lora_id == PIXEL and data.region is None  # the page did not wait: no map was cached yet
