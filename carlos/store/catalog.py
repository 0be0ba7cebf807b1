"""The catalog read model: the store's LoRAs of one embedding space as a :class:`CorpusView`.

Built once per ``(store, embedder, data_version)`` and kept in a small
in-process cache, so pages and repeated searches do not re-read vectors.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from carlos.config import CORPUS_EMBEDDER
from carlos.core.index import Int8Kernel
from carlos.core.view import CorpusView
from carlos.errors import InvalidInputError
from carlos.store.store import Store

_cache: dict[tuple[str, str, str | None], CorpusView] = {}
_lock = threading.Lock()


def _return_freed_memory() -> None:
    """Hand memory that a large read freed back to the OS.

    DuckDB's results, Arrow's pool and glibc keep freed blocks for reuse, but what comes
    next (the matrix, then the index's int8 codes) is fresh large mappings that reuse none
    of them. With the two connections and the lazy id lookup, this took the 1M view from 1.53x to 1.47x
    the raw vectors at peak (bench/README.md). Best effort (glibc only).
    """
    try:
        import ctypes

        import pyarrow as pa

        pa.default_memory_pool().release_unused()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (ImportError, OSError, AttributeError):  # another libc or no pyarrow: keep them
        pass


def load_view(store: Store, embedder: str = CORPUS_EMBEDDER, *, int8: Int8Kernel | None = None) -> CorpusView:
    """The current view of ``embedder`` space, rebuilt only when the store changed
    (checking costs one small file read, see :meth:`Store.data_version`).

    ``int8`` is the stage-1 backend of the view's index (the search layer passes
    :class:`carlos.models.int8.FbgemmInt8`); views of one state under different backends
    share their frame and matrix.
    """
    version = store.data_version()
    path = str(store.path.resolve())
    key = (path, embedder, int8.name if int8 is not None else None)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.data_version == version:
            return cached
        for (p, e, _), other in _cache.items():
            if (p, e) == (path, embedder) and other.data_version == version:
                view = replace(other, int8=int8)  # same arrays, an index of its own
                _cache[key] = view
                return view
    with store.locked():  # one state, two connections: the frame's read memory is freed first
        frame = store.reps.corpus_frame(embedder)
        _return_freed_memory()  # before the largest allocation of all
        # streamed into one preallocated float32 array: peak memory ~ the matrix itself
        ids, matrix, _, _ = store.reps.load_directions(embedder)
    _return_freed_memory()  # and what streaming the matrix freed: the index is built next
    if list(frame["lora_id"]) != ids:  # align the frame with the matrix rows
        frame = frame.set_index("lora_id").loc[ids].reset_index()
    if frame.empty and embedder not in store.reps.embedders():
        known = ", ".join(store.reps.embedders()) or "none (run `python -m carlos corpus import`)"
        raise InvalidInputError(f"no LoRA is represented in {embedder!r}; spaces in the store: {known}")
    view = CorpusView(embedder=embedder, frame=frame, matrix=matrix, data_version=version, int8=int8)
    with _lock:
        for k in [k for k in _cache if k[:2] == (path, embedder)]:
            del _cache[k]  # an older state of this space: its arrays are freed
        _cache[key] = view
    return view
