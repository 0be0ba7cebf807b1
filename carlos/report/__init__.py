"""Case files: what a reviewer hands on about one or more LoRAs, reproducible and tamper-evident.

The typed case file (``case``), assembled from the services (``build``, with the neighbour
sections in ``neighbours`` and provenance in ``provenance``), its canonical JSON and sha256
(``integrity``), and its renderings: a self-contained HTML page (``document``, with inline SVG
``charts``), a PDF (``pdf``, WeasyPrint) and JSON; ``export`` is the one call the CLI and the
dashboard make.
"""

from __future__ import annotations

from carlos import exports

__all__ = ["CaseFile", "ReportConfig", "build_case_file", "case_file", "verify"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "CaseFile": "case",
        "ReportConfig": "build",
        "build_case_file": "build",
        "case_file": "export",
        "verify": "export",
    },
)
