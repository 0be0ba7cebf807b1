"""SDXL-architecture pipelines built from config, without any download.

Two uses: a *tiny* SDXL (seeded random weights, 64x64 px, CPU-fast) so the whole
generate -> LoRA -> embed path runs in tests, and a *full-size* SDXL with random
weights (the configs of SDXL base 1.0, :mod:`carlos.models.sdxl_arch`) for GPU
throughput benchmarks where the real weights are not at hand. Both are real
``StableDiffusionXLPipeline`` objects, so LoRA loading, CFG and the
``text_time`` added conditioning run the same code as with the real model.

This module owns building the networks and the pipeline from an
:class:`~carlos.models.sdxl_arch.SDXLArchitecture`, writing it out as a diffusers
config folder, and its compute cost (counted FLOPs, a CPU time estimate). The
tokenizers come from :mod:`carlos.models.clip_tokenizer`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from carlos.errors import InvalidInputError
from carlos.models.clip_tokenizer import CLIP_CONTEXT_LENGTH, EOS_TOKEN, TOKENIZER_2_PAD, load_clip_tokenizer
from carlos.models.sdxl_arch import SDXLArchitecture

logger = logging.getLogger(__name__)


def _text_config(cfg: Mapping[str, Any]):
    from transformers import CLIPTextConfig

    # eos 49407 (not the legacy 2): the pooled output is read at the first end token,
    # which works whatever the pad id of the tokenizer is.
    return CLIPTextConfig(**dict(cfg), bos_token_id=49406, eos_token_id=49407, pad_token_id=1)


def build_networks(arch: SDXLArchitecture, seed: int = 0) -> dict[str, Any]:
    """Instantiate the four networks under the current default device, seeded."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    nets: dict[str, Any] = {}
    for i, (name, make) in enumerate(
        [
            ("unet", lambda: UNet2DConditionModel(**dict(arch.unet))),
            ("vae", lambda: AutoencoderKL(**dict(arch.vae))),
            ("text_encoder", lambda: CLIPTextModel(_text_config(arch.text_encoder))),
            ("text_encoder_2", lambda: CLIPTextModelWithProjection(_text_config(arch.text_encoder_2))),
        ]
    ):
        # one seed offset per network: adding a network later does not change the others
        torch.manual_seed(seed + i)
        nets[name] = make()
    return nets


def count_parameters(arch: SDXLArchitecture) -> dict[str, int]:
    """Exact parameter counts per network, built on the ``meta`` device (no memory, no init cost)."""
    import torch

    with torch.device("meta"):
        nets = build_networks(arch)
    return {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}


def build_sdxl_pipeline(
    arch: SDXLArchitecture,
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: Any = None,
    tokenizer_cache: str | Path | None = None,
    init_on_device: bool = False,
):
    """A ``StableDiffusionXLPipeline`` with seeded random weights for ``arch``.

    The global torch RNG is left as it was (``fork_rng``), so building a pipeline never
    changes the randomness of the caller. Weights are drawn on the CPU, so they depend only
    on ``seed`` and the torch version, whatever the device; ``init_on_device=True`` draws
    them on ``device`` instead (fast for the full-size model, ~10 GB of fp32 UNet, but the
    weights then differ between CPU and GPU -- fine for throughput benchmarks only).
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    if not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative int, got {seed!r}")
    dtype = dtype or torch.float32
    dev = torch.device(device)
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        if dev.type == "cpu" or not init_on_device:
            nets = build_networks(arch, seed)
        else:
            with dev:
                nets = build_networks(arch, seed)
    for net in nets.values():
        net.to(dev).eval().requires_grad_(False)
        if dtype != torch.float32:
            net.to(dtype)
    pipe = StableDiffusionXLPipeline(
        vae=nets["vae"],
        text_encoder=nets["text_encoder"],
        text_encoder_2=nets["text_encoder_2"],
        tokenizer=load_clip_tokenizer(EOS_TOKEN, tokenizer_cache),
        tokenizer_2=load_clip_tokenizer(TOKENIZER_2_PAD, tokenizer_cache),
        unet=nets["unet"],
        scheduler=EulerDiscreteScheduler(**dict(arch.scheduler)),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    logger.info("built %s pipeline (seed %d) on %s/%s", arch.name, seed, dev, dtype)
    return pipe


def write_diffusers_configs(arch: SDXLArchitecture, dest: str | Path | None = None, tokenizer_cache: str | Path | None = None) -> Path:
    """Write ``arch`` as a diffusers pipeline folder without weights (configs + tokenizers).

    ``from_single_file(..., config=folder)`` needs such a folder to know the architecture; this
    one works offline, where the hub's copy of the SDXL configs is not cached.
    """
    import diffusers

    from carlos.config import default_paths

    folder = Path(dest) if dest is not None else default_paths().cache_dir / "diffusers_configs" / arch.name
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
    }
    files = {
        "model_index.json": index,
        "unet/config.json": {"_class_name": "UNet2DConditionModel", **arch.unet},
        "vae/config.json": {"_class_name": "AutoencoderKL", **arch.vae},
        "scheduler/scheduler_config.json": {"_class_name": "EulerDiscreteScheduler", **arch.scheduler},
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    for sub, cfg, cls in (
        ("text_encoder", arch.text_encoder, "CLIPTextModel"),
        ("text_encoder_2", arch.text_encoder_2, "CLIPTextModelWithProjection"),
    ):
        config = _text_config(cfg)
        config.architectures = [cls]
        config.save_pretrained(folder / sub)
    load_clip_tokenizer(EOS_TOKEN, tokenizer_cache).save_pretrained(folder / "tokenizer")
    load_clip_tokenizer(TOKENIZER_2_PAD, tokenizer_cache).save_pretrained(folder / "tokenizer_2")
    return folder


# --------------------------------------------------------------------------- cost


#: FLOPs of SDXL base 1.0 at 1024x1024 (128x128 latents), counted by :func:`count_tflops`
#: (torch's FlopCounterMode on the meta device): one UNet evaluation of one image, one VAE decode.
SDXL_UNET_TFLOP_PER_EVAL_1024 = 6.76
SDXL_VAE_DECODE_TFLOP_1024 = 10.47
#: Share of the measured fp32 matmul rate that convolutions + attention sustain (an assumption).
CPU_EFFICIENCY = 0.5


def count_tflops(arch: SDXLArchitecture, height: int, width: int) -> dict[str, float]:
    """TFLOPs of one UNet evaluation and one VAE decode for one image, counted on ``meta``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    f = arch.vae_scale_factor
    te2 = arch.text_encoder_2
    with torch.device("meta"):
        nets = build_networks(arch)
        latents = torch.empty(1, arch.unet["in_channels"], height // f, width // f)
        context = torch.empty(1, CLIP_CONTEXT_LENGTH, arch.unet["cross_attention_dim"])
        added = {"text_embeds": torch.empty(1, te2["projection_dim"]), "time_ids": torch.empty(1, 6)}
        with FlopCounterMode(display=False) as unet_count:
            nets["unet"](latents, torch.zeros(1), encoder_hidden_states=context, added_cond_kwargs=added)
        with FlopCounterMode(display=False) as vae_count:
            nets["vae"].decode(latents)
    return {"unet_eval": unet_count.get_total_flops() / 1e12, "vae_decode": vae_count.get_total_flops() / 1e12}


def measure_cpu_gflops(seconds: float = 0.2) -> float:
    """fp32 matmul rate of this CPU in GFLOP/s (a short benchmark, for estimates only)."""
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    torch.mm(a, b)  # warm-up
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 512**3 * n / elapsed / 1e9


def estimate_sdxl_cpu_seconds(steps: int, guidance_scale: float, height: int, width: int, gflops: float | None = None) -> float:
    """Seconds per SDXL image on this CPU: counted FLOPs / (measured matmul rate x efficiency).

    FLOPs are scaled linearly with the pixel count (attention grows faster, so large images
    are underestimated); classifier-free guidance doubles the UNet evaluations.
    """
    gflops = gflops if gflops is not None else measure_cpu_gflops()
    area = height * width / 1024**2
    evals = steps * (2 if guidance_scale > 1 else 1)
    tflop = area * (evals * SDXL_UNET_TFLOP_PER_EVAL_1024 + SDXL_VAE_DECODE_TFLOP_1024)
    return tflop * 1e3 / (gflops * CPU_EFFICIENCY)
