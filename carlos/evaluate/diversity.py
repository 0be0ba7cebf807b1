"""Diversity of a retriever's rankings over a query set (PAPER.md, "Evaluation", *ours*).

Over a query set Q and span k, let c(l) count how often LoRA l appears in the top-k
lists and p(l) = c(l) / N with N the filled slots (N = |Q| k when every list is full).
Normalized Entropy = H(p) / log(min(|L|, N)), with |L| the LoRAs the thresholds leave
retrievable; Effective LoRA Count = exp(H(p)). Pure Python and numpy over lists of ids:
:mod:`carlos.evaluate.harness` produces the rankings and reports these numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError


@dataclass(frozen=True)
class Diversity:
    """Diversity of a set of ranked lists at one span."""

    span: int
    normalized_entropy: float  # NaN when min(|L|, N) <= 1: no spread is possible
    effective_lora_count: float
    distinct_loras: int
    filled_slots: int  # N: hits counted (|Q| k when every list is full)
    slots: int  # |Q| k
    n_lists: int


def span_counts(rankings: Sequence[Sequence[str]], k: int) -> Counter:
    """c(l): how often each LoRA appears in the first ``k`` entries of the lists."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"span k must be a positive int, got {k!r}")
    counts: Counter = Counter()
    for ranked in rankings:
        top = list(ranked)[:k]
        if len(set(top)) != len(top):
            raise InvalidInputError(f"a ranked list repeats a LoRA: {top}")
        counts.update(top)
    return counts


def entropy(counts: Mapping[Any, int]) -> float:
    """Shannon entropy (nats) of the distribution ``c / sum(c)``; 0 for no counts."""
    c = np.asarray([v for v in counts.values() if v > 0], dtype=np.float64)
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def diversity(rankings: Sequence[Sequence[str]], k: int, pool_size: int) -> Diversity:
    """Normalized Entropy and Effective LoRA Count of ``rankings`` at span ``k``."""
    if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 0:
        raise InvalidInputError(f"pool_size must be a non-negative int, got {pool_size!r}")
    counts = span_counts(rankings, k)
    n = sum(counts.values())
    h = entropy(counts)
    cap = min(int(pool_size), n)
    ne = h / math.log(cap) if cap > 1 else float("nan")
    return Diversity(
        span=k,
        normalized_entropy=ne,
        effective_lora_count=math.exp(h) if n else 0.0,
        distinct_loras=len(counts),
        filled_slots=n,
        slots=len(rankings) * k,
        n_lists=len(rankings),
    )


def normalized_entropy(rankings: Sequence[Sequence[str]], k: int, pool_size: int) -> float:
    return diversity(rankings, k, pool_size).normalized_entropy


def effective_lora_count(rankings: Sequence[Sequence[str]], k: int) -> float:
    return math.exp(entropy(span_counts(rankings, k)))
