"""JSON text from an untrusted file, held to what safetensors' own parser accepts.

Python's ``json`` reads more than safetensors' (Rust, serde) parser does: ``NaN`` and
``Infinity``, ``1e400`` (as inf), ``-0`` and integers past 64 bits (as Python ints), lone
UTF-16 surrogates (``"\\ud800"``, which are not text in any encoding) and nesting down to
Python's recursion limit. A header that Python reads but safetensors refuses would pass
validation and then fail to load; a report holding a surrogate cannot be stored (DuckDB's
JSON refuses it); a value nested hundreds of levels deep overflows the stack of every
recursive walker after us (``dataclasses.asdict``, ``json.dumps``). :func:`loads_strict`
refuses all of these with a reason, for the header (:mod:`carlos.files.header`) and for the
JSON that metadata values carry (:mod:`carlos.files.metadata`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

#: Deepest nesting accepted: a safetensors header needs 3 levels (header, entry, shape);
#: safetensors itself stops at 128.
MAX_DEPTH = 64
_U64 = 1 << 64
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # the only way JSON text can spell one


class JSONTextError(ValueError):
    """Text that is not JSON safetensors reads; the message says why, in words."""


def _int(token: str) -> int:
    if token == "-0":  # Python reads 0, serde a float -0.0 (refused where an integer is due)
        raise JSONTextError("-0 is not an integer")
    if len(token) > 20 or not -(1 << 63) <= int(token) < _U64:
        raise JSONTextError(f"the number {token[:24]}{'…' if len(token) > 24 else ''} does not fit in 64 bits")
    return int(token)


def _float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise JSONTextError(f"the number {token[:24]}{'…' if len(token) > 24 else ''} is too large for a float")
    return value


def _constant(token: str) -> None:
    raise JSONTextError(f"{token} is not JSON")


def loads_strict(
    text: str,
    *,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The value of ``text``; JSONTextError (a ValueError) when it is not JSON safetensors reads.

    ``json.JSONDecodeError`` (also a ValueError) passes through; a recursion bomb that stops
    Python's parser becomes a JSONTextError too, so callers catch ValueError only.
    """
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant, object_pairs_hook=object_pairs_hook)
    except RecursionError as err:
        raise JSONTextError(f"it nests arrays or objects more than {max_depth} levels deep") from err
    problem = _tree_problem(value, max_depth, check_text=_SURROGATE_ESCAPE.search(text) is not None)
    if problem:
        raise JSONTextError(problem)
    return value


def _tree_problem(value: Any, max_depth: int, *, check_text: bool) -> str | None:
    """Why a parsed value is refused (too deep, a lone surrogate), walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if check_text and (bad := _surrogate(item)):
                return f"it holds a lone UTF-16 surrogate ({bad}), which is not text"
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > max_depth:
            return f"it nests arrays or objects more than {max_depth} levels deep"
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)) or check_text)
    return None


def _surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return ascii(text[err.start])
    return None
