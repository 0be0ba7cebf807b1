"""Risk reading of Strength (substantiality) and Consistency (volition).

Pure pandas/numpy over a corpus frame (``store.reps.corpus_frame``): filter flags,
percentiles, risk classes and data-quality flags. No legal thresholds exist
beyond the paper's retrieval filters, so the "review" region (strong *and*
consistent) is a reviewer-set policy, defaulting to the upper quartile of both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from carlos.config import CORPUS_EMBEDDER, Thresholds
from carlos.core.comparability import comparable_mask
from carlos.errors import InvalidInputError

RISK_CLASSES = ("too strong", "too unstable", "review", "low risk")
RISK_COLOURS = {
    "too strong": "#d62728",
    "too unstable": "#7f7f7f",
    "review": "#ff7f0e",
    "low risk": "#2ca02c",
}


@dataclass(frozen=True)
class RiskPolicy:
    """Where the 'review' region starts, as corpus quantiles of the retained LoRAs."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    review_strength_quantile: float = 0.75  # at or above: substantial
    review_consistency_quantile: float = 0.75  # at or above: volitional

    def __post_init__(self) -> None:
        for name in ("review_strength_quantile", "review_consistency_quantile"):
            q = getattr(self, name)
            if not 0.0 <= q <= 1.0:
                raise InvalidInputError(f"{name} must be within [0, 1], got {q}")


def percentile_rank(values: pd.Series) -> pd.Series:
    """Percent of the corpus at or below each value (0–100], ties share the max rank."""
    return values.rank(method="max", pct=True) * 100.0


def annotate(frame: pd.DataFrame, policy: RiskPolicy | None = None) -> pd.DataFrame:
    """Add filter flags, percentiles, risk class and data-quality flags to a corpus frame."""
    policy = policy or RiskPolicy()
    t = policy.thresholds
    df = frame.copy()
    if df.empty:
        for col in ("too_strong", "too_unstable", "retained", "duplicate_values"):
            df[col] = pd.Series(dtype=bool)
        for col in ("strength_pct", "consistency_pct"):
            df[col] = pd.Series(dtype=float)
        df["risk_class"] = pd.Series(dtype=str)
        df["flags"] = pd.Series(dtype=object)
        return df
    s, c = df["strength"].to_numpy(), df["consistency"].to_numpy()
    # each filter on its own, through the one definition of "passes" (NaN fails: see Thresholds.keeps)
    df["too_strong"] = ~replace(t, consistency_min=None).keeps(s, c)
    df["too_unstable"] = ~replace(t, strength_max=None).keeps(s, c)
    df["retained"] = t.keeps(s, c)
    df["strength_pct"] = percentile_rank(df["strength"])
    df["consistency_pct"] = percentile_rank(df["consistency"])
    kept = df[df["retained"]]
    s_cut = kept["strength"].quantile(policy.review_strength_quantile) if len(kept) else np.inf
    c_cut = kept["consistency"].quantile(policy.review_consistency_quantile) if len(kept) else np.inf
    review = df["retained"] & (df["strength"] >= s_cut) & (df["consistency"] >= c_cut)
    df["risk_class"] = np.select(
        [df["too_strong"], df["too_unstable"], review],
        ["too strong", "too unstable", "review"],
        default="low risk",
    )
    masks = quality_masks(df)
    df["duplicate_values"] = masks["duplicate_values"]
    df["measured_differently"] = masks["measured_differently"]
    df["flags"] = _flag_lists(df, masks)
    df.attrs["review_strength_min"] = float(s_cut)
    df.attrs["review_consistency_min"] = float(c_cut)
    return df


#: Data-quality flags that do not depend on the thresholds, in display order.
QUALITY_FLAGS = {
    "duplicate_values": "identical values to other LoRAs (possible degenerate generation)",
    "missing_metadata": "missing creator metadata",
    "measured_differently": "measured differently from the corpus (prompt set, noise or model): not directly comparable",
}


def quality_masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """One boolean array per :data:`QUALITY_FLAGS` key, vectorized (a million rows in well under a second)."""
    # identical (strength, consistency) shared by unrelated rows: likely degenerate generations
    rounded = pd.DataFrame({"s": frame["strength"].round(4).to_numpy(), "c": frame["consistency"].round(4).to_numpy()})
    model_id = frame["model_id"] if "model_id" in frame else pd.Series(None, index=frame.index, dtype=object)
    source = frame["source"] if "source" in frame else pd.Series("", index=frame.index, dtype=object)
    return {
        "duplicate_values": rounded.duplicated(keep=False).to_numpy(),
        "missing_metadata": (model_id.isna() & (source != "upload")).to_numpy(dtype=bool),
        # frames without provenance columns (synthetic corpora) carry no measurement to compare
        "measured_differently": ~comparable_mask(frame, CORPUS_EMBEDDER) if "prompt_set" in frame else np.zeros(len(frame), dtype=bool),
    }


def _flag_lists(df: pd.DataFrame, masks: dict[str, np.ndarray]) -> list[list[str]]:
    """Each row's flags in display order, from boolean columns (one zip, not a row iteration:
    a million rows in about a second)."""
    labels = ("too strong", "too unstable", *(QUALITY_FLAGS[k] for k in ("duplicate_values", "missing_metadata", "measured_differently")))
    columns = (
        df["too_strong"].to_numpy(dtype=bool),
        df["too_unstable"].to_numpy(dtype=bool),
        *(np.asarray(masks[k], dtype=bool) for k in ("duplicate_values", "missing_metadata", "measured_differently")),
    )
    return [[label for label, on in zip(labels, row) if on] for row in zip(*columns)]


def exclusion_reasons(row: dict[str, Any], thresholds: Thresholds) -> list[str]:
    """Why one LoRA is filtered out under ``thresholds`` (empty: kept)."""
    return thresholds.exclusion_reasons(float(row["strength"]), float(row["consistency"]))


@dataclass(frozen=True)
class CorpusStats:
    """Counts the CLI's ``stats`` and the dashboard's overview report."""

    embedder: str
    loras: int
    over_strength: int
    under_consistency: int
    excluded_by_both: int
    retained: int
    strength_max: float | None
    consistency_min: float | None
    risk_classes: dict[str, int]
    strength_range: tuple[float, float]
    consistency_range: tuple[float, float]
    strength_consistency_r: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def corpus_stats(frame: pd.DataFrame, embedder: str, policy: RiskPolicy | None = None) -> CorpusStats:
    policy = policy or RiskPolicy()
    df = annotate(frame, policy)
    n = len(df)
    r = float(np.corrcoef(df["strength"], df["consistency"])[0, 1]) if n > 2 else float("nan")
    return CorpusStats(
        embedder=embedder,
        loras=n,
        over_strength=int(df["too_strong"].sum()),
        under_consistency=int(df["too_unstable"].sum()),
        excluded_by_both=int((df["too_strong"] & df["too_unstable"]).sum()),
        retained=int(df["retained"].sum()),
        strength_max=policy.thresholds.strength_max,
        consistency_min=policy.thresholds.consistency_min,
        risk_classes={c: int((df["risk_class"] == c).sum()) for c in RISK_CLASSES},
        strength_range=(float(df["strength"].min()), float(df["strength"].max())) if n else (0, 0),
        consistency_range=(float(df["consistency"].min()), float(df["consistency"].max())) if n else (0, 0),
        strength_consistency_r=r,
    )


NSFW_BITS = {1: "PG", 2: "PG-13", 4: "R", 8: "X", 16: "XXX", 32: "blocked"}


def nsfw_label(level: Any) -> str:
    """Civitai's NSFW level is a bit mask of ratings; show the highest one present."""
    if level is None or pd.isna(level):
        return "unknown"
    level = int(level)
    names = [name for bit, name in NSFW_BITS.items() if level & bit]
    return names[-1] if names else "unknown"
