"""The training metadata a LoRA file carries (``__metadata__``), read for a reviewer.

kohya sd-scripts and modelspec write strings into the safetensors header: base model,
resolution, rank, learning rate, trigger phrase, caption tag counts. This module owns
parsing the fields a reviewer wants (:func:`summarize_metadata`, malformed values stay
raw with a warning), the most frequent training tags, and the trigger words to suggest.
Values are uploader-controlled and may be megabytes long: every parser here is linear in
the text, JSON values are read strictly (:mod:`carlos.files.jsontext`) and nothing parsed
is non-finite, so the report stays storable JSON.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from carlos.files.formats import show
from carlos.files.jsontext import loads_strict


def _as_int(value: str) -> int:
    if not float(value).is_integer():
        raise ValueError(value)
    return int(float(value))


def _as_bool(value: str) -> bool:
    return {"true": True, "false": False}[value.strip().lower()]


def _as_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):  # "nan", "inf", "1e999": not a learning rate, and not storable JSON
        raise ValueError(value)
    return number


def _as_resolution(value: str) -> list[int]:
    # no two neighbouring quantifiers can match the same characters: linear in len(value) (no ReDoS)
    found = re.fullmatch(r"[(\[]?\s*(\d+)\s*(?:[,x]\s*(\d+)\s*)?[)\]]?", value.strip()) if len(value) <= 100 else None
    if not found:
        raise ValueError(value)
    return [int(found[1]), int(found[2] or found[1])]


#: The training fields a reviewer wants, with how to read each one.
_REVIEW_FIELDS: dict[str, Callable[[str], Any]] = {
    "ss_base_model_version": str,
    "ss_sd_model_name": str,
    "ss_output_name": str,
    "ss_resolution": _as_resolution,
    "ss_network_dim": _as_int,
    "ss_network_alpha": _as_float,
    "ss_network_module": str,
    "ss_network_args": loads_strict,
    "ss_v2": _as_bool,
    "ss_num_train_images": _as_int,
    "ss_num_epochs": _as_int,
    "ss_max_train_steps": _as_int,
    "ss_learning_rate": _as_float,
    "ss_clip_skip": _as_int,
    "ss_training_comment": str,
    "modelspec.architecture": str,
    "modelspec.title": str,
    "modelspec.trigger_phrase": str,
    "modelspec.description": str,
    "modelspec.author": str,
    "modelspec.date": str,
    "modelspec.tags": str,
}
_TOP_TAGS = 20
_MAX_COUNT = 2**53  # a tag count above this is no count (and would not survive a float in the store)
_MAX_TRIGGER_WORDS, _MAX_WORD_CHARS = 20, 100


def has_value(value: Any) -> bool:
    """Whether a metadata value says something (not missing, empty or the string 'None')."""
    return not (value is None or isinstance(value, str) and value.strip() in ("", "None"))


def summarize_metadata(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The reviewer fields of ``__metadata__``, parsed; malformed values stay raw with a warning."""
    summary: dict[str, Any] = {}
    warnings: list[str] = []
    for key, parse in _REVIEW_FIELDS.items():
        value = raw.get(key)
        if not has_value(value):
            continue
        summary[key] = value  # non-strings were already warned about by the header parser
        if isinstance(value, str) and not (key == "ss_network_dim" and value.strip().lower() == "dynamic"):
            try:  # "dynamic" is written by kohya's resize script for mixed ranks
                summary[key] = parse(value)
            except (ValueError, KeyError):
                warnings.append(f"metadata {key}={show(value, 60)} could not be parsed; kept as text")
    tags, tag_warning = _top_tags(raw)
    warnings += [tag_warning] if tag_warning else []
    if tags:
        summary["top_tags"] = tags
    return summary, warnings


def _top_tags(raw: Mapping[str, Any]) -> tuple[list[list[Any]], str | None]:
    """Most frequent training-caption tags from ``ss_tag_frequency`` (or ``ss_datasets``)."""
    key = "ss_tag_frequency" if "ss_tag_frequency" in raw else "ss_datasets"
    text = raw.get(key)
    if not isinstance(text, str) or not has_value(text):
        return [], None
    try:
        parsed = loads_strict(text)
    except ValueError:
        return [], f"metadata {key} is not valid JSON; kept as text"
    if isinstance(parsed, list):  # ss_datasets: one dict per dataset
        sources = [d.get("tag_frequency") for d in parsed if isinstance(d, dict)]
    else:  # ss_tag_frequency: {dataset folder: {tag: count}}
        sources = list(parsed.values()) if isinstance(parsed, dict) else []
    counts: Counter[str] = Counter()
    for freq in sources:
        for tag, count in freq.items() if isinstance(freq, dict) else ():
            if isinstance(count, (int, float)) and not isinstance(count, bool) and 0 <= count < _MAX_COUNT and tag.strip():
                counts[tag.strip()] += int(count)
    if not counts and parsed:
        return [], f"metadata {key} has no tag counts in the expected layout; kept as text"
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_TAGS]
    return [[tag, n] for tag, n in ranked], None


def suggest_trigger_words(summary: Mapping[str, Any], limit: int = 5) -> list[str]:
    """Words to put in prompts: the declared trigger phrase, else the most frequent tags."""
    phrase = summary.get("modelspec.trigger_phrase")
    if isinstance(phrase, str) and phrase.strip():  # capped: the phrase may be a megabyte long
        words = (w.strip() for w in phrase.split(",", 10 * _MAX_TRIGGER_WORDS))
        return list(dict.fromkeys(w for w in words if w and len(w) <= _MAX_WORD_CHARS))[:_MAX_TRIGGER_WORDS]
    return [tag for tag, _ in summary.get("top_tags", [])[:limit]]
