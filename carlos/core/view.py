"""The corpus in one embedding space as arrays: frame + direction matrix + exact index.

Pure numpy/pandas: :func:`carlos.store.catalog.load_view` builds it from the store, and
everything that ranks, filters or maps LoRAs reads it without knowing where it came from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carlos.core.index import DirectionIndex, Int8Kernel
from carlos.core.risk import QUALITY_FLAGS, RiskPolicy, annotate, percentile_rank, quality_masks
from carlos.errors import NotFoundError


@dataclass(frozen=True)
class CorpusView:
    """LoRAs represented in one embedding space, rows aligned with ``matrix``."""

    embedder: str
    frame: pd.DataFrame  # one row per LoRA (see store.reps.corpus_frame)
    matrix: np.ndarray  # (n, dim) float32 directions, same order as frame
    data_version: int
    int8: Int8Kernel | None = None  # stage-1 backend of the index; None: the float32 scan

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
        return (percentile_rank(self.frame["strength"]).to_numpy(), percentile_rank(self.frame["consistency"]).to_numpy())

    @functools.cached_property
    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """(Strength, Consistency) as float64 arrays, rows aligned with ``matrix``."""
        return (self.frame["strength"].to_numpy(dtype=np.float64), self.frame["consistency"].to_numpy(dtype=np.float64))

    @functools.cached_property
    def index(self) -> DirectionIndex:
        """Exact filtered top-k over ``matrix`` (int8 first pass from 20k LoRAs on); built once per view."""
        strength, consistency = self.values
        return DirectionIndex(np.ascontiguousarray(self.matrix, dtype=np.float32), strength, consistency, int8=self.int8)

    def annotated(self, policy: RiskPolicy | None = None) -> pd.DataFrame:
        """Frame with flags, percentiles and risk classes under ``policy``."""
        return annotate(self.frame, policy)
