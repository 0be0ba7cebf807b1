"""What every page reads first (the corpus view and the saved thresholds), and the per-version memo.

:class:`Memo` is the one place derived page data is remembered across sessions: keyed on plain
values that include the view's data version, computed outside its lock (a slow computation never
blocks other keys, and never runs while the store is held), least recently used evicted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd

from carlos.config import CORPUS_EMBEDDER, Thresholds
from carlos.core.risk import RiskPolicy, annotate, nsfw_label
from carlos.core.view import CorpusView
from carlos.errors import CarlosError
from carlos.review import workflow as review
from carlos.search.views import corpus_view
from carlos.store.changes import AREAS
from carlos.store.store import Store

T = TypeVar("T")


class Memo:
    """A small thread-safe LRU of derived values, computed outside the lock.

    By default two threads asking for one missing key may both compute it (the second result is
    kept): that costs time once per data version and can never deadlock. ``single_flight``: the
    later callers wait for the first one's result instead (a page read after a write, asked by
    every session at once, reads once); only for computations whose callers hold nothing the
    computation could need (:func:`cached_read` checks that the caller does not hold the store).
    """

    def __init__(self, size: int, *, single_flight: bool = False) -> None:
        self.size = size
        self.single_flight = single_flight
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T], *, wait: bool = True) -> T:
        """The value of ``key``, computed by ``compute()`` when missing; ``wait=False``: never wait
        on another thread's computation of it."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]  # type: ignore[no-any-return]
            flight = self._flights.get(key) if self.single_flight else None
            owner = self.single_flight and flight is None
            if owner:
                flight = self._flights[key] = _Flight()
        if flight is not None and not owner and wait:
            flight.done.wait()
            if flight.ok:
                return flight.value  # type: ignore[no-any-return]
            # the first caller failed: try once more here (its error was raised to it)
        try:
            value = compute()
        except BaseException:
            if owner:
                assert flight is not None
                with self._lock:
                    self._flights.pop(key, None)
                flight.done.set()  # its waiters compute for themselves
            raise
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            if owner:
                self._flights.pop(key, None)  # after the value is in: a newcomer finds it, not a new flight
        if owner:
            assert flight is not None
            flight.value, flight.ok = value, True
            flight.done.set()
        return value


class _Flight:
    """One computation in progress (:class:`Memo` with ``single_flight``)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


_READS = Memo(256, single_flight=True)


def cached_read(store: Store, key: Hashable, read: Callable[[], T], areas: Iterable[str] = AREAS) -> T:
    """``read()`` once per state of the ``areas`` it reads, shared by every session of this process.

    Keyed on the store's change tokens of ``areas`` (:meth:`Store.change_token`: new ones on every
    write to them, by any process), read before ``read()`` runs, so a write in between only costs
    one more read. Between writes a page render opens no connection at all; after one, the sessions
    asking at once wait for one read. A caller that holds the store never waits on another thread's
    read (that thread may be waiting for the store). The result is shared: callers never modify it
    (pages copy a frame before changing it)."""
    token = store.change_token(areas)
    if token is None:  # a store nobody has opened since change tokens exist: nothing vouches for a copy
        return read()
    return _READS.get((str(store.path.resolve()), token, key), read, wait=not store.holds_lock())


def view_key(view: CorpusView) -> tuple[Any, ...]:
    """A view's identity for memo keys: its space, data version and object (a reloaded view of
    the same version is another object with other arrays)."""
    return (view.embedder, view.data_version, id(view))


@dataclass(frozen=True)
class Basics:
    """The corpus view of the page (None when the store has none) and the team's saved thresholds."""

    view: CorpusView | None
    missing: str | None  # why there is no view to show, in words; None when there is one
    saved: Thresholds


def read_basics(store: Store, embedder: str = CORPUS_EMBEDDER) -> Basics:
    """The view and the saved thresholds; call inside the page's store session (the view is
    reloaded on that session's connection when the store changed)."""
    saved = review.current_thresholds(store)
    try:
        view = corpus_view(store, embedder)
    except CarlosError as e:
        return Basics(None, f"the store has no corpus yet: {e}", saved)
    if len(view) == 0:
        return Basics(None, "the store is empty", saved)
    return Basics(view, None, saved)


_ANNOTATED = Memo(8)
_NAMES = Memo(4)


def annotated(view: CorpusView, thresholds: Thresholds) -> pd.DataFrame:
    """The view annotated under ``thresholds`` (risk class, percentiles, flags, NSFW label),
    once per view and thresholds (~2 s per 100k LoRAs). Shared: callers never modify it."""

    def compute() -> pd.DataFrame:
        df = annotate(view.frame, RiskPolicy(thresholds=thresholds))
        df["nsfw"] = df["nsfw_level"].map(lambda v: nsfw_label(None if pd.isna(v) else v))
        return df

    return _ANNOTATED.get((*view_key(view), thresholds), compute)


def names(view: CorpusView) -> dict[str, str]:
    """lora_id -> name of every LoRA of the view, once per view. Shared: callers never modify it."""
    return _NAMES.get(view_key(view), lambda: dict(zip(view.frame["lora_id"], view.frame["name"])))


REVIEW_COLUMNS = ["lora_id", "status", "reviewer", "decided_at", "claimed_by"]


def with_review(frame: pd.DataFrame, statuses: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (an annotated view) with each LoRA's review status, last reviewer and claim
    holder from ``statuses`` (``store.review.current_statuses()``), unreviewed where none; a new
    frame, the remembered one is never modified."""
    out = frame.merge(statuses[[c for c in REVIEW_COLUMNS if c in statuses]], on="lora_id", how="left")
    out["status"] = out["status"].fillna("unreviewed")
    out.attrs.update(frame.attrs)  # the review-region cuts
    return out
