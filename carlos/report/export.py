"""Case files as bytes: the one call the CLI and the dashboard's download buttons make.

:func:`case_file` builds a :class:`~carlos.report.case.CaseFile` and renders it as JSON, HTML
or PDF; :func:`verify` checks a JSON or HTML case file (hash of the data, and that the HTML
page is what its data renders to).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carlos.config import Thresholds
from carlos.errors import CarlosError, InvalidInputError
from carlos.report.build import ReportConfig, build_case_file
from carlos.report.case import CaseFile
from carlos.report.document import render_html
from carlos.report.integrity import Verification, json_document, verify_bytes

if TYPE_CHECKING:
    from carlos.store.store import Store

FORMATS = ("html", "pdf", "json")
MIME = {"html": "text/html", "pdf": "application/pdf", "json": "application/json"}


@dataclass(frozen=True)
class CaseFileExport:
    """A rendered case file, ready to write or to download."""

    content: bytes
    format: str
    file_name: str
    mime: str
    sha256: str  # of the data (printed in the file), not of these bytes
    lora_ids: list[str]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown case file format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def render(case: CaseFile, fmt: str) -> bytes:
    """The case file in ``fmt`` (html, pdf, json)."""
    check_format(fmt)
    data, sha = case.to_dict(), case.sha256
    if fmt == "json":
        return json_document(data).encode("utf-8")
    page = render_html(data, sha)
    if fmt == "html":
        return page.encode("utf-8")
    from carlos.report.pdf import html_to_pdf

    return html_to_pdf(page, attachment_json=json_document(data))


def file_name(case: CaseFile, fmt: str) -> str:
    """``carlos-case-civitai-130580.html``; several LoRAs: the first and a count."""
    return download_name([c.identification.lora_id for c in case.loras], fmt)


def download_name(lora_ids: Sequence[str], fmt: str) -> str:
    """The file name of the case file of these (resolved) LoRA ids, safe on every file system."""
    ids = list(dict.fromkeys(lora_ids)) or ["empty"]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", ids[0])[:60].strip("-.") or "lora"
    more = f"-and-{len(ids) - 1}-more" if len(ids) > 1 else ""
    return f"carlos-case-{stem}{more}.{check_format(fmt)}"


def case_file(
    store: Store,
    keys: Sequence[str | int],
    fmt: str = "html",
    config: ReportConfig | None = None,
) -> CaseFileExport:
    """Build and render the case file of ``keys`` (lora_id, Civitai version id or sha256)."""
    check_format(fmt)
    case = build_case_file(store, keys, config)
    return CaseFileExport(
        content=render(case, fmt),
        format=fmt,
        file_name=file_name(case, fmt),
        mime=MIME[fmt],
        sha256=case.sha256,
        lora_ids=[c.identification.lora_id for c in case.loras],
    )


def case_bytes(
    store: Store,
    keys: Sequence[str | int],
    fmt: str,
    *,
    thresholds: Thresholds | None = None,
    reveal: bool = False,
    generated_by: str | None = None,
) -> bytes:
    """The rendered case file only: what a dashboard download button calls when clicked."""
    config = ReportConfig(thresholds=thresholds, reveal=reveal, generated_by=generated_by)
    return case_file(store, keys, fmt, config).content


@functools.lru_cache(maxsize=1)
def pdf_available() -> bool:
    """Whether this machine can write PDF case files (WeasyPrint and Pango load)."""
    from carlos.report.pdf import weasyprint_module

    try:
        weasyprint_module()
    except CarlosError:
        return False
    return True


def download_formats() -> tuple[str, ...]:
    """The formats the dashboard offers: HTML and PDF, or HTML and JSON where PDF cannot be made."""
    return ("html", "pdf") if pdf_available() else ("html", "json")


def verify(content: bytes) -> Verification:
    """Check a JSON or HTML case file: the data hashes to the printed sha256 and (HTML) the
    page is exactly what that data renders to."""
    return verify_bytes(content, render=render_html)
