"""Text and Markdown tables of ``python -m carlos bench map`` (:mod:`carlos.bench.map`)."""

from __future__ import annotations

from typing import Any


def _s(v: Any) -> str:
    return "—" if v is None else f"{v:.1f} s" if isinstance(v, float) else str(v)


def _n(v: Any) -> str:
    return "—" if v is None else f"{v:,}"


def _page_row(n: int, r: dict[str, Any]) -> list[str]:
    drawn = "density + 20k sample" if r.get("density") else "every point"
    zoom = "density" if r.get("zoom_density") else "every point"
    return [
        f"{n:,}",
        drawn,
        _s(r.get("first_render_s")),
        _s(r.get("render_s")),
        f"{r.get('render_mb', 0):g} MB",
        f"{_s(r.get('box_select_s'))} ({_n(r.get('box_selected'))} listed)",
        f"{_s(r.get('region_click_s'))} ({_n(r.get('region_listed'))} in region)",
        f"{_s(r.get('zoom_s'))} ({zoom})",
    ]


def _other(r: dict[str, Any] | None) -> str:
    if not r:
        return "—"
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    parts = []
    if r.get("render_s") is not None:
        parts.append(f"render {_s(r['render_s'])}, {r.get('render_mb', 0):g} MB")
    if r.get("box_select_s") is not None:
        parts.append(f"box select {_s(r['box_select_s'])} ({_n(r.get('box_selected'))} listed)")
    if r.get("embedding_view"):
        parts.append(f"embedding view {r['embedding_view']}")
    if r.get("external_requests"):
        parts.append(f"fetched from outside: {', '.join(sorted({u.split('/')[2] for u in r['external_requests']}))}")
    if r.get("error"):
        parts.append(f"failed: {r['error']}")
    return "; ".join(parts) or "—"


def map_bench_text(result: dict[str, Any]) -> str:
    lines = [f"map benchmark, {result['when']}, {result['chromium']}, load {result['machine'].get('load_avg_1m')}"]
    for row in result["sizes"]:
        n = row["n"]
        lines.append(f"{n:,} LoRAs (store built in {row['build']['build_s']:.0f} s)")
        if "page" in row:
            p = row["page"]
            cells = _page_row(n, p)
            lines.append(
                f"  page: {cells[1]}; first visitor {cells[2]}, next {cells[3]} ({cells[4]}); box select {cells[5]}; "
                f"region click {cells[6]}; zoom {cells[7]}"
            )
        for name in ("plotly-all", "atlas"):
            if name in row:
                lines.append(f"  {name}: {_other(row[name])}")
    return "\n".join(lines)


def map_bench_markdown(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    out = [
        f"`{command}` — {result['when']}, {m.get('cores')} cores ({m.get('cpu')}), load {m.get('load_avg_1m')}, "
        f"{result['chromium']} headless without a GPU (WebGL: SwiftShader). Coordinates are synthetic blobs, not UMAP fits.",
        "",
        "**The Map page** (Plotly `scattergl`, server-side aggregation above 100k points in view):",
        "",
        "| LoRAs | drawn | first visitor | next visitor | sent to the browser | box select → LoRAs listed | region click → listed "
        "| zoom to selection |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["sizes"]:
        if "page" in row:
            out.append("| " + " | ".join(_page_row(row["n"], row["page"])) + " |")
    others = [name for name in ("plotly-all", "atlas") if any(name in r for r in result["sizes"])]
    if others:
        out += ["", "**The alternatives** on the same points:", "", "| LoRAs | " + " | ".join(others) + " |"]
        out.append("|---|" + "---|" * len(others))
        for row in result["sizes"]:
            out.append(f"| {row['n']:,} | " + " | ".join(_other(row.get(name)) for name in others) + " |")
    return "\n".join(out)
