"""The HTML case file: one self-contained page rendered from the case file's data alone.

:func:`render_html` takes the plain data (:meth:`CaseFile.to_dict`) and its sha256, so the
page shows nothing the hash does not cover and :func:`carlos.report.integrity.verify_bytes` can
render it again to detect an edit anywhere in the page. Self-contained: CSS inline, images as
``data:`` URIs, charts as inline SVG, no script, no link, no remote source, and a
Content-Security-Policy that forbids any request. Every string from the data goes through
:func:`html.escape`; creator text is never interpreted as HTML or Markdown and URLs are printed
as text, not links.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from carlos.report import charts
from carlos.report.integrity import DATA_ID, HASH_ID, canonical_json

MAX_VALUE_CHARS = 1500  # a metadata value longer than this is cut on the page (whole in the data block)

CSS = """
@page { size: A4; margin: 14mm 12mm 16mm 12mm;
  @bottom-left { content: "CARLoS case file · sha256 " string(sha); font: 7pt "DejaVu Sans", sans-serif; color: #666; }
  @bottom-right { content: "page " counter(page) " of " counter(pages); font: 7pt "DejaVu Sans", sans-serif; color: #666; } }
body { font-family: "DejaVu Sans", "Noto Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", Arial, sans-serif; font-size: 10pt;
  color: #222; max-width: 980px; margin: 0 auto; padding: 12px; line-height: 1.35; }
h1 { font-size: 17pt; margin: 0 0 2px 0; } h2 { font-size: 13pt; margin: 18px 0 6px; border-bottom: 1px solid #ccd; }
h3 { font-size: 11pt; margin: 12px 0 4px; } .muted { color: #666; } .small { font-size: 8.5pt; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; } th, td { border: 1px solid #d5d9e0;
  padding: 3px 5px; text-align: left; vertical-align: top; font-size: 9pt; }
td { overflow-wrap: break-word; } th { background: #f1f3f6; font-weight: 600; font-size: 8.5pt; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 28%; } .cards { display: flex; gap: 8px; flex-wrap: wrap; margin: 6px 0; }
.card { border: 1px solid #ccd; border-radius: 4px; padding: 5px 9px; min-width: 150px; }
.card b { display: block; font-size: 12.5pt; } .warn { color: #a4282b; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; word-break: break-all; }
.sha { string-set: sha content(); } section.lora { page-break-before: always; } section.lora.first { page-break-before: auto; }
.pairs { display: flex; flex-wrap: wrap; gap: 8px; } figure { margin: 0; width: 220px; }
figure img { width: 105px; height: 105px; object-fit: cover; border: 1px solid #ccd; }
figcaption { font-size: 8pt; } .charts { display: flex; gap: 12px; flex-wrap: wrap; }
pre.data { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 7pt; max-height: 320px; overflow: auto; background: #f6f7f9; }
@media print { .screen-only { display: none; } body { max-width: none; padding: 0; } }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def e(value: Any) -> str:
    """Escaped text of any value; None is a dash."""
    return "—" if value is None else escape(str(value), quote=True)


def fnum(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"


def pct(value: Any) -> str:
    return "—" if value is None else f"p{float(value):.0f}"


def interval(bounds: Sequence[float] | None, digits: int) -> str:
    return "no interval" if not bounds else f"{bounds[0]:.{digits}f}–{bounds[1]:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, classes: Sequence[str] = ()) -> str:
    """An HTML table; cells are already-escaped HTML, ``classes`` per column (e.g. "num")."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{classes[i]}">{c}</td>' if i < len(classes) and classes[i] else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table; values are already-escaped HTML."""
    return '<table class="kv"><tbody>' + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</tbody></table>"


def value_text(value: Any) -> str:
    """A metadata value as escaped text (JSON for structures), cut at :data:`MAX_VALUE_CHARS`."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_VALUE_CHARS:
        return (
            e(text[:MAX_VALUE_CHARS]) + f' <span class="muted">… ({len(text) - MAX_VALUE_CHARS:,} more characters in the data block)</span>'
        )
    return e(text)


def headline(case: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ms = case["measurements"]
    return ms[0] if ms else None


def render_html(data: Mapping[str, Any], sha256: str) -> str:
    """The whole page (a str; write it as UTF-8). The data is read in its canonical form (keys
    sorted), so the page rendered from a parsed case file is byte for byte the original."""
    data = json.loads(canonical_json(data))
    loras = data["loras"]
    title = loras[0]["identification"]["name"] or loras[0]["identification"]["lora_id"] if len(loras) == 1 else f"{len(loras)} LoRAs"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>CARLoS case file: {e(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>CARLoS case file: {e(title)}</h1>",
        '<p class="small">Generated at <b>'
        + e(data["generated_at"])
        + "</b>"
        + (f" by {e(data['generated_by'])}" if data.get("generated_by") else "")
        + f' · sha256 of the data <code class="sha">{e(sha256)}</code></p></header>',
        summary(loras),
    ]
    for i, case in enumerate(loras):
        parts.append(lora_section(case, data, first=i == 0))
    parts += [thresholds_section(data["thresholds"]), provenance_section(data["provenance"]), integrity_section(data, sha256)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def summary(loras: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in loras:
        ident, m = c["identification"], headline(c)
        rows.append(
            [
                e(ident["name"]),
                f"<code>{e(ident['lora_id'])}</code>",
                fnum(m and m["strength"]),
                fnum(m and m["consistency"], 4),
                e(m["risk_class"] if m else "not characterized"),
                e(m["risk_confidence"] if m else None),
                e(c["review_status"]),
            ]
        )
    header = ["LoRA", "id", "Strength", "Consistency", "risk class", "risk (confidence)", "review status"]
    return "<h2>Summary</h2>" + table(header, rows, classes=["", "", "num", "num"])


def lora_section(case: Mapping[str, Any], data: Mapping[str, Any], *, first: bool) -> str:
    ident, m = case["identification"], headline(case)
    t = data["thresholds"]
    out = [f'<section class="lora{" first" if first else ""}">', f"<h2>{e(ident['name'] or ident['lora_id'])}</h2>"]
    if m is not None:
        out.append(
            '<div class="cards">'
            f'<div class="card">Strength<b>{fnum(m["strength"])}</b>{pct(m["strength_pct"])} of {m["space_size"]}</div>'
            f'<div class="card">Consistency<b>{fnum(m["consistency"], 4)}</b>{pct(m["consistency_pct"])} of {m["space_size"]}</div>'
            f'<div class="card">Risk class<b>{e(m["risk_class"])}</b>{e(m["risk_confidence"])}</div>'
            f'<div class="card">Review status<b>{e(case["review_status"])}</b>'
            + (f"claimed by {e(case['claimed_by'])}" if case.get("claimed_by") else "unclaimed")
            + "</div></div>"
        )
    out.append("<h3>Identification</h3>" + identification(ident))
    out.append(declared(ident.get("declared")))
    out.append("<h3>Measurements</h3>" + measurements(case["measurements"], t))
    for section in case["neighbours"]:
        out.append(neighbours(section))
    out.append("<h3>Per-category Strength</h3>")
    svg = charts.category_bars(case["category_strength"], case["category_overall"])
    out.append(svg + f'<p class="small muted">{e(case["category_note"])}</p>')
    out.append("<h3>Image pairs</h3>" + image_pairs(case["image_pairs"]) + f'<p class="small muted">{e(case["image_note"])}</p>')
    out.append("<h3>Review history and audit entries</h3>" + audit(case["audit"]))
    out.append("</section>")
    return "\n".join(out)


def identification(ident: Mapping[str, Any]) -> str:
    rows = [
        ("name", e(ident["name"])),
        ("lora id", f"<code>{e(ident['lora_id'])}</code>"),
        ("Civitai model / version", f"{e(ident['model_id'])} / {e(ident['version_id'])}"),
        ("Civitai page (not linked)", f'<span class="mono">{e(ident["civitai_url"])}</span>'),
        ("source", e(ident["source"])),
        ("folder / file name", f"{e(ident['folder_name'])} / {e(ident['file_name'])}"),
        ("file sha256", f"<code>{e(ident['sha256'])}</code>"),
        ("AutoV2 (Civitai's short hash)", f"<code>{e(ident['autov2'])}</code>"),
        ("file size", "—" if ident["file_size_bytes"] is None else f"{ident['file_size_bytes']:,} bytes"),
        ("file check", e(ident["file_check"])),
        ("trigger words", e(", ".join(ident["trigger_words"])) if ident["trigger_words"] else "none declared"),
        ("NSFW (Civitai)", e(ident["nsfw"])),
        ("downloads", "—" if ident["download_count"] is None else f"{ident['download_count']:,}"),
        ("creator's description (plain text)", value_text(ident["description"]) if ident["description"] else "—"),
    ]
    return kv(rows)


def declared(decl: Mapping[str, Any] | None) -> str:
    if not decl:
        return '<p class="small muted">No file: nothing declared beyond the corpus metadata.</p>'
    rows = [(k, value_text(v)) for k, v in decl.items() if k not in ("metadata", "contradictions", "warnings")]
    rows += [("contradiction", f'<span class="warn">{e(c)}</span>') for c in decl.get("contradictions") or []]
    rows += [("warning", e(w)) for w in decl.get("warnings") or []]
    meta = decl.get("metadata") or {}
    out = "<h3>What the file declares</h3>" + kv(rows)
    if meta:
        out += "<h3>Declared metadata</h3>" + kv((k, value_text(v)) for k, v in sorted(meta.items()))
    return out


def measurements(ms: Sequence[Mapping[str, Any]], t: Mapping[str, Any]) -> str:
    if not ms:
        return '<p class="muted">Not characterized: no Direction, Strength or Consistency for this LoRA.</p>'
    rows = []
    for m in ms:
        rows.append(
            [
                f"{e(m['embedder'])} (#{m['rep_id']})",
                fnum(m["strength"]),
                e(interval(m["strength_interval"], 3)),
                pct(m["strength_pct"]),
                fnum(m["consistency"], 4),
                e(interval(m["consistency_interval"], 4)),
                pct(m["consistency_pct"]),
                e(m["risk_confidence"]),
                str(m["n_samples"]),
                e(m["provenance"]["protocol"]),
            ]
        )
    header = ["space", "Strength", "95% interval", "pct", "Consistency", "95% interval", "pct", "risk (confidence)", "pairs", "protocol"]
    out = [table(header, rows, classes=["", "num", "num", "num", "num", "num", "num", "", "num"])]
    for m in ms:
        notes = [m["comparability"], *m["excluded_because"], *m["flags"]]
        if m["expected_cosine"] is not None:
            notes.append(f"expected cosine of this Direction to the full protocol's: {m['expected_cosine']:.4f}")
        out.append(f'<p class="small">{e(m["embedder"])} (#{m["rep_id"]}): ' + "; ".join(e(n) for n in notes) + "</p>")
    head = ms[0]
    out.append(
        '<div class="charts">'
        + charts.distribution_strip(
            head.get("strength_distribution"),
            head["strength"],
            label=f"Strength among {head['space_size']} LoRAs",
            threshold=t["strength_max"],
        )
        + charts.distribution_strip(
            head.get("consistency_distribution"),
            head["consistency"],
            label=f"Consistency among {head['space_size']} LoRAs",
            threshold=t["consistency_min"],
        )
        + "</div>"
    )
    out.append(
        '<p class="small muted">Percentiles: share of the LoRAs in the same space at or below this value. 95% intervals: of the '
        "full-protocol value, with this run's prompts as the independent draws; corpus rows have no per-pair data and no interval.</p>"
    )
    return "\n".join(out)


def neighbours(section: Mapping[str, Any]) -> str:
    title = (
        "Behaves like … (by behaviour: Direction cosine)" if section["kind"] == "behaviour" else "Similar weights (by weight fingerprint)"
    )
    if not section["available"]:
        return f'<h3>{e(title)}</h3><p class="muted">{e(section["message"])}</p>'
    if section["kind"] == "weights":
        rows = [
            [str(h["rank"]), e(h["name"]), f"<code>{e(h['lora_id'])}</code>", fnum(h["score"]), e("; ".join(h["flags"]))]
            for h in section["hits"]
        ]
        header, classes = ["#", "LoRA", "id", "cosine", "relation"], ["num", "", "", "num"]
    else:
        rows = [
            [
                str(h["rank"]),
                e(h["name"]),
                f"<code>{e(h['lora_id'])}</code>",
                fnum(h["score"]),
                fnum(h["strength"], 2),
                fnum(h["consistency"], 3),
                e("; ".join(h["excluded_because"] + h["flags"])),
            ]
            for h in section["hits"]
        ]
        header, classes = ["#", "LoRA", "id", "cosine", "Strength", "Consistency", "flags"], ["num", "", "", "num", "num", "num"]
    return f'<h3>{e(title)}</h3><p class="small">{e(section["message"])}</p>' + table(header, rows, classes=classes)


def image_pairs(pairs: Sequence[Mapping[str, Any]]) -> str:
    cells = []
    for p in pairs:
        imgs = "".join(
            f'<img alt="{label}" src="data:image/png;base64,{e(b64)}">' if b64 else f'<span class="small">no {label} image</span>'
            for label, b64 in (("base", p["base_png"]), ("LoRA", p["lora_png"]))
        )
        cap = f"{p['category'] or ''} · seed {p['seed']} · {p['prompt'] or ''}"
        cells.append(f"<figure>{imgs}<figcaption>{e(cap)}</figcaption></figure>")
    return f'<div class="pairs">{"".join(cells)}</div>' if cells else ""


def audit(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">No decisions, claims or releases on this LoRA yet.</p>'
    return table(
        ["#", "when", "event", "reviewer", "action", "status", "note"],
        (
            [
                str(d["id"]),
                e(d["at"]),
                e(d["event"]),
                e(d["reviewer"]),
                e(d["action"]),
                e(f"{d['status_before']} → {d['status_after']}"),
                e(d["note"]),
            ]
            for d in rows
        ),
        classes=["num"],
    )


def thresholds_section(t: Mapping[str, Any]) -> str:
    out = [
        "<section><h2>Thresholds in force</h2>",
        kv(
            [
                ("Strength at most", e(t["strength_max"] if t["strength_max"] is not None else "no Strength filter")),
                ("Consistency at least", e(t["consistency_min"] if t["consistency_min"] is not None else "no Consistency filter")),
                ("where they come from", e(t["origin"])),
            ]
        ),
        "<h3>Saved thresholds (audit trail, newest first)</h3>",
    ]
    if t["history"]:
        out.append(
            table(
                ["#", "when", "reviewer", "Strength at most", "Consistency at least", "note"],
                (
                    [
                        str(h["setting_id"]),
                        e(h["created_at"]),
                        e(h["reviewer"]),
                        e(h["strength_max"]),
                        e(h["consistency_min"]),
                        e(h["note"]),
                    ]
                    for h in t["history"]
                ),
                classes=["num"],
            )
        )
    else:
        out.append('<p class="muted">No reviewer has saved thresholds.</p>')
    return "\n".join(out) + "</section>"


def provenance_section(p: Mapping[str, Any]) -> str:
    rows = [
        ("store", f"{e(p['store_file'])}, data version {e(p['data_version'])}, schema version {e(p['schema_version'])}"),
        ("code", f"{e(p['code_version'])}, commit {e(p['git_commit'])}"),
    ]
    rows += [
        ("corpus import", e(f"{i.get('source')}: {i.get('rows')} rows, sha256 {i.get('file_sha256')}, imported {i.get('imported_at')}"))
        for i in p["corpus_imports"]
    ]
    rows += [
        (f"prompt set {name}", "<br>".join(f"{e(k)}: {value_text(x)}" for k, x in v.items()))
        for name, v in sorted(p["prompt_sets"].items())
    ]
    return "<section><h2>Provenance</h2>" + kv(rows) + "</section>"


def measurement_provenance(loras: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for c in loras:
        for m in c["measurements"]:
            rows = [(k.replace("_", " "), value_text(v)) for k, v in m["provenance"].items() if v is not None]
            out.append(
                f"<h3>{e(c['identification']['name'] or c['identification']['lora_id'])}: {e(m['embedder'])} (#{m['rep_id']})</h3>"
                + kv(rows)
            )
    return "<section><h2>How each measurement was made</h2>" + "\n".join(out) + "</section>" if out else ""


def integrity_section(data: Mapping[str, Any], sha256: str) -> str:
    return (
        measurement_provenance(data["loras"])
        + "<section><h2>Integrity</h2>"
        + f'<p>sha256 over the canonical JSON of this case file\'s data: <code id="{HASH_ID}">{e(sha256)}</code></p>'
        + '<p class="small">Check it with <code>python -m carlos report --verify FILE</code>: the data (in an HTML case file, '
        "the block below; in a PDF, its attachment case-data.json, extracted with <code>pdfdetach -saveall</code>) is hashed again "
        "and an HTML page is rendered again from it, so an edit to any number or name shows.</p>"
        + '<details class="screen-only"><summary>The data (canonical JSON)</summary>'
        + f'<pre class="data" id="{DATA_ID}">{escape(canonical_json(data), quote=False)}</pre></details></section>'
    )
