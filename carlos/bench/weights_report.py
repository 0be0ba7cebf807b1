"""The weight-matching benchmark's report: detection per transformation, false positives, speed.

Formats the result of :func:`carlos.bench.weights.run_weights_bench` as plain text (what
``python -m carlos bench weights`` prints) and as the Markdown of its ``bench/README.md``
section, and says whether each target of the issue was met; no measurement happens here.
"""

from __future__ import annotations

from typing import Any

from carlos.bench.common import machine_line, markdown_table, text_table

_HEADERS = ("transformation", "expected", "n", "detected", "rate", "as labelled", "min abs cosine", "median abs cosine")


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for r in result["detection"]["rows"]:
        out.append([r["transformation"], r["expected"], r["n"], r["detected"], f"{r['rate']:.0%}", r["as_labelled"]])
        out[-1] += [r["min_cosine"], r["median_cosine"]]
    return out


def verdicts(result: dict[str, Any]) -> list[str]:
    """One line per target: met or not, with the number."""
    d, t = result["detection"], result["targets"]
    same = [r for r in d["rows"] if not r["expected"].startswith("partial")]
    merges = [r for r in d["rows"] if "merge" in r["transformation"]]
    lines = [
        f"copies (conversions, dtype changes, rescales, rank halvings, continued training) detected as the same LoRA: "
        f"{sum(r['detected'] for r in same)}/{sum(r['n'] for r in same)} "
        + ("(target 100 %: met)" if all(r["rate"] == 1.0 for r in same) else "(target 100 %: NOT met)"),
    ]
    for r in merges:
        ok = r["rate"] >= t["merge_rate"]
        verdict = "met" if ok else "NOT met"
        lines.append(f"merges reported as partial matches of both parents: {r['rate']:.0%} (target ≥ {t['merge_rate']:.0%}: {verdict})")
    fp = d["false_positive_rate"]
    lines.append(
        f"false positives: {d['false_positives']} of {d['false_positive_pairs']:,} (query, unrelated LoRA) pairs = {fp:.3%} "
        f"(target ≤ {t['false_positive_rate']:.1%}: {'met' if fp <= t['false_positive_rate'] else 'NOT met'}); "
        f"largest |cos| of an unrelated candidate {d['max_unrelated_cosine']:.3f} (p99 {d['p99_unrelated_cosine']:.3f})"
    )
    s = result.get("fingerprint_speed")
    if s:
        ok_t = s["fingerprint_s"] < t["fingerprint_s"]
        ok_m = s["peak_over_largest_module"] < 2.0
        lines.append(
            f"real-size fingerprint ({s['modules']} modules, rank {s['rank']}, {s['file_bytes'] / 2**20:.0f} MiB): "
            f"{s['fingerprint_s']:.2f} s (target < {t['fingerprint_s']:.0f} s: {'met' if ok_t else 'NOT met'}; exact re-rank of "
            f"it against a diffusers bf16 copy {s['exact_rerank_s']:.2f} s: {s['bf16_diffusers_copy']['label']}) after "
            f"{s['validate_s']:.2f} s of validation; traced peak {s['traced_peak_bytes'] / 2**20:.2f} MiB = "
            f"{s['peak_over_largest_module']:.2f}× the largest module ({s['largest_module_bytes'] / 2**20:.2f} MiB; target < 2×: "
            f"{'met' if ok_m else 'NOT met'})"
        )
    q = result.get("search_speed")
    if q:
        ok = q["similar"]["p50_ms"] < t["similar_p50_ms"]
        lines.append(
            f"similar-weights over {q['n']:,} stored fingerprints: p50 {q['similar']['p50_ms']:.1f} ms, p95 "
            f"{q['similar']['p95_ms']:.1f} ms ({q['kernel']}; index search alone p50 {q['search']['p50_ms']:.1f} ms; "
            f"{q['exact_agree']}/{q['exact_checked']} equal to brute force; with torch's {q['default_threads']} threads p50 "
            f"{q['similar_default_threads']['p50_ms']:.1f} ms; load average {q['load_avg_1m_after']} after) "
            f"(target p50 < {t['similar_p50_ms']:.0f} ms: {'met' if ok else 'NOT met'})"
        )
    return lines


def weights_bench_text(result: dict[str, Any]) -> str:
    d = result["detection"]
    head = (
        f"weight matching on {d['originals']} synthetic originals ({d['shapes']} shapes, {d['modules']} modules, ranks "
        f"{', '.join(map(str, d['ranks']))}) among {d['negatives']} unrelated LoRAs ({result['total_s']:.0f} s)"
    )
    return "\n".join([head, "", text_table(_HEADERS, _rows(result)), "", *verdicts(result), "", machine_line(result["machine"])])


def weights_bench_markdown(result: dict[str, Any], command: str) -> str:
    d = result["detection"]
    t = result["thresholds"]
    return "\n".join(
        [
            "## Weight-space matching",
            "",
            f"`{command}` ({result['when']}; {machine_line(result['machine'])}). Synthetic SDXL-shaped LoRAs: "
            f"{d['originals']} originals ({d['modules']} modules each, ranks {', '.join(map(str, d['ranks']))}, "
            f"σ_i ∝ 1/i) among {d['negatives']} unrelated ones, each original transformed and looked up with the matcher "
            "the product runs (index search, then exact re-ranking). *Detected*: the original came back as the same LoRA "
            "(identical, rescaled, rank-reduced or re-quantized), or as a partial match (pruned; for merges both parents); "
            "*as labelled*: with exactly the expected label; cosines are of the whole ΔW, absolute.",
            "",
            markdown_table(_HEADERS, _rows(result)),
            "",
            *[f"* {line}" for line in verdicts(result)],
            "",
            f"Thresholds (`RelationThresholds`): identical \\|cos\\| ≥ {t['identical_cos']} with \\|scale − 1\\| ≤ {t['scale_tol']}; "
            f"a copy \\|cos\\| ≥ {t['copy_cos']} with ≥ {t['full_coverage']:.0%} of both files' energy in shared modules; "
            f"partial: a merge or blend \\|cos\\| ≥ {t['partial_cos']}, or a module subset whose shared modules match "
            f"(\\|cos\\| ≥ {t['copy_cos']}) or ≥ {t['min_shared_energy']:.0%} of the energy in same-weight modules "
            f"(per-module \\|cos\\| ≥ {t['same_module_cos']}).",
        ]
    )
