"""The rendered case files: HTML that makes no request and keeps hostile creator text literal,
its embedded data and hash, and one PDF that rasterizes, keeps the text and carries the data."""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from carlos.config import REPO_ROOT
from carlos.report.build import ReportConfig, build_case_file
from carlos.report.document import render_html
from carlos.report.export import render, verify
from carlos.report.integrity import DATA_ID, extract_html

from .conftest import HOSTILE, Upload

PAGES = REPO_ROOT / "artifacts" / "case-files"  # page 1 of the PDF, to look at (like the browser test's screenshots)
URL_ATTRS = {"src", "href", "srcset", "action", "formaction", "data", "poster", "background", "xlink:href", "ping", "manifest"}


class Dom(HTMLParser):
    """Every element with its attributes, and the text, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Dom:
    dom = Dom()
    dom.feed(page)
    dom.close()
    return dom


def html_of(upload: Upload, *keys: str, reveal: bool = False) -> str:
    case = build_case_file(upload.store, list(keys) or [upload.lora_id], ReportConfig(reveal=reveal))
    return render(case, "html").decode("utf-8")


def test_hostile_creator_text_stays_literal(upload: Upload) -> None:
    page = html_of(upload)
    dom = parse(page)
    names = [t for t, _ in dom.tags]
    assert "script" not in names and "iframe" not in names and "object" not in names and "a" not in names
    assert all(a.get("src", "").startswith("data:image/png;base64,") for t, a in dom.tags if t == "img")
    assert not [a for _, a in dom.tags if any(k.startswith("on") for k in a)]  # no event handler attribute
    text = "".join(dom.text)
    for hostile in HOSTILE:
        assert hostile in text  # shown as its characters ...
    assert HOSTILE[0] not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # ... because it is escaped
    assert "<img src=http" not in page and "javascript:" not in " ".join(str(v) for _, a in dom.tags for v in a.values())
    assert f"<title>CARLoS case file: {'&lt;script&gt;alert(1)&lt;/script&gt;'}</title>" in page
    assert verify(page.encode()).ok  # the escaped data block still holds the exact text


def test_the_html_makes_no_request(upload: Upload) -> None:
    page = html_of(upload, upload.lora_id, "130580", reveal=True)
    dom = parse(page)
    names = {t for t, _ in dom.tags}
    assert not names & {"link", "script", "iframe", "embed", "object", "base", "form", "video", "audio", "source"}
    for tag, attrs in dom.tags:
        for k, v in attrs.items():
            if k in URL_ATTRS and v:
                assert v.startswith("data:"), f"<{tag} {k}={v[:60]}>"
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert styles and not [s for s in styles if "url(" in s or "@import" in s]
    csp = next(a["content"] for t, a in dom.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert csp.startswith("default-src 'none'")
    assert "<svg" in page  # the per-category chart and the distributions are inline SVG
    assert sum(1 for t, _ in dom.tags if t == "img") == 3  # two pairs, one without a LoRA image


def test_embedded_data_is_the_hashed_data(upload: Upload) -> None:
    case = build_case_file(upload.store, ["130580"])
    page = render(case, "html").decode("utf-8")
    embedded, stated = extract_html(page)
    assert stated == case.sha256 and json.loads(embedded) == case.to_dict()
    assert render_html(json.loads(embedded), stated) == page  # the page is a function of its data
    value = repr(case.loras[0].measurements[0].strength)
    assert f'"strength":{value}' in embedded
    tampered = page.replace(f'"strength":{value}', '"strength":1.0', 1)
    res = verify(tampered.encode())
    assert not res.data_ok and not res.ok and res.stated_sha256 == case.sha256 != res.computed_sha256
    assert page.count(f'id="{DATA_ID}"') == 1


def test_pdf_rasterizes_keeps_text_literal_and_carries_its_data(upload: Upload, tmp_path: Path) -> None:
    """The one PDF test: pdftoppm renders page 1, pdftotext finds the names as characters,
    pdfdetach extracts the attached data, which verifies."""
    case = build_case_file(upload.store, [upload.lora_id])
    pdf = tmp_path / "case.pdf"
    pdf.write_bytes(render(case, "pdf"))
    assert pdf.read_bytes().startswith(b"%PDF")
    PAGES.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-r", "60", "-f", "1", "-l", "1", "-png", "-singlefile", str(pdf), str(PAGES / "page-1")], check=True, timeout=60
    )
    img = np.asarray(Image.open(PAGES / "page-1.png").convert("L"), dtype=np.float64)
    assert img.shape[0] > img.shape[1] > 200 and img.std() > 10 and (img < 100).mean() > 0.005  # an A4 page with text on it
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True, timeout=60).stdout
    for hostile in HOSTILE:
        assert hostile in text.replace("\n", " ") or hostile in text
    assert "Pixel Art XL" in text and case.sha256 in text.replace("\n", "")  # its nearest neighbour; the hash in the header
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"JavaScript:\s+no", info) and re.search(r"Pages:\s+[1-9]", info)
    subprocess.run(["pdfdetach", "-saveall", "-o", str(tmp_path), str(pdf)], check=True, timeout=60)
    attached = (tmp_path / "case-data.json").read_bytes()
    assert verify(attached).ok and json.loads(attached)["sha256"] == case.sha256
