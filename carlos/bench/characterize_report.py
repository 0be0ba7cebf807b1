"""The characterization benchmark's report: throughput, where the time goes, cost per LoRA, notes.

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
    "images/s",
    "images/s excl. loads",
    "batch",
    "load s",
    "LoRA load s",
    "text enc s",
    "UNet s",
    "VAE s",
    "other gen. s",
    "CLIP s",
    "store s",
    "rest s",
    "empty_cache calls",
)


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for c in result["cases"]:
        o, r, cfg = c["ours"], c["reference"], c["config"]
        shape = f"{cfg['n_loras']} x {c['pairs'] // cfg['n_loras']}"
        os_, rs = o["stages"], r["stages"]
        lora_s = o["lora_seconds"]["load"] + o["lora_seconds"]["unload"]
        rows.append(
            [cfg["backend"], "ours", shape, o["images"], c["ours_total_s"], c["ours_images_per_s"], c["ours_steady_images_per_s"]]
            + [o["batch"], o["load_s"], lora_s, os_["text"], os_["unet"], os_["vae"], os_["other"]]
            + [o["seconds"]["embed"], o["seconds"]["store"], o["seconds"]["attach+bookkeeping+summarise"] + o["submit_s"] - lora_s]
            + [o["empty_cache_calls"]]
        )
        rows.append(
            [cfg["backend"], "reference", shape, r["images"], r["run_s"], c["reference_images_per_s"], c["reference_steady_images_per_s"]]
            + [cfg["ref_batch"], r["seconds"]["load"], r["seconds"]["lora_load"], rs["text"], rs["unet"], rs["vae"], rs["other"]]
            + [r["seconds"]["embed"], 0.0, r["seconds"]["summarise"], r["empty_cache_calls"]]
        )
    return rows


_COST_HEADERS = (
    "backend",
    "protocol",
    "LoRA images",
    "ours h/LoRA",
    "ours base images h (once)",
    "reference h/LoRA",
    "reference base images h (once)",
    "reference / ours",
)


def _cost_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for c in result["cases"]:
        unit = "GPU" if c["device"].startswith("cuda") else "CPU"
        for name, v in c["cost_per_lora"].items():
            label = name + (" (measured)" if v["measured"] else "")
            rows.append(
                [
                    f"{c['config']['backend']} ({unit})",
                    label,
                    v["pairs"],
                    v["ours_s_per_lora"] / 3600,
                    v["ours_base_s_once"] / 3600,
                    v["reference_s_per_lora"] / 3600,
                    v["reference_base_s_once"] / 3600,
                    f"{v['reference_s_per_lora'] / v['ours_s_per_lora']:.2f}x",
                ]
            )
    return rows


_SWEEP_HEADERS = ("batch", "UNet s / image / step", "VAE s / image", "est. s / image at 25 steps", "peak GiB")


def _sweep_rows(case: dict[str, Any]) -> list[list[Any]]:
    return [
        [r["batch"], "OOM", "-", "-", "-"]
        if r.get("oom")
        else [r["batch"], r["unet_s_per_image_step"], r["vae_s_per_image"], r["est_s_per_image_at_settings"], r["peak_gib"]]
        for r in case.get("batch_sweep") or []
    ]


def _notes(result: dict[str, Any]) -> list[str]:
    out = []
    for c in result["cases"]:
        a, o, r = c["agreement"], c["ours"], c["reference"]
        rep = o["fast_report"]
        out.append(
            f"{c['config']['backend']}: ours {c['ours_images_per_s']:.3g} images/s, reference {c['reference_images_per_s']:.3g}: "
            f"{c['ratio']:.2f}x end to end (loads included), {c['steady_ratio']:.2f}x excluding loads; representations agree: "
            f"min direction cos {a['min_direction_cos']:.6f}, max Strength rel. diff {a['max_strength_rel_diff']:.1e}"
        )
        out.append(
            f"{c['config']['backend']}: ours ran batch {o['batch']} (chunks of {o['chunk_pairs']} pairs), LoRA fused "
            f"({o['fast_path']['fuse_lora']}), attention {rep['attention_processors']}, VAE decode {rep['vae_decode_dtype']}"
            f"{', sliced' if rep['vae_slicing'] else ''}, UNet compiled: {rep['unet_compiled']}; the reference "
            f"{r['pipeline_loads']} pipeline and {r['clip_loads']} CLIP loads, CLIP image processor {r['clip_image_processor']}"
            + (f"; peak GPU memory ours {o['peak_gpu_gib']:.1f}, reference {r['peak_gpu_gib']:.1f} GiB" if o.get("peak_gpu_gib") else "")
        )
        per = {  # reference / ours, seconds per image of each stage
            k: (r["stages"][k] / max(r["images"], 1)) / max(o["stages"][k] / max(o["images"], 1), 1e-12) for k in ("unet", "vae", "text")
        }
        per["CLIP"] = (r["seconds"]["embed"] / max(r["images"], 1)) / max(o["seconds"]["embed"] / max(o["images"], 1), 1e-12)
        share = o["seconds"]["embed"] / max(o["seconds"]["generate"] + o["seconds"]["embed"], 1e-12)
        out.append(
            f"{c['config']['backend']}: per image the reference takes {per['unet']:.2f}x our UNet time, {per['vae']:.2f}x our VAE, "
            f"{per['text']:.2f}x our text encoders and {per['CLIP']:.2f}x our CLIP; CLIP is {share:.0%} of our generate + embed time"
        )
        if any(v["expected_not_measured"] for v in c["cost_per_lora"].values()):
            out.append(
                "adaptive (expected): the LoRA images given with --adaptive-images (448: issue 13's target, a 10x saving "
                "against 4,480), an expectation, not measured; GPU hours scale with the images, the fixed costs stay"
            )
    out.append(
        f"paper: about {result['paper_gpu_hours_per_lora']:g} A6000 GPU-hours per LoRA (full protocol); "
        "the tiny backend's hours say nothing about SDXL (64x64 px, 4 steps, toy UNet)"
    )
    if result["gpu_skipped"]:
        out.append(result["gpu_skipped"])
    return out


def characterize_bench_text(result: dict[str, Any]) -> str:
    lines = [f"Characterization throughput; {machine_line(result['machine'])}", "", text_table(_HEADERS, _rows(result)), ""]
    lines += ["Cost per LoRA, extrapolated from the measured per-image times:", text_table(_COST_HEADERS, _cost_rows(result)), ""]
    for c in result["cases"]:
        if c.get("batch_sweep"):
            lines += [f"Batch sweep ({c['config']['backend']}, ours):", text_table(_SWEEP_HEADERS, _sweep_rows(c)), ""]
    return "\n".join(lines + _notes(result))


def characterize_bench_markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        f"### Characterization throughput ({result['when']})",
        "",
        f"`{command}`",
        "",
        f"{machine_line(result['machine'])}. Ours: the worker (pipeline and CLIP loaded once, LoRA fused into the "
        "weights, base images shared through the store, diffs stored per chunk). Reference: the authors' loop as "
        "shipped (pipeline and CLIP loaded per LoRA run, `load_lora_weights` + `cross_attention_kwargs`, calls of "
        "4 images with seeds 42/46/50/54, `empty_cache` after each on CUDA, transformers CLIP in batches of 16, "
        "base images made once). Same process, one after the other; CLIP ViT-B/32 with the same random weights.",
        "",
        markdown_table(_HEADERS, _rows(result)),
        "",
        "Cost per LoRA, extrapolated from the measured per-image times:",
        "",
        markdown_table(_COST_HEADERS, _cost_rows(result)),
        "",
    ]
    for c in result["cases"]:
        if c.get("batch_sweep"):
            lines += [f"Batch sweep ({c['config']['backend']}, ours):", "", markdown_table(_SWEEP_HEADERS, _sweep_rows(c)), ""]
    lines += [f"- {x}" for x in _notes(result)]
    return "\n".join(lines)
