"""Long-lived objects out of the cyclic collector's way, so Streamlit's post-run collection stays cheap.

Streamlit runs ``gc.collect(2)`` after every script run (``runner.postScriptGC``). Once the text
model, the BM25 index, the corpus view and the map are loaded, that walks ~650-690k tracked objects
with the GIL held: 325-375 ms per render on a 2-core VM, most of a search page's time. None of them
is garbage; they live as long as the process or the data version.

So: a collector callback times every full collection; one that took longer than
:data:`SLOW_FULL_COLLECTION_S` means objects have piled up since the last freeze (models loaded, a
view reloaded after a write, the caches of a busy minute). The next page run freezes what is there
(``gc.freeze``: a list splice, no walk), so later collections skip it. At most every
:data:`COMPACT_EVERY_S` it first unfreezes and collects everything once: frozen objects that became
cyclic garbage since (an old data version's caches) are freed there, so memory stays bounded. Under
load (20 sessions on 2 cores) the first version of this, which compacted on every trigger, spent 17 %
of a server's CPU in it (py-spy ``--gil``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: A full collection slower than this (seconds) asks the next page run to freeze the survivors. At 50 ms,
#: collections just under it still took 30 % of a risk render's GIL time (py-spy ``--gil``, 4 sessions);
#: at 10 ms, 8.5 %, and the load benchmark went from ~23 to ~33 page views per second.
SLOW_FULL_COLLECTION_S = 0.01
#: At most this often (seconds) a freeze is preceded by a full collection of everything, frozen included.
COMPACT_EVERY_S = 60.0


class _Settler:
    def __init__(self) -> None:
        self.pending = False
        self.started: float | None = None
        self.freezes = 0
        self.compacted_at = -float("inf")
        self.lock = threading.Lock()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self.started = time.perf_counter()
        elif self.started is not None:
            if time.perf_counter() - self.started > SLOW_FULL_COLLECTION_S:
                self.pending = True
            self.started = None


_SETTLER = _Settler()


def install() -> None:
    """Watch full collections (idempotent: one callback per process)."""
    if _SETTLER.on_gc not in gc.callbacks:
        gc.callbacks.append(_SETTLER.on_gc)


def settle() -> bool:
    """Freeze the long-lived objects when a slow full collection asked for it; True when it did.
    Call at the start of a page run (``page_setup``), never while holding the store."""
    install()
    if not _SETTLER.pending:
        return False
    with _SETTLER.lock:
        if not _SETTLER.pending:
            return False
        t0 = time.perf_counter()
        compact = t0 - _SETTLER.compacted_at >= COMPACT_EVERY_S
        if compact:
            gc.unfreeze()  # what was frozen before is walked once more: garbage among it is freed
            gc.collect()
            _SETTLER.compacted_at = t0
        gc.freeze()
        _SETTLER.pending = False  # after the collection above (it would set it again)
        _SETTLER.freezes += 1
        log.info(
            "froze %d objects (%s, %.0f ms)",
            gc.get_freeze_count(),
            "after a full collection" if compact else "",
            (time.perf_counter() - t0) * 1e3,
        )
    return True


def freezes() -> int:
    """How many times this process froze its long-lived objects (the load benchmark reports it)."""
    return _SETTLER.freezes
