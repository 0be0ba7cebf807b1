"""A read model of the store for one embedding space: frame + direction matrix + index.

Built once per ``(store, embedder, data_version)`` and kept in a small
in-process cache, so pages and repeated searches do not re-read vectors.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carlos.config import CORPUS_EMBEDDER
from carlos.errors import InvalidInputError, NotFoundError
from carlos.index import DirectionIndex
from carlos.risk import QUALITY_FLAGS, RiskPolicy, annotate, quality_masks
from carlos.store import Store


@dataclass(frozen=True)
class CorpusView:
    """LoRAs represented in one embedding space, rows aligned with ``matrix``."""

    embedder: str
    frame: pd.DataFrame  # one row per LoRA (see Store.corpus_frame)
    matrix: np.ndarray  # (n, dim) float32 directions, same order as frame
    data_version: int

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def ids(self) -> list[str]:
        return list(self.frame["lora_id"])

    @functools.cached_property
    def _rows(self) -> dict[str, int]:
        # built on the first lookup: searches by direction never need it, and at a million
        # LoRAs it is ~100 MB of Python strings
        return {lid: i for i, lid in enumerate(self.frame["lora_id"])}

    def find(self, lora_id: str) -> int | None:
        """Row of ``lora_id``, or None when it has no representation in this space."""
        return self._rows.get(lora_id)

    def row_of(self, lora_id: str) -> int:
        try:
            return self._rows[lora_id]
        except KeyError:
            raise NotFoundError(f"{lora_id} has no representation in the {self.embedder} space") from None

    @functools.cached_property
    def _quality(self) -> dict[str, np.ndarray]:
        return quality_masks(self.frame)

    def quality_flags_of(self, row: int) -> tuple[str, ...]:
        """Data-quality flags of one row (threshold-independent); built per hit, not per LoRA."""
        return tuple(label for key, label in QUALITY_FLAGS.items() if self._quality[key][row])

    @functools.cached_property
    def percentiles(self) -> tuple[np.ndarray, np.ndarray]:
        """(Strength, Consistency) percentile of every row within this space."""
        from carlos.risk import percentile_rank

        return (percentile_rank(self.frame["strength"]).to_numpy(), percentile_rank(self.frame["consistency"]).to_numpy())

    @functools.cached_property
    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """(Strength, Consistency) as float64 arrays, rows aligned with ``matrix``."""
        return (self.frame["strength"].to_numpy(dtype=np.float64), self.frame["consistency"].to_numpy(dtype=np.float64))

    @functools.cached_property
    def index(self) -> DirectionIndex:
        """Exact filtered top-k over ``matrix`` (int8 first pass from 20k LoRAs on); built once per view."""
        strength, consistency = self.values
        return DirectionIndex(np.ascontiguousarray(self.matrix, dtype=np.float32), strength, consistency)

    def annotated(self, policy: RiskPolicy | None = None) -> pd.DataFrame:
        """Frame with flags, percentiles and risk classes under ``policy``."""
        return annotate(self.frame, policy)


_cache: dict[tuple[str, str], CorpusView] = {}
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


def load_view(store: Store, embedder: str = CORPUS_EMBEDDER) -> CorpusView:
    """The current view of ``embedder`` space, rebuilt only when the store changed
    (checking costs one small file read, see :meth:`Store.data_version`)."""
    version = store.data_version()
    key = (str(store.path.resolve()), embedder)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.data_version == version:
            return cached
    with store.locked():  # one state, two connections: the frame's read memory is freed first
        frame = store.corpus_frame(embedder)
        _return_freed_memory()  # before the largest allocation of all
        # streamed into one preallocated float32 array: peak memory ~ the matrix itself
        ids, matrix, _, _ = store.load_directions(embedder)
    _return_freed_memory()  # and what streaming the matrix freed: the index is built next
    if list(frame["lora_id"]) != ids:  # align the frame with the matrix rows
        frame = frame.set_index("lora_id").loc[ids].reset_index()
    if frame.empty and embedder not in store.embedders():
        known = ", ".join(store.embedders()) or "none (run `python -m carlos corpus import`)"
        raise InvalidInputError(f"no LoRA is represented in {embedder!r}; spaces in the store: {known}")
    view = CorpusView(embedder=embedder, frame=frame, matrix=matrix, data_version=version)
    with _lock:
        _cache[key] = view
    return view
