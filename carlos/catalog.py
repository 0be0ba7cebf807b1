"""A read model of the store for one embedding space: frame + direction matrix.

Built once per ``(store, embedder, data_version)`` and kept in a small
in-process cache, so pages and repeated searches do not re-read vectors.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carlos.config import CORPUS_EMBEDDER, Thresholds
from carlos.errors import InvalidInputError, NotFoundError
from carlos.risk import RiskPolicy, annotate
from carlos.store import Store


@dataclass(frozen=True)
class CorpusView:
    """LoRAs represented in one embedding space, rows aligned with ``matrix``."""

    embedder: str
    frame: pd.DataFrame  # one row per LoRA (see Store.corpus_frame)
    matrix: np.ndarray  # (n, dim) float32 directions, same order as frame
    data_version: int
    _index: dict[str, int] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._index.update({lid: i for i, lid in enumerate(self.frame["lora_id"])})

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def ids(self) -> list[str]:
        return list(self.frame["lora_id"])

    def row_of(self, lora_id: str) -> int:
        try:
            return self._index[lora_id]
        except KeyError:
            raise NotFoundError(
                f"{lora_id} has no representation in the {self.embedder} space"
            ) from None

    @functools.cached_property
    def quality_flags(self) -> list[tuple[str, ...]]:
        """Data-quality flags per row (threshold-independent)."""
        df = annotate(self.frame, RiskPolicy(thresholds=Thresholds(None, None)))
        return [tuple(f) for f in df["flags"]] if len(df) else []

    @functools.cached_property
    def percentiles(self) -> tuple[np.ndarray, np.ndarray]:
        """(Strength, Consistency) percentile of every row within this space."""
        from carlos.risk import percentile_rank

        return (percentile_rank(self.frame["strength"]).to_numpy(),
                percentile_rank(self.frame["consistency"]).to_numpy())  # fmt: skip

    @functools.cached_property
    def unit_matrix(self) -> np.ndarray:
        """Rows of ``matrix`` scaled to unit length (zero rows stay zero): cosine is one matmul."""
        norms = np.linalg.norm(self.matrix, axis=1, keepdims=True)
        return np.divide(self.matrix, norms, out=np.zeros_like(self.matrix), where=norms > 1e-12)

    def annotated(self, policy: RiskPolicy | None = None) -> pd.DataFrame:
        """Frame with flags, percentiles and risk classes under ``policy``."""
        return annotate(self.frame, policy)


_cache: dict[tuple[str, str], CorpusView] = {}
_lock = threading.Lock()


def load_view(store: Store, embedder: str = CORPUS_EMBEDDER, *, max_age_s: float = 0.0) -> CorpusView:
    """The current view of ``embedder`` space, rebuilt only when the store changed
    (``max_age_s``: see :meth:`Store.data_version`)."""
    version = store.data_version(max_age_s)
    key = (str(store.path.resolve()), embedder)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.data_version == version:
            return cached
    with store.session():
        frame = store.corpus_frame(embedder)
        # streamed into one preallocated float32 array: peak memory ~ the matrix itself
        ids, matrix, _, _ = store.load_directions(embedder)
    if list(frame["lora_id"]) != ids:  # align the frame with the matrix rows
        frame = frame.set_index("lora_id").loc[ids].reset_index()
    if frame.empty and embedder not in store.embedders():
        known = ", ".join(store.embedders()) or "none (run `python -m carlos corpus import`)"
        raise InvalidInputError(f"no LoRA is represented in {embedder!r}; spaces in the store: {known}")
    view = CorpusView(embedder=embedder, frame=frame, matrix=matrix, data_version=version)
    with _lock:
        _cache[key] = view
    return view
