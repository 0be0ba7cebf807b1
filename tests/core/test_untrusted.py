"""Untrusted text made inert: Markdown (rendered by a CommonMark parser with raw HTML on, and
checked against the patterns Streamlit applies after parsing), Plotly text and CSV formulas."""

from __future__ import annotations

import html
import io
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from carlos.core.untrusted import (
    FORMULA_PREFIXES,
    WORD_JOINER,
    csv_bytes,
    markdown_code,
    markdown_literal,
    neutralize_cell,
    neutralize_formulas,
    plotly_literal,
)

#: CommonMark with raw HTML allowed (the worst case) and GFM tables and strikethrough.
MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
#: What Streamlit's renderer does to text nodes after parsing (ported from its bundle, with
#: JavaScript's ASCII-only \w): remark-emoji, GFM autolink literals (URLs, e-mail) and the
#: source-level ``:material/`` rewrite.
EMOJI = re.compile(r":\+1:|:-1:|:[A-Za-z0-9_-]+:")
URL = re.compile(r"(https?://|www(?=\.))[-.A-Za-z0-9_]+", re.IGNORECASE)
EMAIL = re.compile(r"[-.A-Za-z0-9_+]+@[-A-Za-z0-9_]+(?:\.[-A-Za-z0-9_]+)+")

HOSTILE = (
    '=HYPERLINK("http://evil","x") [click](javascript:alert(1)) ![x](http://127.0.0.1:9/pixel.png) '
    '<b>bold</b> <img src="http://127.0.0.1:9/i.png"> :red[red] $x^2$ :smile: www.evil.example a@b.example'
)


def one_line(text: str) -> str:
    return " ".join(text.split())


def rendered_text(source: str) -> str:
    """The text a CommonMark renderer shows for ``source``, which must be one plain paragraph."""
    out = MD.render(source)
    if not out:
        return ""
    assert out.startswith("<p>") and out.endswith("</p>\n") and out.count("<") == 2, out
    return html.unescape(out[3:-5])


def unescaped(source: str, char: str) -> list[int]:
    """Positions of ``char`` in ``source`` not preceded by an escaping backslash."""
    found, i = [], 0
    while i < len(source):
        if source[i] == "\\":
            i += 2
            continue
        if source[i] == char:
            found.append(i)
        i += 1
    return found


def assert_inert(text: str) -> None:
    source = markdown_literal(text)
    shown = rendered_text(source)
    assert shown.replace(WORD_JOINER, "") == one_line(text)
    # what CommonMark does not know, Streamlit does: LaTeX between $…$ and directives :name[…]
    assert not unescaped(source, "$") and not unescaped(source, ":"), source
    assert not EMOJI.search(shown) and not URL.search(shown) and not EMAIL.search(shown), shown
    assert ":material/" not in shown


@pytest.mark.parametrize(
    "text",
    [
        HOSTILE,
        "back\\slash\\",
        "\\*not emphasis\\*",
        "``code`` and `more`",
        "[a] [b](c) [ref]: http://x",
        "![img](x.png)",
        "**bold** *it* _it_ __b__ ~~s~~ ~s~",
        "# heading",
        "### heading ###",
        "C# #",
        "> quote",
        "- item",
        "-5 below",
        "--- rule",
        "+ item",
        "1. item",
        "2) item",
        "| a | b |",
        "<b>x</b> <script>alert(1)</script> <!-- c -->",
        "a < b > c & d &amp; &#35; &lt;",
        "$x$ and $$y$$ and \\$",
        ":smile: :+1: :red[alarm] :blue-background[x] :help[tip] :material/home: :streamlit:",
        "::leaf :::container",
        "https://example.org HTTP://X.ORG www.x.org WWW.Y.ORG mail me@x.org",
        "line one\nline two\r\n    indented\ttab",
        "   ",
        "",
    ],
)
def test_markdown_edge_cases_render_as_their_characters(text: str) -> None:
    assert_inert(text)


def test_plain_words_and_numbers_stay_readable() -> None:
    assert markdown_literal("Pixel Art XL") == "Pixel Art XL"
    assert markdown_literal("text-seeded 3.5 (v2), 50% off!") == "text-seeded 3.5 (v2), 50% off!"
    assert markdown_literal(None) == "" and markdown_literal(float("nan")) == "" and markdown_literal(7) == "7"
    assert markdown_literal("civitai:130580") == "civitai\\:130580"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="\\`*_~[]()<>&$:|#!-+=.)0123 abwWhtps/@\n\té✓", max_size=40))
def test_any_markup_renders_as_its_characters(text: str) -> None:
    assert_inert(text)


@pytest.mark.parametrize("text", ["a`b``c", "`x", "x`", "` `", "plain", "sha256:ab", "*x* <b> [l](u)", ":material/home:"])
def test_code_spans_show_their_text_verbatim(text: str) -> None:
    source = markdown_code(text)
    out = MD.render(source)
    assert out.startswith("<p><code>") and out.endswith("</code></p>\n") and out.count("<code>") == 1, out
    assert html.unescape(out[len("<p><code>") : -len("</code></p>\n")]).replace(WORD_JOINER, "") == text
    assert ":material/" not in source
    assert markdown_code("") == "" and markdown_code("civitai:130580") == "`civitai:130580`"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="`*_<>[]()a :\n", min_size=1, max_size=30).filter(lambda t: t.strip()))
def test_any_code_span_is_verbatim(text: str) -> None:
    out = MD.render(markdown_code(text))
    assert html.unescape(out[len("<p><code>") : -len("</code></p>\n")]) == one_line(text)


def test_plotly_text_has_no_tags_or_entities() -> None:
    out = plotly_literal(HOSTILE + " &lt;i&gt; <br> <a href='x'>")
    assert "<" not in out and ">" not in out
    assert html.unescape(out) == HOSTILE + " &lt;i&gt; <br> <a href='x'>"
    assert '"' in out and "&quot;" not in out  # Plotly shows &quot; literally, and a quote opens nothing
    assert plotly_literal(None) == "" and plotly_literal(2.5) == "2.5"


@pytest.mark.parametrize("prefix", FORMULA_PREFIXES)
def test_formula_prefixes_get_a_quote(prefix: str) -> None:
    assert neutralize_cell(prefix + "1+1") == "'" + prefix + "1+1"


def test_other_cells_are_unchanged() -> None:
    for value in ("plain", " =not first", "'already", "", None, -3, -2.5, 0, True, np.float64(-1.5)):
        assert neutralize_cell(value) is value or neutralize_cell(value) == value


def test_csv_export_neutralizes_text_and_keeps_numbers() -> None:
    frame = pd.DataFrame(
        {
            "name": ['=HYPERLINK("http://evil","x")', "+cmd", "@SUM(A1)", "-2+3", "\tx", "fine"],
            "note": [None, "ok", "=1", "a", "b", "c"],
            "strength": [-1.5, 2.0, 3.0, -4.25, 0.0, 1.0],
            "count": [-1, 2, 3, 4, 5, 6],
            "at": pd.to_datetime(["2026-01-01"] * 6),
        }
    )
    out = neutralize_formulas(frame)
    assert list(out["name"]) == ["'" + v if v[0] in "=+-@\t" else v for v in frame["name"]]
    assert pd.isna(out["note"].iloc[0]) and out["note"].iloc[2] == "'=1"
    assert out["strength"].dtype == frame["strength"].dtype and (out["strength"] == frame["strength"]).all()
    assert list(out["count"]) == [-1, 2, 3, 4, 5, 6] and out["at"].equals(frame["at"])
    assert frame["name"].iloc[0].startswith("=")  # the input frame is not modified
    back = pd.read_csv(io.BytesIO(csv_bytes(frame)))
    assert back["name"].iloc[0] == "'" + frame["name"].iloc[0] and back["name"].iloc[5] == "fine"
    assert back["strength"].iloc[0] == -1.5 and back["count"].iloc[0] == -1
    assert all(not str(v).startswith(FORMULA_PREFIXES) for v in back["name"]), list(back["name"])
