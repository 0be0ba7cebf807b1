"""Benchmark: characterization throughput, our worker against the reference procedure.

* **ours**: the real path (:func:`carlos.characterize.jobs.submit` then :class:`carlos.characterize.jobs.Worker`):
  the pipeline and CLIP are loaded once, LoRAs are attached as adapters, base
  images are generated once and shared through the store's base cache, diffs
  are written per chunk (resumable) and summarised by the numpy core;
* **reference**: a re-implementation of the authors' procedure: per LoRA the
  pipeline is built again, base images are regenerated, generation runs in
  batches of 4, then embed and summarise (CLIP is loaded once for both sides).

Both run in one process on the same LoRAs, seeds and prompts, so their
representations must agree (reported), and the time ratio is fair on a busy
machine. The tiny backend runs on CPU; the full-size SDXL architecture with
random weights (``sdxl-random``, 1024², 25 steps) runs only when CUDA is present.
The tables and notes are :mod:`carlos.bench.characterize_report`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench.common import machine_info, stamp
from carlos.errors import InvalidInputError

log = logging.getLogger(__name__)

#: The paper's cost: about 7 A6000 GPU-hours per LoRA at the full protocol (PAPER.md, "Cost").
PAPER_GPU_HOURS_PER_LORA = 7.0


@dataclass(frozen=True)
class CharBenchConfig:
    backend: str = "tiny"
    protocol: str = "quick"
    n_loras: int = 3
    ref_batch: int = 4  # the reference's generation batch

    def __post_init__(self) -> None:
        from carlos.characterize.engine import get_protocol
        from carlos.characterize.jobs import check_backend

        check_backend(self.backend)
        get_protocol(self.protocol)
        if self.n_loras < 1 or self.ref_batch < 1:
            raise InvalidInputError("n_loras and ref_batch must be positive")


def write_random_lora(path: str | Path, arch: Any, *, seed: int = 0, rank: int = 4) -> Path:
    """A diffusers/PEFT-layout LoRA on the UNet attention projections of ``arch`` (an
    :class:`carlos.models.sdxl_arch.SDXLArchitecture`), with random weights: test LoRAs for
    any SDXL size, e.g. the full-size architecture on a GPU."""
    import re

    import torch
    from safetensors.torch import save_file

    from carlos.files.testing import TEST_LORA_MARKER
    from carlos.models.tiny_sdxl import build_networks

    target = re.compile(r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
    with torch.device("meta"):
        unet = build_networks(arch)["unet"]
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, mod in unet.named_modules():
        if isinstance(mod, torch.nn.Linear) and target.search(name):
            tensors[f"unet.{name}.lora_A.weight"] = (torch.randn(rank, mod.in_features, generator=gen) / mod.in_features**0.5).half()
            tensors[f"unet.{name}.lora_B.weight"] = (torch.randn(mod.out_features, rank, generator=gen) / rank**0.5).half()
    if not tensors:
        raise InvalidInputError(f"no attention projection found in {arch.name}")
    meta = {
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "ss_base_model_version": "sdxl_base_v1-0",
        "modelspec.title": Path(path).stem,
    }
    if arch.name != "sdxl-base-1.0":
        meta[TEST_LORA_MARKER[0]] = TEST_LORA_MARKER[1]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def _lora_files(cfg: CharBenchConfig, folder: Path) -> list[Path]:
    from carlos.files.testing import make_test_lora

    if cfg.backend == "tiny":
        return [make_test_lora(folder / f"bench-{i}.safetensors", seed=100 + i) for i in range(cfg.n_loras)]
    from carlos.models.sdxl_arch import SDXL_BASE_1_0

    return [write_random_lora(folder / f"bench-{i}.safetensors", SDXL_BASE_1_0, seed=100 + i) for i in range(cfg.n_loras)]


def run_ours(cfg: CharBenchConfig, files: list[Path], folder: Path, clip: Any) -> dict[str, Any]:
    from carlos.characterize import jobs
    from carlos.store.store import Store

    store = Store.open(folder / "ours.duckdb")
    worker = jobs.Worker(store, worker_id="bench", clip_factory=lambda name: clip)
    t0 = time.perf_counter()
    ch = worker.characterizer(cfg.backend, cfg.protocol)  # builds the pipeline once
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    subs = [jobs.submit(store, f, backend=cfg.backend, protocol=cfg.protocol, requested_by="bench") for f in files]
    submit_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    for sub in subs:
        worker.run_one(job_id=sub.job_id)
    run_s = time.perf_counter() - t2
    failed = [s.job_id for s in subs if store.jobs.get(s.job_id)["status"] != "finished"]
    if failed:
        raise InvalidInputError(f"benchmark jobs {failed} did not finish: {store.jobs.get(failed[0])['error']}")
    reps = [store.reps.of(s.lora_id)[0] for s in subs]
    st = ch.stats
    sec = dict(st.seconds)
    sec["attach+bookkeeping+summarise"] = max(0.0, run_s - sum(sec.values()))
    return {
        "load_s": load_s,
        "submit_s": submit_s,
        "run_s": run_s,
        "seconds": sec,
        "images": st.base_generated + st.lora_generated,
        "base_images": st.base_generated,
        "lora_images": st.lora_generated,
        "pipeline_loads": ch.backend.pipeline_loads,
        "reps": [(r.direction, r.strength, r.consistency) for r in reps],
    }


def run_reference(cfg: CharBenchConfig, files: list[Path], clip: Any) -> dict[str, Any]:
    """Per LoRA: rebuild the pipeline, regenerate base images, generate in batches of 4, embed,
    summarise (nothing cached, nothing stored until the end)."""
    from carlos.characterize.engine import get_protocol, lora_prompt, protocol_pairs
    from carlos.characterize.jobs import default_backend_factory
    from carlos.core.representation import summarize

    pairs, _ = protocol_pairs(get_protocol(cfg.protocol))
    prompts, seeds = [p.prompt for p in pairs], [p.seed for p in pairs]
    sec = {"load": 0.0, "lora_attach": 0.0, "generate": 0.0, "embed": 0.0, "summarise": 0.0}
    reps, images = [], 0
    t_all = time.perf_counter()
    for f in files:
        t0 = time.perf_counter()
        backend = default_backend_factory(cfg.backend, cfg.protocol)
        t1 = time.perf_counter()
        base = backend.generate(prompts, seeds, batch_size=cfg.ref_batch)
        t2 = time.perf_counter()
        backend.load_lora(f)
        t3 = time.perf_counter()
        lora = backend.generate([lora_prompt(p, None) for p in prompts], seeds, batch_size=cfg.ref_batch)
        t4 = time.perf_counter()
        backend.unload_lora()
        t5 = time.perf_counter()
        diffs = clip.image_features(lora, batch_size=cfg.ref_batch).astype(np.float64) - clip.image_features(base, batch_size=cfg.ref_batch)
        t6 = time.perf_counter()
        rep = summarize(diffs)
        sec["summarise"] += time.perf_counter() - t6
        sec["load"] += t1 - t0
        sec["generate"] += (t2 - t1) + (t4 - t3)
        sec["lora_attach"] += (t3 - t2) + (t5 - t4)
        sec["embed"] += t6 - t5
        images += len(base) + len(lora)
        reps.append((rep.direction, rep.strength, rep.consistency))
        del backend
    return {"run_s": time.perf_counter() - t_all, "seconds": sec, "images": images, "pipeline_loads": len(files), "reps": reps}


def _agreement(a: list[tuple], b: list[tuple]) -> dict[str, float]:
    cos = [float(x[0] @ y[0] / max(np.linalg.norm(x[0]) * np.linalg.norm(y[0]), 1e-30)) for x, y in zip(a, b)]
    return {
        "min_direction_cos": min(cos),
        "max_strength_rel_diff": max(abs(x[1] - y[1]) / max(abs(y[1]), 1e-12) for x, y in zip(a, b)),
        "max_consistency_abs_diff": max(abs(x[2] - y[2]) for x, y in zip(a, b)),
    }


def _costs(ours: dict[str, Any], ref: dict[str, Any], n_loras: int) -> dict[str, dict[str, float]]:
    """Seconds per LoRA for each protocol, from the measured per-image times."""
    from carlos.characterize.engine import PROTOCOLS, get_protocol, protocol_pairs

    o, r = ours["seconds"], ref["seconds"]
    o_img = (o["generate"] + o["embed"]) / max(ours["images"], 1)  # per generated+embedded image
    o_pair = o["store"] / max(ours["lora_images"], 1)  # diffs and thumbnails written, per pair
    o_fixed = o["attach+bookkeeping+summarise"] / n_loras  # LoRA attach/detach, job rows, summary
    r_img = (r["generate"] + r["embed"]) / max(ref["images"], 1)
    r_fixed = (r["load"] + r["lora_attach"] + r["summarise"]) / n_loras
    out = {}
    for name in PROTOCOLS:
        n_pairs = len(protocol_pairs(get_protocol(name))[0])
        out[name] = {
            "pairs": n_pairs,
            "ours_s_per_lora": o_fixed + n_pairs * (o_img + o_pair),
            "ours_first_lora_extra_s": n_pairs * o_img,  # base images, once per prompt set
            "reference_s_per_lora": r_fixed + 2 * n_pairs * r_img,
        }
    return out


def run_characterize_bench(
    config: CharBenchConfig | None = None, *, gpu: str = "auto", progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Tiny backend on CPU, and ``sdxl-random`` at 1024²/25 steps when a GPU is there."""
    import torch

    if gpu not in ("auto", "off"):
        raise InvalidInputError(f"gpu must be 'auto' or 'off', got {gpu!r}")
    config = config or CharBenchConfig()
    info = machine_info()
    cases = [config]
    skipped = None
    if gpu == "auto" and torch.cuda.is_available():
        cases.append(CharBenchConfig(backend="sdxl-random", protocol="smoke", n_loras=2, ref_batch=config.ref_batch))
    elif gpu == "auto":
        skipped = _gpu_skip_reason()
    results = [_run_case(c, progress) for c in cases]
    info["torch_threads_during_run"] = torch.get_num_threads()  # the tiny backend pins 1 thread
    return {
        "benchmark": "characterize",
        "when": stamp(),
        "machine": info,
        "cases": results,
        "gpu_skipped": skipped,
        "paper_gpu_hours_per_lora": PAPER_GPU_HOURS_PER_LORA,
    }


def _gpu_skip_reason() -> str:
    from carlos.models.tiny_sdxl import estimate_sdxl_cpu_seconds

    per_image = estimate_sdxl_cpu_seconds(25, 5.0, 1024, 1024)
    return (
        f"skipped sdxl-random (full-size SDXL, 1024², 25 steps): torch sees no CUDA GPU here. On this "
        f"CPU one image would take about {per_image / 60:.0f} min (estimate from counted FLOPs and a "
        f"measured matmul rate), i.e. about {per_image * 4480 / 86400:.0f} CPU-days per LoRA at the paper "
        "protocol"
    )


def _run_case(cfg: CharBenchConfig, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    from carlos.characterize.engine import CLIP_FOR_BACKEND
    from carlos.models.clip import load_clip

    clip = load_clip(CLIP_FOR_BACKEND[cfg.backend])
    with tempfile.TemporaryDirectory(prefix="carlos-bench-char-") as tmp:
        folder = Path(tmp)
        files = _lora_files(cfg, folder / "loras")
        ours = run_ours(cfg, files, folder, clip)
        if progress:
            progress(1, 2)
        ref = run_reference(cfg, files, clip)
        if progress:
            progress(2, 2)
    pairs = ours["lora_images"]
    agree = _agreement(ours.pop("reps"), ref.pop("reps"))
    ours_total = ours["load_s"] + ours["submit_s"] + ours["run_s"]
    return {
        "config": asdict(cfg),
        "device": clip.device,
        "pairs": pairs,
        "ours": ours,
        "reference": ref,
        "ours_total_s": ours_total,
        "ratio": ref["run_s"] / ours_total,
        "ours_pairs_per_s": pairs / ours_total,
        "reference_pairs_per_s": pairs / ref["run_s"],
        "ours_images_per_s": ours["images"] / (ours["run_s"] or 1e-9),
        "reference_images_per_s": ref["images"] / (ref["run_s"] or 1e-9),
        "agreement": agree,
        "cost_per_lora": _costs(ours, ref, cfg.n_loras),
    }
