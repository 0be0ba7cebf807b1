"""The scale benchmark's report: one row per corpus size, and the notes that say what was measured.

Formats the JSON-ready result of :func:`carlos.bench.scale.run_scale_bench` as plain text
(what ``python -m carlos bench scale`` prints) and as the README's Markdown section, and
states whether the 1M-LoRA targets were met; no measurement happens here.
"""

from __future__ import annotations

from typing import Any

from carlos.bench.common import machine_line, markdown_table, text_table
from carlos.bench.scale import MEMORY_TARGET, P50_TARGET_MS, SYNTHETIC_EMBEDDER

_HEADERS = (
    "LoRAs",
    "import s",
    "store MiB",
    "load s",
    "index s",
    "top-k p50 ms",
    "p95 ms",
    "p50 ms, all threads",
    "exact",
    "fp32 scan p50 ms",
    "peak MiB",
    "peak / raw",
    "load_view s",
    "view index s",
    "by_direction p50 ms",
    "by_direction p95 ms",
    "load_view peak / raw",
    "detail read p50 ms",
    "UMAP fit s",
    "UMAP transform s",
)


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for r in result["sizes"]:
        sv, lib, um = r["serve"], r["library"] or {}, r["umap"] or {}
        out.append(
            [
                f"{r['n']:,}",
                r["import"]["import_s"],
                r["import"]["store_bytes"] / 2**20,
                sv["load_s"],
                sv["index_build_s"],
                sv["topk"]["p50_ms"],
                sv["topk"]["p95_ms"],
                sv["topk_default_threads"]["p50_ms"],
                f"{sv['exact_agree']}/{sv['exact_checked']}",
                sv["float32_scan"]["p50_ms"],
                sv["peak_bytes"] / 2**20,
                f"{sv['peak_over_raw']:.2f}x",
                lib.get("load_view_s"),
                lib.get("index_build_s"),
                (lib.get("by_direction") or {}).get("p50_ms"),
                (lib.get("by_direction") or {}).get("p95_ms"),
                f"{lib['peak_over_raw']:.2f}x" if lib else None,
                ((r.get("pages") or {}).get("detail_read") or {}).get("p50_ms"),
                um.get("fit_s"),
                um.get("transform_s"),
            ]
        )
    return out


_TEAM_HEADERS = (
    "LoRAs",
    "store",
    "import s",
    "store MiB",
    "load s",
    "first view s",
    "by_direction p50 ms",
    "by_direction p95 ms",
    "detail read p50 ms",
    "detail read p95 ms",
)


def _team_rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for r in result["sizes"]:
        if not r.get("team_store"):
            continue
        for label, part in (("DuckDB file", r), ("PostgreSQL", r["team_store"])):
            lib, pages = part.get("library") or {}, part.get("pages") or {}
            out.append(
                [
                    f"{r['n']:,}",
                    label,
                    part["import"]["import_s"],
                    part["import"]["store_bytes"] / 2**20,
                    part["serve"]["load_s"],
                    pages.get("first_view_s"),
                    (lib.get("by_direction") or {}).get("p50_ms"),
                    (lib.get("by_direction") or {}).get("p95_ms"),
                    (pages.get("detail_read") or {}).get("p50_ms"),
                    (pages.get("detail_read") or {}).get("p95_ms"),
                ]
            )
    return out


def team_verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per size with a team-store run: PostgreSQL's p50 over DuckDB's for search (after the first
    load) and for a page's store reads, against :data:`carlos.bench.scale.TEAM_TARGETS`."""
    targets, out = result["targets"], []
    for r in result["sizes"]:
        team = r.get("team_store")
        if not team or not team.get("library") or not r.get("library"):
            continue
        search = team["library"]["by_direction"]["p50_ms"] / r["library"]["by_direction"]["p50_ms"]
        page = team["pages"]["detail_read"]["p50_ms"] / r["pages"]["detail_read"]["p50_ms"]
        out.append(
            {
                "n": r["n"],
                "search_ratio": search,
                "search_met": search <= targets["team_search_ratio"],
                "page_read_ratio": page,
                "page_read_met": page <= targets["team_page_read_ratio"],
            }
        )
    return out


def _team_notes(result: dict[str, Any]) -> list[str]:
    t = result["targets"]
    return [
        f"team store at {v['n']:,}: search p50 {v['search_ratio']:.2f}x DuckDB's (target <= {t['team_search_ratio']}: "
        f"{'met' if v['search_met'] else 'NOT met'}), detail-page reads p50 {v['page_read_ratio']:.2f}x "
        f"(target <= {t['team_page_read_ratio']}: {'met' if v['page_read_met'] else 'NOT met'})"
        for v in team_verdicts(result)
    ]


def _team_section(result: dict[str, Any], table: Any) -> list[str]:
    rows = _team_rows(result)
    if not rows:
        return []
    return [
        "",
        "Team store (PostgreSQL, a new database on the given server) beside the DuckDB file, same corpora:",
        "",
        table(_TEAM_HEADERS, rows),
        "",
    ] + _team_notes(result)


def _notes(result: dict[str, Any]) -> list[str]:
    cfg, real = result["config"], result["model"]["real"]
    notes = [
        f"synthetic model: low-rank ({result['model']['rank']} axes) + diagonal Gaussian of unit directions "
        f"fitted on the {real['n']} released directions ({result['model']['source']}); (Strength, "
        "Consistency, norm ratio) resampled from real rows with 5% log-normal jitter"
    ]
    first = result["sizes"][0]["import"]["stats_first_block"]
    keys = (
        "mean_norm",
        "mean_pairwise_cos",
        "std_pairwise_cos",
        "var_top16_pcs",
        "corr_strength_consistency",
        "corr_norm_strength",
        "share_over_strength",
        "share_under_consistency",
    )
    notes.append("real vs synthetic: " + ", ".join(f"{k} {real[k]:.3f}/{first[k]:.3f}" for k in keys))
    for r in result["sizes"]:
        sv = r["serve"]
        notes.append(
            f"{r['n']:,}: kernel {sv['kernel']} (1 torch thread; 'all threads' = "
            f"{sv['default_threads']}), {sv['eligible']:,} LoRAs pass the filters, "
            f"{sv['candidates_p50']:.0f} rows re-scored in float32 per query (p50); memory via "
            f"{sv['memory_method']}; raw vectors {sv['raw_bytes'] / 2**20:.0f} MiB"
        )
        if r["umap"]:
            u = r["umap"]
            notes.append(
                f"{r['n']:,}: UMAP fitted on {u['fit_points']:,} points, {u['transform_points']:,} "
                f"transformed; {u['total_s'] / 60:.1f} min in all"
            )
    big = [r for r in result["sizes"] if r["n"] >= 1_000_000]
    for r in big:
        sv = r["serve"]
        notes.append(
            f"targets at {r['n']:,}: top-k p50 {sv['topk']['p50_ms']:.0f} ms (< {P50_TARGET_MS:.0f}: "
            f"{'met' if sv['topk']['p50_ms'] < P50_TARGET_MS else 'NOT met'}), peak memory "
            f"{sv['peak_over_raw']:.2f}x raw (< {MEMORY_TARGET}: "
            f"{'met' if sv['peak_over_raw'] < MEMORY_TARGET else 'NOT met'})"
        )
    if not big:
        notes.append("no 1M run in this invocation: the 1M targets are not assessed")
    notes.append(
        f"library path (load_view + by_direction) measured up to {cfg['library_max']:,} LoRAs; UMAP "
        f"for {cfg['umap_min']:,} to {cfg['umap_max']:,}"
    )
    return notes


def scale_bench_text(result: dict[str, Any]) -> str:
    head = f"Scale benchmark ({SYNTHETIC_EMBEDDER}); {machine_line(result['machine'])}"
    return "\n".join([head, "", text_table(_HEADERS, _rows(result)), ""] + _notes(result) + _team_section(result, text_table))


def scale_bench_markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        f"### Scale{', the DuckDB file beside a PostgreSQL team store' if result.get('team_store') else ''} ({result['when']})",
        "",
        f"`{command}`",
        "",
        f"{machine_line(result['machine'])}.",
        "",
        markdown_table(_HEADERS, _rows(result)),
        "",
    ] + [f"- {n}" for n in _notes(result)]
    team = _team_section(result, markdown_table)
    if team:
        lines += team[:4] + [f"- {n}" for n in team[4:] if n]
    return "\n".join(lines)
