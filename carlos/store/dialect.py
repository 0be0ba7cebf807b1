"""One SQL text for both backends: the store's statements are written once, in DuckDB's dialect, and
:func:`to_postgres` rewrites the few words PostgreSQL spells differently.

Why a thin rewrite and not a query builder: 89 of the store's 105 statements already ran unchanged on
PostgreSQL 18; the rest differ in a handful of words (placeholders, vector and blob types, ``len``,
``strlen``, ``epoch``, ``to_seconds``, ``rowid``, ``list_dot_product``, JSON paths). A rewrite
table keeps each repository's SQL readable and single,
and a test runs every migration and repository through both backends.

The rewrite is lexical: string literals and quoted names are left alone, words are matched whole.
It is meant for this package's own statements, never for text from a user (those are bound
parameters on both backends).
"""

from __future__ import annotations

import functools
import re

#: DuckDB spelling -> PostgreSQL spelling, matched as whole words outside literals (case-insensitive).
_TYPES = (
    (re.compile(r"\bFLOAT\s*\[\]", re.IGNORECASE), "real[]"),
    (re.compile(r"\bVARCHAR\s*\[\]", re.IGNORECASE), "text[]"),
    (re.compile(r"\bDOUBLE\b(?!\s+PRECISION)", re.IGNORECASE), "double precision"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "bytea"),
    # JSON is kept as text, as DuckDB hands it back: the repositories parse it themselves
    (re.compile(r"\bJSON\b(?!_)", re.IGNORECASE), "text"),
)
_FUNCTIONS = (
    (re.compile(r"\blen\s*\(", re.IGNORECASE), "cardinality("),
    (re.compile(r"\bstrlen\s*\(", re.IGNORECASE), "length("),
    (re.compile(r"\bepoch\s*\(", re.IGNORECASE), "extract(epoch from "),
    (re.compile(r"\bto_seconds\s*\(", re.IGNORECASE), "make_interval(secs => "),
    (re.compile(r"\browid\b", re.IGNORECASE), "ctid"),  # a row's physical id, for deleting ranked rows
)
# json_extract(column, path) / json_extract_string(column, path) with simple arguments (a column, a
# parameter or a literal): DuckDB's JSON paths ('$.a.b') are PostgreSQL jsonpaths too.
_JSON = re.compile(r"\bjson_extract(_string)?\s*\(\s*([\w.]+)\s*,\s*(\?|'[^']*')\s*\)", re.IGNORECASE)


# list_dot_product(a, b) of two array columns: a sum over the arrays unnested side by side.
_DOT = re.compile(r"\blist_dot_product\s*\(\s*([\w.]+)\s*,\s*([\w.]+)\s*\)", re.IGNORECASE)


def _split(sql: str) -> list[tuple[bool, str]]:
    """(is_code, text) pieces: single-quoted literals, double-quoted names and comments are not code."""
    out: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            out.append((True, sql[start:i]))
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # a doubled quote inside
                        j += 2
                        continue
                    break
                j += 1
            out.append((False, sql[i : j + 1]))
            i = start = j + 1
        elif c == "-" and sql.startswith("--", i):
            out.append((True, sql[start:i]))
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append((False, sql[i:j]))
            i = start = j
        else:
            i += 1
    out.append((True, sql[start:]))
    return out


def _json(m: re.Match[str]) -> str:
    as_string, column, path = m.group(1), m.group(2), m.group(3)
    found = f"jsonb_path_query_first(({column})::jsonb, ({path})::jsonpath)"
    return f"({found} #>> '{{}}')" if as_string else f"({found})::text"


@functools.lru_cache(maxsize=1024)
def to_postgres(sql: str) -> str:
    """``sql`` (DuckDB dialect, ``?`` placeholders) for psycopg: ``%s`` placeholders, ``%`` doubled,
    PostgreSQL's names for the types and functions that differ."""
    out = []
    for is_code, text in _split(_JSON.sub(_json, sql)):
        text = text.replace("%", "%%")  # psycopg reads % everywhere in the text, literals included
        if is_code:
            for pattern, repl in (*_TYPES, *_FUNCTIONS):
                text = pattern.sub(repl, text)
            text = _DOT.sub(r"(SELECT sum(u.a * u.b) FROM unnest(\1, \2) AS u(a, b))", text)
            text = text.replace("?", "%s")
        out.append(text)
    return "".join(out)
