"""Creator text is inert on every page (AppTest): a LoRA whose name, description, trigger word,
declared metadata and upload file name combine a Markdown link to ``javascript:``, a Markdown
image on a loopback address, HTML tags, a spreadsheet formula, LaTeX, an emoji shortcode and a
colour directive. Each Markdown element that shows it must render (CommonMark, raw HTML on) to
its characters only; plain-text widgets show it unchanged; the CSV export neutralizes it."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from carlos.config import CORPUS_EMBEDDER, REPO_ROOT
from carlos.core.untrusted import WORD_JOINER, markdown_code, markdown_literal, plotly_literal
from carlos.files.testing import make_test_lora
from carlos.review import workflow as review
from carlos.store.catalog import load_view
from carlos.store.store import Store

APP = str(REPO_ROOT / "streamlit_app.py")
MARK = "zyxhostile"  # a word in every hostile string, to find the elements that show one
HOSTILE = (
    f'=HYPERLINK("http://evil","x") {MARK} [click](javascript:alert(1)) ![x](http://127.0.0.1:9/pixel.png) '
    '<b>bold</b> <img src="http://127.0.0.1:9/img.png"> :red[colour] $x^2$ :smile: www.evil.example'
)
HID = "sha256:" + "e1" * 32
PIXEL = "civitai:130580"
CONTRADICTION = f"metadata declares SD 1.5 (modelspec.architecture={HOSTILE}) but the tensors are SDXL"

MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
EMOJI = re.compile(r":\+1:|:-1:|:[A-Za-z0-9_-]+:")
URL = re.compile(r"(https?://|www(?=\.))[-.A-Za-z0-9_]+", re.IGNORECASE)
#: Elements whose text Streamlit renders as Markdown, and the attributes holding it.
MARKDOWN_ELEMENTS = {
    **{k: ("value",) for k in ("title", "header", "subheader", "caption", "markdown", "info", "warning", "error", "success", "toast")},
    "metric": ("label", "value"),
    "expander": ("label",),
    "tab": ("label",),
    "button": ("label",),
    "toggle": ("label",),
    "checkbox": ("label",),
    "radio": ("label", "options"),
}


@pytest.fixture(scope="module")
def hostile_db(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real store with one hostile upload: behaves like Pixel Art XL (so it is
    its neighbour and near-duplicate), flagged with a hostile note and claimed by bob."""
    db = tmp_path_factory.mktemp("hostile") / "carlos.duckdb"
    shutil.copy(real_store_path, db)
    store = Store.open(db)
    report = {
        "format": "kohya",
        "base_family": "sdxl",
        "declared_base": "sd15",
        "rank": 4,
        "trigger_words": [HOSTILE],
        "contradictions": [CONTRADICTION],
        "metadata": {"modelspec.title": HOSTILE, "ss_output_name": HOSTILE},
    }
    row = {"lora_id": HID, "source": "upload", "name": HOSTILE, "description": f"<p>{HOSTILE}</p>", "sha256": HID[7:]}
    store.loras.upsert([{**row, "file_report": report, "trigger_words": [HOSTILE], "folder_name": HOSTILE}])
    view = load_view(store)
    direction = view.matrix[view.row_of(PIXEL)] * 1.01
    store.reps.put(HID, CORPUS_EMBEDDER, direction, 4.0, 0.2, 16, {"protocol": "smoke", "backend": "tiny"})
    store.review.append_decision(HID, "bob", "flag", "unreviewed", "flagged", HOSTILE)
    assert store.review.claim(HID, "bob") == "bob"
    return db


def start(db: Path, monkeypatch: pytest.MonkeyPatch, page: str, **params: str) -> AppTest:
    monkeypatch.setenv("CARLOS_DB", str(db))
    monkeypatch.setenv("CARLOS_REVIEWER", "ada")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.query_params.update(params)
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_sources(at: AppTest) -> Iterator[str]:
    """Every string on the page (main and sidebar) that Streamlit renders as Markdown."""
    for kind, attrs in MARKDOWN_ELEMENTS.items():
        for element in at.get(kind):
            for attr in attrs:
                value = getattr(element, attr, None)
                yield from (value if isinstance(value, list) else [value] if isinstance(value, str) else [])
    yield from (link.proto.label for link in at.get("page_link"))


def rendered(source: str) -> str:
    """What a reader sees of ``source``, asserting that nothing in it renders as markup: only
    paragraphs and code spans, no emoji shortcode, bare URL or ``:material/`` outside code,
    no unescaped ``$`` (LaTeX) or ``:name`` (Streamlit directives)."""
    out = MD.render(source)
    assert set(re.findall(r"<([a-z][a-z0-9]*)", out)) <= {"p", "code"}, out
    prose = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<code>.*?</code>", "", out, flags=re.S)))
    assert not EMOJI.search(prose) and not URL.search(prose) and ":material/" not in prose, prose
    if "`" not in source:  # outside a code span every $ and directive colon is escaped
        assert not re.search(r"(?<!\\)(?:\\\\)*[$]|(?<!\\)(?:\\\\)*:[A-Za-z:\[]", source), source
    return html.unescape(re.sub(r"<[^>]+>", "", out)).replace(WORD_JOINER, "").strip()


def hostile_texts(at: AppTest) -> list[str]:
    """The visible text of every Markdown element showing hostile text, each checked inert."""
    return [rendered(s) for s in markdown_sources(at) if MARK in s]


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(t.value for t in at.dataframe if column in t.value.columns)


def test_detail_page_shows_every_hostile_field_as_text(hostile_db: Path, monkeypatch) -> None:
    at = start(hostile_db, monkeypatch, "detail", lora=HID)
    assert [t.value for t in at.title] == [markdown_literal(HOSTILE)]
    shown = hostile_texts(at)
    assert HOSTILE in shown  # the title, exactly its characters
    assert f"Metadata contradicts the tensors: {CONTRADICTION}" in shown
    # plain-text widgets show the raw characters: select box option, description, table cells, JSON
    assert f"{HOSTILE} ({HID})" in at.selectbox(key="detail_lora").options
    assert MARK in at.expander[0].text[0].value
    declared = frame_with(at, "field").set_index("field")["value"]
    assert declared["trigger words"] == str([HOSTILE])
    assert json.loads(next(j.proto.body for j in at.json))["modelspec.title"] == HOSTILE
    assert not at.get("html")  # nothing on this page is raw HTML

    # its neighbour's page lists it, as a plain table cell
    at = start(hostile_db, monkeypatch, "detail", lora=PIXEL)
    assert HOSTILE in set(frame_with(at, "rank")["name"])
    assert hostile_texts(at) == []

    # a shared link carrying the text: refused, and quoted as inert code
    at = start(hostile_db, monkeypatch, "detail", lora=HOSTILE)
    note = [c.value for c in at.sidebar.caption if "Ignored the link" in c.value]
    assert note == [f"Ignored the link's {markdown_code('lora=' + HOSTILE)}: not a valid value."]
    assert f"lora={HOSTILE}" in rendered(note[0])


def test_search_page_hit_is_text(hostile_db: Path, monkeypatch) -> None:
    at = start(hostile_db, monkeypatch, "search", q=MARK, r="bm25")
    hits = frame_with(at, "score")
    assert hits["name"].iloc[0] == HOSTILE and hits["open"].iloc[0] == f"detail?lora={HID}"  # a plain cell, our link
    assert hostile_texts(at) == []  # shown in the table only


def test_risk_page_hover_and_skip_message_are_text(hostile_db: Path, monkeypatch) -> None:
    at = start(hostile_db, monkeypatch, "risk", sel=HID)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [cd[1] for trace in spec["data"] for cd in trace.get("customdata", []) if cd[0] == HID]
    assert names and set(names) == {plotly_literal(HOSTILE)} and "<" not in names[0]
    assert f"{HOSTILE} ({HID})" in at.multiselect(key="risk_sel").options
    assert frame_with(at, "risk_class")["name"].tolist() == [HOSTILE]
    # bulk flagging skips it (claimed by bob) and says so, naming it as text
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert any(t == f"Skipped {HOSTILE}: claimed by bob." for t in hostile_texts(at)), hostile_texts(at)


def test_review_page_and_csv_export(hostile_db: Path, monkeypatch) -> None:
    at = start(hostile_db, monkeypatch, "review", cos="0.99")
    queue = frame_with(at, "near_duplicates").set_index("name")
    assert queue.loc[HOSTILE, "claim"] == "bob" and queue.loc[HOSTILE, "note"] == HOSTILE
    log = frame_with(at, "change")
    assert HOSTILE in set(log["name"]) and HOSTILE in set(log["note"])
    assert hostile_texts(at) == []  # nothing but tables and plain options shows it here
    assert HOSTILE in at.selectbox(key="rq_reviewer").options or "bob" in at.selectbox(key="rq_reviewer").options

    exported = pd.read_csv(io.BytesIO(review.export_audit_log(Store.open(hostile_db), "csv")))
    row = exported[exported["lora_id"] == HID].iloc[0]
    assert row["name"] == "'" + HOSTILE and row["note"] == "'" + HOSTILE


def test_characterize_page_shows_hostile_upload_names_as_text(hostile_db: Path, monkeypatch, tmp_path: Path) -> None:
    at = start(hostile_db, monkeypatch, "characterize")
    # refused by its extension: the error quotes the name
    at.file_uploader[0].set_value((f"{HOSTILE}.ckpt", b"PK\x03\x04 not a pickle to open", "application/octet-stream")).run()
    assert not at.exception
    shown = hostile_texts(at)
    assert f"File: {HOSTILE}.ckpt" in shown
    assert any(t.startswith("Refused: ") and MARK in t for t in shown), shown

    # accepted: a valid LoRA whose name and declared metadata are hostile
    lora = make_test_lora(
        tmp_path / "x.safetensors",
        seed=3,
        metadata={"ss_output_name": HOSTILE, "ss_num_epochs": HOSTILE, "modelspec.architecture": f"stable-diffusion-v1 {HOSTILE}"},
    )
    at.file_uploader[0].set_value((f"{HOSTILE}.safetensors", lora.read_bytes(), "application/octet-stream")).run()
    assert not at.exception and not at.error
    shown = hostile_texts(at)
    assert f"File: {HOSTILE}.safetensors" in shown
    assert any(t.startswith("Declared metadata contradicts the tensors:") for t in shown), shown
    assert any(t.startswith("⚠️ metadata ss_num_epochs=") for t in shown), shown
    assert json.loads(next(j.proto.body for j in at.json))["ss_output_name"] == HOSTILE
