"""The query benchmark's report: one row per query, both references named in every figure.

Formats the JSON-ready result of :func:`carlos.bench.query.run_query_bench` as plain text
(what ``python -m carlos bench query`` prints) and as the README's Markdown section, and
states whether the targets were met; no measurement happens here.
"""

from __future__ import annotations

from typing import Any

from carlos.bench.common import machine_line, markdown_table, text_table

_HEADERS = (
    "query",
    "tokens",
    "shipped s (tokens/text)",
    "77-padded s",
    "cold s",
    "vs shipped (range)",
    "vs 77-padded",
    "positions vs shipped",
    "cos vs shipped",
    "cos vs 77-padded",
    "warm memory ms",
    "warm search ms",
    "warm store ms",
)


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for r in result["queries"]:
        lo, hi = r["ratio_vs_shipped_range"]
        tp, tc = r["shipped_tokens_per_text"]
        out.append(
            [
                r["query"][:40],
                r["query_tokens"],
                f"{r['reference_shipped_s']:.2f} ({tp}+{tc})",
                f"{r['reference_77_s']:.1f}",
                f"{r['cold_s']:.3f}",
                f"{r['ratio_vs_shipped']:.1f}x ({lo:.1f}-{hi:.1f})",
                f"{r['ratio_vs_77']:.0f}x",
                f"{r['positions_vs_shipped']:.1f}x",
                f"{r['cos_shipped_vs_cold']:.7f}",
                f"{r['cos_77_vs_cold']:.7f}",
                r["warm_memory_ms"],
                r["warm_search_ms"],
                r["warm_store_ms"],
            ]
        )
    return out


def _verdicts(result: dict[str, Any]) -> list[str]:
    s, t = result["summary"], result["targets"]
    ok = {True: "met", False: "NOT met", None: "not assessed (no such query measured)"}
    short = s["min_ratio_vs_shipped_short"]
    short_text = f"min {short:.1f}x" if short is not None else "none measured"
    return [
        f"cold query >= {t['cold_ratio_vs_shipped']:.0f}x faster than the shipped procedure for queries of "
        f"<= {t['short_query_tokens']} tokens: {ok[s['cold_target_met']]} ({short_text}); over all queries "
        f"median {s['median_ratio_vs_shipped']:.1f}x, min {s['min_ratio_vs_shipped']:.1f}x vs shipped; "
        f"median {s['median_ratio_vs_77']:.0f}x, min {s['min_ratio_vs_77']:.0f}x vs 77-padded",
        f"warm (cached) query direction < {t['warm_ms']:.0f} ms: {ok[s['warm_target_met']]} (median "
        f"{s['median_warm_memory_ms']:.3f} ms from the service's memory); after a restart the first repeat "
        f"of a query reads the store's cache instead: {s['median_warm_store_ms']:.1f} ms, about what opening one "
        f"DuckDB connection costs on this machine ({s['store_connect_ms']:.1f} ms, median)",
        f"warm whole search (cached direction + ranking {result['config']['corpus_size']} LoRAs) < "
        f"{t['warm_ms']:.0f} ms: {ok[s['warm_search_target_met']]} (median {s['median_warm_search_ms']:.2f} ms, "
        f"of which checking the store's data version takes {s['store_data_version_ms']:.3f} ms: a stamp-file "
        "read, the database is opened only after a write)",
        f"exactness cos >= {t['cos']} of the cold direction against both references: {ok[s['exact']]} "
        f"(min {s['min_cos']:.8f}); the two references agree to cos {s['min_cos_shipped_vs_77']:.8f}",
        "positions: the shipped procedure runs 280 x (p + c) token positions (p, c: the longest text of each "
        "batch, padding included), the 77-padded one 2 x 280 x 77, the cold path 280 x (t + 1) for a t-token "
        "query; 'positions vs shipped' = (p + c) / (t + 1). The measured ratio departs from it as the time per "
        "position does (line above): the cold path's last block runs the pooled position only, a saving that "
        "grows with t, while its fixed costs per query (tokenizing the 280 composed texts, the masks) weigh "
        "most on short queries",
    ]


def _sides(result: dict[str, Any]) -> list[str]:
    sides = result["sides"]
    return [
        f"shipped (main reference): {sides['reference_shipped']}",
        f"77-padded: {sides['reference_77']}",
        f"cold: {sides['cold']}",
    ]


def _cost_line(result: dict[str, Any]) -> str:
    rows = result["queries"]
    per = ", ".join(f"{r['shipped_us_per_position']:.0f} vs {r['cold_us_per_position']:.0f}" for r in rows)
    return f"time per token position, shipped vs cold (us): {per}"


def query_bench_text(result: dict[str, Any]) -> str:
    pc, cfg = result["prefix_cache"], result["config"]
    head = [
        f"Query directions on CPU: {result['clip']}, {result['n_prompts']} query prompts; {machine_line(result['machine'])}",
        f"prefix KV cache build (one-off per prompt set): {pc['build_s']:.2f} s, {pc['mib']:.1f} MiB; "
        f"shipped and cold alternate {cfg['repeats']} times per query (medians; range of the paired ratios)",
        *_sides(result),
        "",
    ]
    return "\n".join(head + [text_table(_HEADERS, _rows(result)), "", _cost_line(result)] + _verdicts(result))


def query_bench_markdown(result: dict[str, Any], command: str) -> str:
    pc, cfg = result["prefix_cache"], result["config"]
    lines = [
        f"### Query directions ({result['when']})",
        "",
        f"`{command}`",
        "",
        f"{result['clip']} on CPU, {result['n_prompts']} query prompts; {machine_line(result['machine'])}. "
        f"Prefix KV cache built once per prompt set in {pc['build_s']:.2f} s ({pc['mib']:.1f} MiB). "
        f"All sides run in one process, per query; shipped and cold alternate {cfg['repeats']} times "
        "(medians; the range is that of the paired ratios), the 77-padded reference runs once.",
        "",
        *[f"- {line}" for line in _sides(result)],
        "",
        markdown_table(_HEADERS, _rows(result)),
        "",
        f"- {_cost_line(result)}",
    ] + [f"- {v}" for v in _verdicts(result)]
    return "\n".join(lines)
