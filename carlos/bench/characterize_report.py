"""The characterization benchmark's report: the throughput table, cost per LoRA, and the notes.

Formats the JSON-ready result of :func:`carlos.bench.characterize.run_characterize_bench`
as plain text (what ``python -m carlos bench characterize`` prints) and as the README's
Markdown section; no measurement happens here.
"""

from __future__ import annotations

from typing import Any

from carlos.bench.common import machine_line, markdown_table, text_table

_HEADERS = (
    "backend",
    "side",
    "LoRAs x pairs",
    "images",
    "total s",
    "LoRA pairs/s",
    "images/s",
    "load s",
    "generate s",
    "embed s",
    "store s",
    "attach+other s",
)


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for c in result["cases"]:
        o, r, cfg = c["ours"], c["reference"], c["config"]
        shape = f"{cfg['n_loras']} x {c['pairs'] // cfg['n_loras']}"
        rows.append(
            [
                cfg["backend"],
                "ours",
                shape,
                o["images"],
                c["ours_total_s"],
                c["ours_pairs_per_s"],
                c["ours_images_per_s"],
                o["load_s"],
                o["seconds"]["generate"],
                o["seconds"]["embed"],
                o["seconds"]["store"],
                o["seconds"]["attach+bookkeeping+summarise"] + o["submit_s"],
            ]
        )
        rows.append(
            [
                cfg["backend"],
                "reference",
                shape,
                r["images"],
                r["run_s"],
                c["reference_pairs_per_s"],
                c["reference_images_per_s"],
                r["seconds"]["load"],
                r["seconds"]["generate"],
                r["seconds"]["embed"],
                0.0,
                r["seconds"]["lora_attach"] + r["seconds"]["summarise"],
            ]
        )
    return rows


_COST_HEADERS = ("backend", "protocol", "pairs", "ours h/LoRA", "ours base images h (once)", "reference h/LoRA", "reference / ours")


def _cost_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for c in result["cases"]:
        unit = "GPU" if c["device"].startswith("cuda") else "CPU"
        for name, v in c["cost_per_lora"].items():
            rows.append(
                [
                    f"{c['config']['backend']} ({unit})",
                    name,
                    v["pairs"],
                    v["ours_s_per_lora"] / 3600,
                    v["ours_first_lora_extra_s"] / 3600,
                    v["reference_s_per_lora"] / 3600,
                    f"{v['reference_s_per_lora'] / v['ours_s_per_lora']:.2f}x",
                ]
            )
    return rows


def _cost_lines(result: dict[str, Any]) -> list[str]:
    out = []
    for c in result["cases"]:
        a = c["agreement"]
        out.append(
            f"{c['config']['backend']}: ours is {c['ratio']:.2f}x faster end to end on this run (its one "
            f"pipeline load included); representations agree: min direction cos "
            f"{a['min_direction_cos']:.6f}, max Strength rel. diff "
            f"{a['max_strength_rel_diff']:.1e}"
        )
    out.append(
        f"paper: about {result['paper_gpu_hours_per_lora']:g} A6000 GPU-hours per LoRA (full protocol); "
        "the tiny backend's hours say nothing about SDXL (64x64 px, 4 steps, toy UNet)"
    )
    if result["gpu_skipped"]:
        out.append(result["gpu_skipped"])
    return out


def characterize_bench_text(result: dict[str, Any]) -> str:
    head = f"Characterization throughput; {machine_line(result['machine'])}"
    return "\n".join(
        [
            head,
            "",
            text_table(_HEADERS, _rows(result)),
            "",
            "Cost per LoRA, extrapolated from the measured per-image times:",
            text_table(_COST_HEADERS, _cost_rows(result)),
            "",
        ]
        + _cost_lines(result)
    )


def characterize_bench_markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        f"### Characterization throughput ({result['when']})",
        "",
        f"`{command}`",
        "",
        f"{machine_line(result['machine'])}. Ours: pipeline loaded once, base images shared through "
        "the store, diffs stored per chunk. Reference: pipeline rebuilt per LoRA, base images "
        "regenerated, batches of 4. Same process, one after the other.",
        "",
        markdown_table(_HEADERS, _rows(result)),
        "",
        "Cost per LoRA, extrapolated from the measured per-image times:",
        "",
        markdown_table(_COST_HEADERS, _cost_rows(result)),
        "",
    ]
    lines += [f"- {x}" for x in _cost_lines(result)]
    return "\n".join(lines)
