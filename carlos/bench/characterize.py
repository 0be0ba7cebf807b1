"""Benchmark: characterization throughput, our worker against the authors' loop as shipped.

* **ours**: the real path (:func:`carlos.characterize.jobs.submit` then :class:`carlos.characterize.jobs.Worker`):
  pipeline and CLIP loaded once, the fast path of :mod:`carlos.models.fast_path` (LoRA fused into
  the weights for its job, SDPA, the largest batch that fits, fp32 VAE decode, no
  ``empty_cache``), base images made once and shared through the store's base cache, diffs written
  per chunk (resumable) and summarised by the numpy core;
* **reference**: :mod:`carlos.bench.reference`, the release's loop (pipeline and CLIP loaded per
  LoRA run, ``load_lora_weights`` + ``cross_attention_kwargs``, calls of 4 images with the
  release's seeds, ``empty_cache`` after each on CUDA, transformers CLIP in batches of 16, base
  images made once and reused).

Both run in one process on the same LoRA files, prompts, noise and CLIP weights (ViT-B/32 with
random weights, one transformers folder both load), so their representations must agree
(reported). The tiny backend runs anywhere; ``sdxl-random`` (1024², 25 steps) only with CUDA.
Where the generation time goes comes from :class:`carlos.bench.stage_timer.StageTimer`. The
tables are :mod:`carlos.bench.characterize_report`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench.common import machine_info, stamp
from carlos.bench.stage_timer import StageTimer
from carlos.errors import InvalidInputError
from carlos.review.access import AccessPolicy, CurrentUser

log = logging.getLogger(__name__)

#: The paper's cost: about 7 A6000 GPU-hours per LoRA at the full protocol (PAPER.md, "Cost").
PAPER_GPU_HOURS_PER_LORA = 7.0
#: What ``bench/gpu.sh`` runs: 2 prompts x 8 images = 16 pairs per LoRA (the release's calls of 4), 2 LoRAs.
GPU_CASE = {"backend": "sdxl-random", "protocol": "smoke", "seeds": 8, "n_loras": 2}
#: The cost row of an adaptive run of ``--adaptive-images`` LoRA images (an expectation, not measured here).
ADAPTIVE_ROW = "adaptive (expected)"


@dataclass(frozen=True)
class CharBenchConfig:
    backend: str = "tiny"
    protocol: str = "quick"
    n_loras: int = 3
    ref_batch: int = 4  # the reference's images per call (4 as released)
    seeds: int | None = None  # images per prompt instead of the protocol's (a bench-only protocol)
    adaptive_images: int | None = None  # LoRA images of an adaptive run, for its cost row (not measured here)
    compile_unet: bool = False  # ours with torch.compile of the UNet
    batch_sweep: tuple[int, ...] = ()  # GPU only: UNet/VAE time and peak memory per batch size

    def __post_init__(self) -> None:
        from carlos.characterize.engine import get_protocol
        from carlos.characterize.jobs import check_backend

        check_backend(self.backend)
        get_protocol(self.protocol)
        if self.n_loras < 1 or self.ref_batch < 1 or (self.seeds is not None and self.seeds < 1):
            raise InvalidInputError("n_loras, ref_batch and seeds must be positive")
        if self.adaptive_images is not None and self.adaptive_images < 1:
            raise InvalidInputError("adaptive_images must be positive")

    @property
    def protocol_name(self) -> str:
        return self.protocol if self.seeds is None else f"{self.protocol}-x{self.seeds}"


@contextmanager
def bench_protocol(cfg: CharBenchConfig) -> Iterator[str]:
    """The protocol the run uses; with ``seeds`` a copy of ``cfg.protocol`` with that many images per
    prompt, registered for the length of the run only (it never reaches a user's store)."""
    from carlos.characterize.engine import PROTOCOLS, get_protocol

    name = cfg.protocol_name
    if name in PROTOCOLS:
        yield name
        return
    base = get_protocol(cfg.protocol)
    description = f"benchmark: the {base.name} prompts x {cfg.seeds} images"
    PROTOCOLS[name] = replace(base, name=name, seeds_per_prompt=cfg.seeds, description=description)
    try:
        yield name
    finally:
        PROTOCOLS.pop(name, None)


#: UNet layers of a LoRA: the attention projections, or every linear layer kohya-ss trains in SDXL's transformers.
LORA_TARGETS = {
    "attention": r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$",
    "kohya": r"(attentions\.\d+\.(proj_in|proj_out)|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)))$",
}


def write_random_lora(
    path: str | Path, arch: Any, *, seed: int = 0, rank: int = 4, targets: str = "attention", strength: float = 1.0
) -> Path:
    """A diffusers/PEFT-layout LoRA on the UNet layers ``targets`` (:data:`LORA_TARGETS`) of ``arch``
    (an :class:`carlos.models.sdxl_arch.SDXLArchitecture`), with random weights (``strength`` scales
    the up-projections): test LoRAs for any SDXL size, e.g. the full-size architecture on a GPU."""
    import re

    import torch
    from safetensors.torch import save_file

    from carlos.files.testing import TEST_LORA_MARKER
    from carlos.models.tiny_sdxl import build_networks

    target = re.compile(LORA_TARGETS[targets])
    with torch.device("meta"):
        unet = build_networks(arch)["unet"]
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, mod in unet.named_modules():
        if isinstance(mod, torch.nn.Linear) and target.search(name):
            tensors[f"unet.{name}.lora_A.weight"] = (torch.randn(rank, mod.in_features, generator=gen) / mod.in_features**0.5).half()
            tensors[f"unet.{name}.lora_B.weight"] = (torch.randn(mod.out_features, rank, generator=gen) * strength / rank**0.5).half()
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


def lora_files(cfg: CharBenchConfig, folder: Path) -> list[Path]:
    """Test LoRAs: the tiny layout (kohya, with text encoders), or SDXL-shaped attention LoRAs."""
    from carlos.files.testing import make_test_lora

    if cfg.backend == "tiny":
        return [make_test_lora(folder / f"bench_{i}.safetensors", seed=100 + i) for i in range(cfg.n_loras)]
    from carlos.models.sdxl_arch import SDXL_BASE_1_0

    # SDXL-shaped like a typical kohya-ss LoRA (rank 16 on the attention, feed-forward and projections: ~80 MB)
    return [
        write_random_lora(folder / f"bench_{i}.safetensors", SDXL_BASE_1_0, seed=100 + i, rank=16, targets="kohya", strength=0.1)
        for i in range(cfg.n_loras)
    ]


def _peak_gib(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return torch.cuda.max_memory_allocated() / 2**30


def run_ours(cfg: CharBenchConfig, protocol: str, files: list[Path], folder: Path, clip: Any) -> dict[str, Any]:
    from carlos.characterize import jobs
    from carlos.models.fast_path import FastPath, count_empty_cache
    from carlos.store.store import Store

    store = Store.open(folder / "ours.duckdb")
    _peak_gib(reset=True)
    t0 = time.perf_counter()
    backend = jobs.default_backend_factory(cfg.backend, protocol, fast_path=FastPath(compile_unet=cfg.compile_unet))
    load_s = time.perf_counter() - t0
    chunk = max(8, backend.default_batch_size)  # one chunk = one generate call: at least one full batch
    worker = jobs.Worker(store, worker_id="bench", backend_factory=lambda *_: backend, clip_factory=lambda _: clip, chunk_pairs=chunk)
    ch = worker.characterizer(cfg.backend, protocol)
    timer = StageTimer(backend.device).attach(backend.pipeline)
    t1 = time.perf_counter()
    # the benchmark owns this throwaway store: it acts in local mode, whatever reviewer list is configured
    bench_user, own_store = CurrentUser.local("bench"), AccessPolicy()
    subs = [jobs.submit(store, f, user=bench_user, policy=own_store, backend=cfg.backend, protocol=protocol) for f in files]
    submit_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    with count_empty_cache() as empty_cache_calls:
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
    timer.close()
    return {
        "load_s": load_s,
        "submit_s": submit_s,
        "run_s": run_s,
        "seconds": sec,
        "stages": timer.split(sec["generate"]),
        "lora_seconds": dict(backend.lora_seconds),
        "images": st.base_generated + st.lora_generated,
        "base_images": st.base_generated,
        "lora_images": st.lora_generated,
        "pipeline_loads": backend.pipeline_loads,
        "batch": backend.default_batch_size,
        "chunk_pairs": chunk,
        "empty_cache_calls": len(empty_cache_calls),
        "fast_path": backend.fast_path.as_dict(),
        "fast_report": backend.fast_report,
        "peak_gpu_gib": _peak_gib(),
        "backend": backend,
        "reps": [(r.direction, r.strength, r.consistency) for r in reps],
    }


def batch_sweep(backend: Any, sizes: tuple[int, ...], steps: int = 3) -> list[dict[str, Any]]:
    """GPU: seconds per image and step in the UNet, per image in the VAE, and peak memory, per batch."""
    import torch

    pipe, s = backend.pipeline, backend.settings
    rows = []
    for b in (1, *sizes):  # the first batch of 1 is a warm-up (kernels, allocator), not reported
        timer = StageTimer(backend.device).attach(pipe)
        _peak_gib(reset=True)
        torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            pipe(
                prompt=["a photo of a lighthouse at dusk"] * b,
                num_inference_steps=steps,
                guidance_scale=s.guidance_scale,
                height=s.height,
                width=s.width,
                latents=backend.initial_latents(list(range(b))),
                output_type="np",
            )
        except torch.OutOfMemoryError:
            timer.close()
            rows.append({"batch": b, "oom": True})
            break
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
        split = timer.split(wall)
        timer.close()
        rows.append(
            {
                "batch": b,
                "unet_s_per_image_step": split["unet"] / (b * steps),
                "vae_s_per_image": split["vae"] / b,
                "wall_s": wall,
                "peak_gib": _peak_gib(),
                "est_s_per_image_at_settings": split["unet"] / (b * steps) * s.steps + (split["vae"] + split["text"]) / b,
            }
        )
    return rows[1:]


def _agreement(a: list[tuple], b: list[tuple]) -> dict[str, float]:
    cos = [float(x[0] @ y[0] / max(np.linalg.norm(x[0]) * np.linalg.norm(y[0]), 1e-30)) for x, y in zip(a, b)]
    return {
        "min_direction_cos": min(cos),
        "max_strength_rel_diff": max(abs(x[1] - y[1]) / max(abs(y[1]), 1e-12) for x, y in zip(a, b)),
        "max_consistency_abs_diff": max(abs(x[2] - y[2]) for x, y in zip(a, b)),
    }


def _costs(cfg: CharBenchConfig, protocol: str, ours: dict[str, Any], ref: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Seconds per LoRA for each protocol, from the measured per-image times (base images apart)."""
    from carlos.characterize.engine import PROTOCOLS, get_protocol, protocol_pairs

    n = cfg.n_loras
    o, r = ours["seconds"], ref["seconds"]
    o_img = (o["generate"] + o["embed"]) / max(ours["images"], 1)  # per generated+embedded image
    o_pair = o["store"] / max(ours["images"], 1)  # diffs, embeddings and thumbnails written
    o_fixed = o["attach+bookkeeping+summarise"] / n  # LoRA attach + fuse, restore, job rows, summary
    r_img = (r["generate"] + r["embed"]) / max(ref["images"], 1)
    r_load = r["load"] / max(ref["pipeline_loads"], 1)  # pipeline + CLIP, per run
    r_fixed = r_load + (r["lora_load"] + r["summarise"]) / n
    # the adaptive protocol's pair list is its maximum (4,480): its cost is the expected row below
    fixed = [name for name in PROTOCOLS if name == protocol or ("-x" not in name and name != "adaptive")]
    sizes = {name: len(protocol_pairs(get_protocol(name))[0]) for name in fixed}
    if cfg.adaptive_images:
        sizes[ADAPTIVE_ROW] = cfg.adaptive_images
    out = {}
    for name, pairs in sizes.items():
        out[name] = {
            "pairs": pairs,
            "measured": name == protocol,
            "expected_not_measured": name == ADAPTIVE_ROW,
            "ours_s_per_lora": o_fixed + pairs * (o_img + o_pair),
            "ours_base_s_once": pairs * (o_img + o_pair),
            "reference_s_per_lora": r_fixed + pairs * r_img,
            "reference_base_s_once": r_load + pairs * r_img,
        }
    return out


def run_characterize_bench(
    config: CharBenchConfig | None = None, *, gpu: str = "auto", progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """``config`` (default: tiny), and with ``gpu="auto"`` also :data:`GPU_CASE` when CUDA is there."""
    import torch

    if gpu not in ("auto", "off"):
        raise InvalidInputError(f"gpu must be 'auto' or 'off', got {gpu!r}")
    config = config or CharBenchConfig()
    cuda = torch.cuda.is_available()
    if config.backend != "tiny" and not cuda:
        raise InvalidInputError(f"backend {config.backend!r} needs a CUDA GPU here (full-size SDXL on a CPU: hours per image)")
    info = machine_info()
    cases = [config]
    skipped = None
    if gpu == "auto" and cuda and config.backend == "tiny":
        cases.append(replace(config, **GPU_CASE, batch_sweep=config.batch_sweep or (4, 8, 16)))
    elif gpu == "auto" and not cuda:
        skipped = _gpu_skip_reason()
    results = [_run_case(c, progress) for c in cases]
    info["torch_threads_during_run"] = torch.get_num_threads()  # the tiny backend pins 1 thread
    info.update(_versions())
    return {
        "benchmark": "characterize",
        "when": stamp(),
        "machine": info,
        "cases": results,
        "gpu_skipped": skipped,
        "paper_gpu_hours_per_lora": PAPER_GPU_HOURS_PER_LORA,
    }


def _versions() -> dict[str, Any]:
    import diffusers
    import transformers

    out: dict[str, Any] = {"diffusers": diffusers.__version__, "transformers": transformers.__version__}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            out.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    except Exception:  # informative only
        pass
    return out


def _gpu_skip_reason() -> str:
    from carlos.models.tiny_sdxl import estimate_sdxl_cpu_seconds

    per_image = estimate_sdxl_cpu_seconds(25, 5.0, 1024, 1024)
    return (
        f"skipped sdxl-random (full-size SDXL, 1024², 25 steps): torch sees no CUDA GPU here. On this "
        f"CPU one image would take about {per_image / 60:.0f} min (estimate from counted FLOPs and a "
        f"measured matmul rate), i.e. about {per_image * 4480 / 86400:.0f} CPU-days per LoRA at the paper "
        "protocol. GPU figures: not measured (bench/gpu.sh on a CUDA machine)"
    )


def _run_case(cfg: CharBenchConfig, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    from carlos.bench.reference import run_reference, write_random_clip_folder
    from carlos.config import CORPUS_EMBEDDER
    from carlos.models.clip import load_clip

    with tempfile.TemporaryDirectory(prefix="carlos-bench-char-") as tmp, bench_protocol(cfg) as protocol:
        folder = Path(tmp)
        clip_folder = write_random_clip_folder(folder / "clip-vit-b-32-random")
        t = time.perf_counter()
        clip = load_clip(CORPUS_EMBEDDER, checkpoint=clip_folder)  # ViT-B/32 architecture, the folder's random weights
        clip_load_s = time.perf_counter() - t
        files = lora_files(cfg, folder / "loras")
        ours = run_ours(cfg, protocol, files, folder, clip)
        ours["load_s"] += clip_load_s  # its one CLIP load, as the reference counts its own
        backend = ours.pop("backend")
        sweep = batch_sweep(backend, cfg.batch_sweep) if cfg.batch_sweep and backend.device.startswith("cuda") else []
        del backend
        if progress:
            progress(1, 2)
        _peak_gib(reset=True)
        ref = run_reference(cfg.backend, protocol, files, clip_folder, batch=cfg.ref_batch)
        ref["peak_gpu_gib"] = _peak_gib()
        if progress:
            progress(2, 2)
        costs = _costs(cfg, protocol, ours, ref)
    agree = _agreement(ours.pop("reps"), ref.pop("reps"))
    ours_total = ours["load_s"] + ours["submit_s"] + ours["run_s"]
    o_steady = ours["seconds"]["generate"] + ours["seconds"]["embed"]
    r_steady = ref["seconds"]["generate"] + ref["seconds"]["embed"]
    return {
        "config": {**asdict(cfg), "protocol_run": protocol},
        "device": clip.device,
        "clip": f"{clip.spec.architecture} random weights (one transformers folder for both sides)",
        "pairs": ours["lora_images"],
        "ours": ours,
        "reference": ref,
        "ours_total_s": ours_total,
        "ratio": ref["run_s"] / ours_total,
        "ours_images_per_s": ours["images"] / ours_total,
        "reference_images_per_s": ref["images"] / ref["run_s"],
        "ours_steady_images_per_s": ours["images"] / max(o_steady, 1e-9),
        "reference_steady_images_per_s": ref["images"] / max(r_steady, 1e-9),
        "steady_ratio": (ours["images"] / max(o_steady, 1e-9)) / (ref["images"] / max(r_steady, 1e-9)),
        "batch_sweep": sweep,
        "agreement": agree,
        "cost_per_lora": costs,
    }
