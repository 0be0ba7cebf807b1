"""Creator text made comparable: cleaning Civitai HTML and a script-aware tokenizer.

LoRA names and descriptions are what creators wrote: HTML with entities, URLs,
pasted prompt syntax, emoji, many scripts. This module owns turning them into
plain, normalized text (:func:`clean_text`, :func:`document_text`) and into the
word tokens a lexical index reads (:func:`tokenize`). Pure Python, so the
textual retrievers (:mod:`carlos.models.bm25`, :mod:`carlos.models.sentence`)
and any code that labels groups of LoRAs by their words share one definition.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache
from html.parser import HTMLParser

from carlos.errors import InvalidInputError

# --------------------------------------------------------------------------- cleaning

#: Tags whose end starts a new "line": without a separator "<p>a</p><p>b</p>" would glue "ab".
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
#: Tags whose content is code or markup, never prose.
_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "svg", "math", "head"})
#: Prompt syntax creators paste unescaped ("<lora:name:0.8>"): text, not HTML.
_PROMPT_TAG_PREFIXES = ("lora:", "lyco:", "hypernet:", "embedding:")
# A URL ends before trailing sentence punctuation ("see www.x.org/a." keeps the period).
_URL_RE = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?]", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    """Collects visible text; entities are decoded by ``convert_charrefs``. (``<br/>`` goes
    through the inherited handle_startendtag: start then end, so ``<script/>`` skips nothing.)"""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag.startswith(_PROMPT_TAG_PREFIXES):
            self.parts.append(self.get_starttag_text() or "")
        elif tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS or tag == "img":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def _normalize(text: str) -> str:
    """Drop URLs, NFKC, replace control/format characters, collapse whitespace."""
    text = _URL_RE.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    # Zero-width spaces, BOMs, soft hyphens (Cf) and stray controls (Cc) only hide word boundaries.
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)
    return _WS_RE.sub(" ", text).strip()


def clean_text(text: str | None, *, is_html: bool = True) -> str:
    """Visible, normalized text of creator-written HTML (or plain text with ``is_html=False``).

    Tags are removed with the stdlib HTML parser (block tags become breaks so words
    do not fuse), ``<script>``/``<style>`` content is dropped, entities are decoded,
    URLs removed, the text NFKC-normalized (full-width Latin → ASCII) and whitespace
    collapsed to single spaces. Emoji and non-Latin scripts are kept.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidInputError(f"clean_text expects a string or None, got {type(text).__name__}")
    if is_html:
        parser = _TextExtractor()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts)
    else:
        text = html.unescape(text)
    return _normalize(text)


#: How often the name is repeated in a document: names are short and the most
#: telling part, so this doubles their BM25 term frequency, and it keeps them
#: ahead of the description, which an embedder may truncate (MiniLM: 256 tokens).
NAME_REPEAT = 2


def document_text(name: str | None, description: str | None) -> str:
    """The text a textual baseline indexes: ``"name. name. description"`` (cleaned).

    Names are plain text (only entities are decoded, so "<v2>" survives);
    descriptions are HTML.
    """
    clean_name = clean_text(name, is_html=False)
    parts = [clean_name] * NAME_REPEAT if clean_name else []
    clean_desc = clean_text(description)
    if clean_desc:
        parts.append(clean_desc)
    return ". ".join(parts)


# --------------------------------------------------------------------------- tokenizer

#: Bumped whenever tokenization changes, so cached indexes are rebuilt.
TOKENIZER_VERSION = 1

_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "too",
        "up",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    }
)
# Scripts written without spaces between words: Han (incl. ext. A, compatibility, ext. B+),
# iteration marks, Hiragana, Katakana (+ phonetic ext.), Hangul syllables and jamo.
_CJK_CLASS = (
    "\u3005-\u3007\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uac00-\ud7af\u1100-\u11ff\u3130-\u318f\U00020000-\U0003134f"
)
_CJK_SPLIT_RE = re.compile(f"([{_CJK_CLASS}]+)")


@lru_cache(maxsize=1)
def _word_re() -> re.Pattern[str]:
    """Letters/digits (no underscore: "pixel_art" is two words), continued by combining
    marks so Devanagari or Thai vowel signs do not split words. Built once, lazily."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)).startswith("M") and not (
            0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF  # emoji variation selectors
        ):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    marks = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(rf"[^\W_](?:[^\W_]|[{marks}])*")


def _light_stem(token: str) -> str:
    """English plural folding only ("sprites" → "sprite", "puppies" → "puppy", "boxes" → "box");
    safer than a full stemmer on names and trigger words."""
    if not token.isascii() or not token.isalpha():
        return token
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("sses", "xes", "ches", "shes")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def tokenize(text: str, *, min_len: int = 2, stem: bool = True) -> list[str]:
    """BM25 tokens of ``text``; queries and documents must go through the same call.

    NFKC + casefold, split on anything that is not a letter, digit or combining mark
    (underscores and apostrophes split too). Runs in CJK/Kana/Hangul scripts become
    character unigrams plus bigrams; other tokens shorter than ``min_len`` and English
    stopwords are dropped, and ``stem`` folds English plurals.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"tokenize expects a string, got {type(text).__name__}")
    tokens: list[str] = []
    for word in _word_re().findall(unicodedata.normalize("NFKC", text).casefold()):
        for i, piece in enumerate(_CJK_SPLIT_RE.split(word)):
            if not piece:
                continue
            if i % 2:  # odd pieces are the captured CJK runs
                tokens.extend(piece)
                tokens.extend(piece[j : j + 2] for j in range(len(piece) - 1))
            elif len(piece) >= min_len and piece not in _STOPWORDS:
                tokens.append(_light_stem(piece) if stem else piece)
    return tokens
