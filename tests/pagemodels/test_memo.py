"""The per-version memo and cached reads: sessions asking at once read once, a failed read is
retried by the next caller, and a caller holding the store never waits on another thread's read."""

from __future__ import annotations

import threading
import time

import pytest

from carlos.pagemodels.common import Memo, cached_read
from carlos.store.store import Store


def test_single_flight_computes_once_for_callers_asking_at_once() -> None:
    memo, calls, release = Memo(4, single_flight=True), [], threading.Event()

    def compute() -> int:
        calls.append(1)
        release.wait(10)
        return 42

    out: list[int] = []
    threads = [threading.Thread(target=lambda: out.append(memo.get("k", compute))) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    release.set()
    for t in threads:
        t.join(10)
    assert out == [42] * 5 and len(calls) == 1


def test_a_failed_computation_is_retried_by_a_waiter() -> None:
    memo, started, release = Memo(4, single_flight=True), threading.Event(), threading.Event()

    def failing() -> int:
        started.set()
        release.wait(10)
        raise RuntimeError("store busy")

    errors: list[BaseException] = []

    def first() -> None:
        try:
            memo.get("k", failing)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(10)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(memo.get("k", lambda: 7)))
    waiter.start()
    time.sleep(0.2)
    release.set()
    t.join(10), waiter.join(10)
    assert len(errors) == 1 and got == [7] and memo.get("k", lambda: 0) == 7


def test_without_single_flight_nobody_waits() -> None:
    memo, release = Memo(4), threading.Event()
    t = threading.Thread(target=lambda: memo.get("k", lambda: release.wait(10) and 1))
    t.start()
    time.sleep(0.1)
    assert memo.get("k", lambda: 2) == 2  # computed here while the other thread still computes
    release.set()
    t.join(10)


def test_the_memo_keeps_the_newest_entries() -> None:
    memo = Memo(2)
    for k in "abc":
        memo.get(k, lambda k=k: k.upper())
    assert memo.get("a", lambda: "recomputed") == "recomputed" and memo.get("c", lambda: "x") == "C"


def test_a_caller_holding_the_store_reads_itself_instead_of_waiting(store_copy: Store) -> None:
    """Thread A's read waits (as if for the store); B, inside a session that holds the store, asks
    for the same read: waiting for A could deadlock, so B reads on its own session."""
    started, release = threading.Event(), threading.Event()

    def slow_read() -> str:
        started.set()
        release.wait(10)
        return "A"

    a = threading.Thread(target=lambda: cached_read(store_copy, "same", slow_read))
    a.start()
    assert started.wait(10)
    t0 = time.perf_counter()
    with store_copy.session():
        store_copy.loras.resolve("civitai:130580")  # B now holds the store
        got = cached_read(store_copy, "same", lambda: store_copy.review.status_of("civitai:130580") or "B")
    assert got == "B" and time.perf_counter() - t0 < 5
    release.set()
    a.join(10)


@pytest.mark.parametrize("areas", [("review",), ("data", "review")])
def test_a_cached_read_is_redone_after_a_write_to_its_areas_only(store_copy: Store, areas: tuple[str, ...]) -> None:
    reads: list[int] = []
    read = lambda: reads.append(1) or len(reads)  # noqa: E731
    assert cached_read(store_copy, "k", read, areas) == 1
    assert cached_read(store_copy, "k", read, areas) == 1
    job = store_copy.jobs.enqueue("civitai:130580", "/tmp/x.safetensors", "tiny", "smoke", 2, {}, "ada")
    store_copy.jobs.heartbeat(job, "w1")  # a worker's writes: another area
    assert cached_read(store_copy, "k", read, areas) == 1
    store_copy.review.claim("civitai:130580", "ada")
    assert cached_read(store_copy, "k", read, areas) == 2


def test_the_risk_model_and_figure_are_shared_per_read_and_thresholds(store_copy: Store) -> None:
    """Sessions showing the same thresholds share one model and one figure; other thresholds, or a
    read after a decision, get their own (and see the decision)."""
    from carlos.config import Thresholds
    from carlos.pagemodels.corpus_pages import build_risk, read_risk, risk_figure

    paper, strict = Thresholds(9.8, 0.041), Thresholds(5.0, 0.1)
    data = read_risk(store_copy)
    model = build_risk(data, paper)
    assert build_risk(data, paper) is model and build_risk(data, strict) is not model
    assert model.stats.retained > build_risk(data, strict).stats.retained
    fig = risk_figure(model, paper, "values", "risk class")
    assert risk_figure(model, paper, "values", "risk class") is fig and risk_figure(model, paper, "ranks", "risk class") is not fig

    lid = model.frame["lora_id"].iloc[0]
    store_copy.review.append_decision(lid, "bob", "flag", "unreviewed", "flagged", None)
    after = build_risk(read_risk(store_copy), paper)
    assert after is not model
    assert after.frame.set_index("lora_id").loc[lid, "status"] == "flagged" != model.frame.set_index("lora_id").loc[lid, "status"]
