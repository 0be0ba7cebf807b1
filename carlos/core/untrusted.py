"""Untrusted text made inert: creator-supplied strings for Markdown, Plotly and spreadsheets.

LoRA names, descriptions, declared metadata, trigger words and upload file names are
written by whoever published or uploaded the file. Shown through a renderer that
interprets markup they could become a live link, an image fetched from the creator's
server when a moderator opens the page (a tracking pixel), or a spreadsheet formula
when a reviewer opens an export. This module turns such a value into text that each
target shows literally:

* :func:`markdown_literal` for Streamlit's Markdown contexts (titles, captions, alerts,
  labels, page links, radio options, ``st.table`` cells, metric values, toasts);
* :func:`markdown_code` for an identifier shown as inline code;
* :func:`plotly_literal` for Plotly text, hover and tick labels (pseudo-HTML: ``<a>``,
  ``<b>``, ``<br>`` and entities are interpreted);
* :func:`neutralize_cell` / :func:`neutralize_formulas` / :func:`csv_bytes` for CSV
  exports (OWASP's formula-injection advice: a quote before ``= + - @``, tab, CR).

Pure Python and pandas, no Streamlit, so every rule is unit-tested on its own.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

import pandas as pd

#: The characters that open an inline construct anywhere in a line, each backslash-escaped
#: (CommonMark: an escaped punctuation character is always literal text): ``\\`` escapes,
#: `` ` `` code, ``*`` ``_`` emphasis, ``~`` strikethrough, ``[`` ``]`` links, images,
#: references and footnotes, ``<`` ``>`` autolinks and HTML, ``&`` entities, ``$`` LaTeX,
#: ``:`` Streamlit's directives (``:red[...]``, ``:help[...]``), ``|`` tables, ``#`` headings
#: (and a heading's closing ``#``). ``!`` needs no escape: an image needs ``![``.
_INLINE_RE = re.compile(r"([\\`*_~\[\]<>&$:|#])")
#: A list marker or thematic break at the start of the line (``- x``, ``---``, ``+ x``,
#: ``1. x``, ``1) x``); a single line can start no other block once the characters above
#: are escaped (``*``/``_`` breaks, ``#`` headings, ``>`` quotes, fences, ``<`` HTML, ``|``).
_LINE_START_RE = re.compile(r"^(-|\+(?= |$))|^(\d{1,9})([.)])(?= |$)")
#: U+2060 WORD JOINER: invisible, not a line-break opportunity, and not a word character,
#: so it breaks the patterns Streamlit's renderer matches in already-parsed text, where a
#: backslash escape no longer exists (see :data:`_AFTER_PARSE_RE`).
WORD_JOINER = "\u2060"
#: Where Streamlit applies a rule to text *after* Markdown parsing (escapes are gone):
#: ``:smile:`` emoji shortcodes (remark-emoji), ``:material/icon:`` (a source-level
#: rewrite), bare URLs ``x://`` / ``www.`` and e-mail addresses (GFM autolink literals).
#: A word joiner goes right after the colon, before the dot of ``www.`` and after ``@``.
_AFTER_PARSE_RE = re.compile(r"(:)(?=[\w+\-]+:|//|material/)|(www)(?=\.)|(@)(?=[\w\-])", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")
_BACKTICKS_RE = re.compile(r"`+")

#: Characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: Any) -> str:
    """``None`` and NaN as "", anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def _one_line(text: str) -> str:
    """Control characters and every run of whitespace (line breaks included) as one space:
    a single line cannot start a block (heading, list, quote, code block, table) after its
    first character, and browsers collapse the whitespace anyway."""
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return _WS_RE.sub(" ", text).strip()


def _join_after_parse_patterns(text: str) -> str:
    return _AFTER_PARSE_RE.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + WORD_JOINER, text)


def markdown_literal(value: Any) -> str:
    """``value`` as Markdown source that Streamlit renders as exactly its characters.

    One line (whitespace runs become one space), every character that could start
    Markdown backslash-escaped, and a word joiner (U+2060, invisible) wherever Streamlit would
    otherwise turn parsed text into an emoji, a Material icon or a link. The result is
    for Markdown contexts only: in a plain-text one (``st.text``, ``st.dataframe``
    cells, select box options) the backslashes would show.
    """
    text = _INLINE_RE.sub(r"\\\1", _join_after_parse_patterns(_one_line(_as_text(value))))
    return _LINE_START_RE.sub(lambda m: f"\\{m.group(1)}" if m.group(1) else f"{m.group(2)}\\{m.group(3)}", text)


def markdown_code(value: Any) -> str:
    """``value`` as a Markdown inline code span: shown verbatim, in a monospaced font.

    The fence is one backtick longer than the longest backtick run inside (CommonMark),
    padded with spaces when the text starts or ends with a backtick; nothing inside a
    code span is parsed, linked or turned into an emoji. Streamlit's only source-level
    rewrite (``:material/`` before parsing) is broken with a word joiner.
    """
    text = _one_line(_as_text(value)).replace(":material/", ":" + WORD_JOINER + "material/")
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in _BACKTICKS_RE.findall(text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plotly_literal(value: Any) -> str:
    """``value`` for Plotly text (hover, labels, legend, annotations): ``&``, ``<`` and ``>``
    as entities, so no tag (``<a href>``, ``<b>``, ``<br>``, ``<span style>``) or entity is
    interpreted. Quotes stay as they are: Plotly would show ``&quot;`` literally."""
    return _as_text(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def neutralize_cell(value: Any) -> Any:
    """A string starting with a formula character gets a leading ``'`` (spreadsheets then show
    it as text); anything else, numbers included, is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with :func:`neutralize_cell` applied to every string cell of its
    text columns (object or string dtype); numeric, boolean and date columns are untouched."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_object_dtype(out[col]) or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(neutralize_cell)
    return out


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as UTF-8 CSV (no index) with formula prefixes neutralized: every CSV the
    product writes goes through here."""
    return neutralize_formulas(frame).to_csv(index=False).encode("utf-8")
