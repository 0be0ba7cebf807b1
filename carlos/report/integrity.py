"""Tamper evidence of a case file: its data as canonical JSON, the sha256 over it, and checking both.

A case file's data (:meth:`carlos.report.case.CaseFile.to_dict`) is written as *canonical JSON*
(keys sorted, no insignificant whitespace, UTF-8, floats as Python's shortest round-trip repr, no
NaN), so the same data always gives the same bytes and the same sha256 wherever it is recomputed.
The HTML case file embeds that exact text (HTML-escaped, in ``<pre id="carlos-case-data">``) next
to the printed hash; :func:`verify_bytes` reads it back from an HTML or JSON case file, recomputes
the hash and, for HTML, renders the page again from the data to check that what a reader sees is
what the data says.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from carlos.errors import InvalidInputError

FORMAT = "carlos-case-file/1"
DATA_ID = "carlos-case-data"
HASH_ID = "carlos-case-sha256"


def plain(obj: Any) -> Any:
    """``obj`` as JSON-ready plain data: numpy scalars and arrays, tuples, timestamps and
    NaN/inf (as None) converted, so canonical JSON is defined for it."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [plain(v) for v in items]
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if hasattr(obj, "isoformat") and callable(obj.isoformat):  # pandas Timestamp
        return None if str(obj) == "NaT" else obj.isoformat()
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return plain(obj.tolist())
    if hasattr(obj, "item"):
        return plain(obj.item())
    return str(obj)


def canonical_json(data: Any) -> str:
    """The one text of ``data``: sorted keys, compact separators, non-ASCII kept, no NaN."""
    return json.dumps(plain(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(data: Any) -> str:
    """sha256 (hex) over the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def json_document(data: Mapping[str, Any]) -> str:
    """The JSON case file: the data with its sha256 (indented for reading; the hash is over
    the canonical form of ``data``, not over this layout)."""
    return json.dumps({"format": FORMAT, "sha256": digest(data), "data": plain(data)}, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_bytes` found."""

    kind: str  # "html" or "json"
    stated_sha256: str | None  # printed in the file
    computed_sha256: str  # over the embedded data
    data_ok: bool  # the data hashes to the printed sha256
    rendering_ok: bool | None  # HTML only: the page is exactly what the data renders to
    message: str

    @property
    def ok(self) -> bool:
        return self.data_ok and self.rendering_ok is not False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stated_sha256": self.stated_sha256,
            "computed_sha256": self.computed_sha256,
            "data_ok": self.data_ok,
            "rendering_ok": self.rendering_ok,
            "ok": self.ok,
            "message": self.message,
        }


class _Extractor(HTMLParser):
    """Text of the elements with the data and hash ids (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[str, list[str]] = {}
        self.current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident in (DATA_ID, HASH_ID):
            self.current = ident
            self.found.setdefault(ident, [])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "code"):
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None:
            self.found[self.current].append(data)


def extract_html(text: str) -> tuple[str, str | None]:
    """(embedded canonical JSON text, printed sha256) of an HTML case file; raises
    InvalidInputError when the file has no data block."""
    parser = _Extractor()
    parser.feed(text)
    parser.close()
    if DATA_ID not in parser.found:
        raise InvalidInputError(f"no <pre id={DATA_ID!r}> data block: not a CARLoS HTML case file")
    stated = "".join(parser.found.get(HASH_ID, [])).strip() or None
    return "".join(parser.found[DATA_ID]), stated


def verify_bytes(content: bytes, *, render: Any = None) -> Verification:
    """Check a JSON or HTML case file. ``render(data, sha256) -> str`` (the HTML renderer)
    lets an HTML file also be checked for edits outside its data block."""
    if content.startswith(b"%PDF"):
        raise InvalidInputError(
            "a PDF case file carries its data as the attachment case-data.json: extract it "
            "(`pdfdetach -saveall FILE.pdf`) and verify that, or verify the HTML case file"
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("not a CARLoS case file: not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"not a CARLoS JSON case file: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or "data" not in doc:
            raise InvalidInputError(f"not a CARLoS JSON case file (format {FORMAT!r} with data and sha256)")
        computed = digest(doc["data"])
        stated = doc.get("sha256")
        ok = computed == stated
        return Verification("json", stated, computed, ok, None, _message(ok, None, stated, computed))
    embedded, stated = extract_html(text)
    computed = hashlib.sha256(embedded.encode("utf-8")).hexdigest()
    try:
        data = json.loads(embedded)
    except json.JSONDecodeError as e:
        return Verification("html", stated, computed, False, False, f"the embedded data is not JSON: {e}")
    data_ok = computed == stated and canonical_json(data) == embedded
    rendering_ok = None if render is None or not data_ok else render(data, computed) == text
    return Verification("html", stated, computed, data_ok, rendering_ok, _message(data_ok, rendering_ok, stated, computed))


def _message(data_ok: bool, rendering_ok: bool | None, stated: str | None, computed: str) -> str:
    if not data_ok:
        return f"TAMPERED: the data hashes to {computed}, the file states {stated}"
    if rendering_ok is False:
        return (
            f"the data verifies ({computed}) but the page is not what it renders to: edited outside "
            "the data block, or made by another code version (see its provenance)"
        )
    return f"verified: sha256 {computed}" + (", and the page is exactly what its data renders to" if rendering_ok else "")
