"""The PDF case file: the HTML case file laid out by WeasyPrint, with the data attached.

WeasyPrint (PyPI) lays out HTML and CSS itself, in process, in well under a second for a case
file; it needs Pango (``libpango-1.0-0``, ``libpangoft2-1.0-0``), which Debian's Chromium already
depends on and ``scripts/install-chromium.sh`` installs with it. It never fetches anything here:
the URL fetcher allows ``data:`` URIs only. The canonical JSON data travels inside the PDF as the
attachment ``case-data.json`` (``pdfdetach -saveall`` extracts it for ``report --verify``).
"""

from __future__ import annotations

import logging
from typing import Any

from carlos.errors import CarlosError

ATTACHMENT = "case-data.json"
log = logging.getLogger(__name__)


class MissingGlyphs(logging.Filter):
    """Collects WeasyPrint's one-warning-per-character "no font for U+…" messages, to say once."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "unsupported by fonts" in record.getMessage():
            self.count += 1
            return False
        return True


class PdfUnavailableError(CarlosError):
    """WeasyPrint or the Pango libraries it needs are missing on this machine."""


def weasyprint_module() -> Any:
    """WeasyPrint, or :class:`PdfUnavailableError` saying what to install."""
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)  # one line per layout step otherwise
    try:
        import weasyprint
    except (ImportError, OSError) as e:  # OSError: the Pango shared libraries are missing
        raise PdfUnavailableError(
            f"PDF case files need WeasyPrint and Pango ({e}); install requirements.txt and the Debian packages "
            "libpango-1.0-0 libpangoft2-1.0-0 (sh scripts/install-chromium.sh does), or write --format html"
        ) from None
    return weasyprint


def html_to_pdf(html_text: str, *, attachment_json: str | None = None) -> bytes:
    """Lay out ``html_text`` as A4 pages; ``attachment_json`` is attached as :data:`ATTACHMENT`."""
    wp = weasyprint_module()
    fetcher = wp.URLFetcher(allowed_protocols=["data"])
    attachments = []
    if attachment_json is not None:
        attachments.append(
            wp.Attachment(string=attachment_json, name=ATTACHMENT, description="the case file's data (canonical JSON)", url_fetcher=fetcher)
        )
    glyphs, wp_log = MissingGlyphs(), logging.getLogger("weasyprint")
    wp_log.addFilter(glyphs)
    try:
        out = wp.HTML(string=html_text, url_fetcher=fetcher, media_type="print").write_pdf(attachments=attachments or None)
    finally:
        wp_log.removeFilter(glyphs)
    if glyphs.count:
        log.warning("%d characters have no font on this machine and print as boxes (CJK: install fonts-noto-cjk)", glyphs.count)
    if not isinstance(out, bytes):
        raise PdfUnavailableError("WeasyPrint returned no PDF bytes")
    return out
