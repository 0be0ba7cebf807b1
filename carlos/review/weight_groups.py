"""Weight-space near-duplicates in the review queue: copies grouped with their original, its decision suggested.

The matches come from ``store.fingerprints`` (written when a file is fingerprinted, see
:mod:`carlos.characterize.fingerprints`). LoRAs linked by a "same LoRA" relationship
(identical weights, a rescaled copy, a rank-reduced or re-quantized copy) form a group: the
connected components of those links, with the union-find of :mod:`carlos.review.duplicates`.
A group's original is the member fingerprinted first; every other member is a copy, and the
decision suggested for it is the original's (or, while the original is undecided, the most
recent decision on any member, saying whose). Partial relationships (merges, shared modules)
do not join groups; each row lists them. Names are creator text, returned as plain strings.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from carlos.review.duplicates import group_labels
from carlos.store.store import Store
from carlos.weights.relate import PARTIAL, SAME_LORA

COLUMNS = (
    "group",
    "lora_id",
    "name",
    "role",
    "same_weights_as",
    "shares_weights_with",
    "status",
    "reviewer",
    "decided_at",
    "suggested_decision",
    "suggested_because",
)


def weight_groups(store: Store) -> pd.DataFrame:
    """One row per LoRA with a stored weight-space relationship (columns :data:`COLUMNS`),
    groups of copies together, originals first within their group."""
    rows = store.fingerprints.matches()
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    names: dict[str, str] = {}
    seen_at: dict[str, Any] = {}
    same: dict[str, list[str]] = {}
    partial: dict[str, list[str]] = {}
    for r in rows:
        a, b = r["lora_id"], r["other_id"]
        names.setdefault(a, str(r.get("name") or r.get("file_name") or a))
        names.setdefault(b, str(r.get("other_name") or r.get("other_file_name") or b))
        seen_at.setdefault(a, r.get("fingerprinted_at"))
        seen_at.setdefault(b, r.get("other_fingerprinted_at"))
        bucket = same if r["label"] in SAME_LORA else partial if r["label"] == PARTIAL else None
        if bucket is not None:
            bucket.setdefault(a, []).append(b)
    ids = sorted(names)
    index = {lid: i for i, lid in enumerate(ids)}
    labels = group_labels(list(range(len(ids))), [[index[x] for x in same.get(lid, [])] for lid in ids])
    status = store.review.current_statuses().set_index("lora_id") if ids else pd.DataFrame()
    out = []
    for lid, group in zip(ids, labels):
        st = status.loc[lid] if lid in status.index else None
        out.append(
            {
                "group": int(group),
                "lora_id": lid,
                "name": names[lid],
                "same_weights_as": sorted(set(same.get(lid, []))),
                "shares_weights_with": sorted(set(partial.get(lid, []))),
                "status": (st["status"] if st is not None and isinstance(st["status"], str) else "unreviewed"),
                "reviewer": st["reviewer"] if st is not None else None,
                "decided_at": st["decided_at"] if st is not None else None,
                "_seen": pd.Timestamp(seen_at.get(lid)) if seen_at.get(lid) is not None else pd.Timestamp.max,
            }
        )
    frame = pd.DataFrame(out)
    return _suggest(frame)[list(COLUMNS)]


def _suggest(frame: pd.DataFrame) -> pd.DataFrame:
    """Roles and suggested decisions per group of copies."""
    frame = frame.sort_values(["group", "_seen", "lora_id"], kind="stable").reset_index(drop=True)
    frame["role"] = "shares weights"
    frame["suggested_decision"] = None
    frame["suggested_because"] = None
    for _, members in frame.groupby("group", sort=False):
        copies = members[members["same_weights_as"].map(len) > 0]
        if copies.empty:
            continue
        original = copies.index[0]
        frame.loc[original, "role"] = "original"
        frame.loc[copies.index[1:], "role"] = "copy"
        decided = copies[copies["status"] != "unreviewed"]
        if frame.loc[original, "status"] != "unreviewed":
            source = original
        elif not decided.empty:
            source = decided.sort_values("decided_at", kind="stable").index[-1]
        else:
            continue
        for i in copies.index:
            if i == source:
                continue
            frame.loc[i, "suggested_decision"] = frame.loc[source, "status"]
            who = frame.loc[source, "reviewer"]
            whose = "its original" if source == original else "a copy in its group"
            frame.loc[i, "suggested_because"] = f"{whose} {frame.loc[source, 'name']} was {frame.loc[source, 'status']}" + (
                f" by {who}" if who else ""
            )
    return frame
