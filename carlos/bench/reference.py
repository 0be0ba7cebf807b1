"""The authors' characterization loop as shipped (``carlos==0.0.3``), re-implemented for timing.

PAPER.md, "The authors' procedure as released", gives the facts; this module follows them:

* one **base run** (no LoRA loaded, ``cross_attention_kwargs={"scale": 0.0}``) makes the base
  images and their CLIP embeddings once; every later LoRA reuses them, as the release's
  completeness check does;
* per LoRA, one **LoRA run**: the pipeline is loaded again (fp16), the file attached with
  ``load_lora_weights`` (adapter named after the file), CLIP loaded again;
* per prompt, images in calls of ``num_images_per_prompt=4`` with
  ``generator=torch.manual_seed(s)`` for s = 42, 46, 50, 54 (fewer images per prompt: one call of
  that many) and ``cross_attention_kwargs={"scale": 1.0}``, ``torch.cuda.empty_cache()`` after
  every call (on CUDA), pipeline defaults otherwise;
* CLIP: transformers ``CLIPModel`` + ``CLIPProcessor`` (PIL image processor) on the
  full-resolution PIL images, the 16 images of a prompt per batch, ``get_image_features``.

Left out, so the reference here is if anything faster than the release: writing every image as
a 1024² PNG and reading it back, the thumbnails, the per-file ``.pt`` embeddings, and the
release's extra pipeline + CLIP load for the (already complete) base run on every LoRA.
With random weights the CLIP is a ``CLIPModel`` built from ``CLIPConfig()`` (ViT-B/32 sizes) and
written as a transformers folder (:func:`write_random_clip_folder`) that our side loads too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench.stage_timer import StageTimer

#: The release's generation batch and first seed, and its CLIP batch.
AUTHORS_BATCH, AUTHORS_FIRST_SEED, AUTHORS_CLIP_BATCH = 4, 42, 16
#: OpenAI's ``preprocessor_config.json`` of ``openai/clip-vit-base-patch32``.
OPENAI_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


def write_random_clip_folder(folder: Path, seed: int = 0, tokenizer_cache: Path | None = None) -> Path:
    """A transformers CLIP ViT-B/32 folder with seeded random weights (no download)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from carlos.models.clip_tokenizer import EOS_TOKEN, load_clip_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig())  # transformers' defaults are ViT-B/32 (quick_gelu, 512-d projection)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(OPENAI_PREPROCESSOR), encoding="utf-8")
    load_clip_tokenizer(EOS_TOKEN, tokenizer_cache).save_pretrained(folder)
    return folder


def load_reference_clip(folder: Path, device: str) -> tuple[Any, Any, str]:
    """(CLIPModel, CLIPProcessor, image processor class) as the release loads them, from ``folder``."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(folder).to(device).eval()
    try:  # the release ran transformers 4, whose default CLIP image processor is the PIL one
        processor = CLIPProcessor.from_pretrained(folder, backend="pil")
    except (TypeError, ValueError):
        processor = CLIPProcessor.from_pretrained(folder, use_fast=False)
    return model, processor, type(processor.image_processor).__name__


def authors_images(
    pipe: Any, prompt: str, n_images: int, settings: Any, scale: float, counts: dict[str, int], max_batch: int = AUTHORS_BATCH
) -> list[Any]:
    """The ``n_images`` PIL images of one prompt, made in the release's calls (``max_batch`` 4 as released)."""
    import torch

    batch = min(max_batch, n_images)
    images: list[Any] = []
    with torch.no_grad():
        for seed in range(AUTHORS_FIRST_SEED, AUTHORS_FIRST_SEED + n_images, max_batch):
            images += pipe(
                prompt,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,  # the pipeline's default for SDXL (5.0); the tiny one's own
                height=settings.height,
                width=settings.width,
                cross_attention_kwargs={"scale": scale},
                generator=torch.manual_seed(seed),
                num_images_per_prompt=batch,
            ).images
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                counts["empty_cache"] = counts.get("empty_cache", 0) + 1
    return images


def authors_embed(model: Any, processor: Any, images: list[Any], device: str) -> np.ndarray:
    """``get_image_features`` of the processor's pixels, batches of 16, as float32 rows."""
    import torch

    rows = []
    for i in range(0, len(images), AUTHORS_CLIP_BATCH):
        inputs = processor(images=images[i : i + AUTHORS_CLIP_BATCH], return_tensors="pt", padding=True).to(device=device)
        with torch.no_grad():
            out = model.get_image_features(**inputs)
        rows.append(getattr(out, "pooler_output", out).float().cpu().numpy())  # transformers 5 wraps the tensor
    return np.concatenate(rows) if rows else np.zeros((0, 512), np.float32)


def run_reference(
    backend_name: str,
    protocol: str,
    files: list[Path],
    clip_folder: Path,
    *,
    batch: int = AUTHORS_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The base run once, then one LoRA run per file; seconds per stage, images, representations."""
    import torch

    from carlos.characterize.engine import get_protocol, lora_prompt, protocol_pairs
    from carlos.characterize.jobs import backend_settings
    from carlos.core.representation import summarize
    from carlos.models.diffusion import DiffusionBackend
    from carlos.models.fast_path import PLAIN

    proto = get_protocol(protocol)
    pairs, _ = protocol_pairs(proto)
    prompts = list(dict.fromkeys(p.prompt for p in pairs))  # in order; seeds 0..M-1 each
    m = proto.seeds_per_prompt
    settings, dtype = backend_settings(backend_name, protocol)
    if backend_name == "tiny":
        torch.set_num_threads(1)  # as our worker's factory does for the tiny backend
    sec = dict.fromkeys(("load", "lora_load", "generate", "embed", "summarise"), 0.0)
    counts: dict[str, int] = {"pipeline_loads": 0, "clip_loads": 0, "empty_cache": 0}
    timer: StageTimer | None = None
    device = "cpu"
    images = 0
    processor_class = ""

    def one_run(lora: Path | None) -> np.ndarray:
        nonlocal timer, device, images, processor_class
        t0 = time.perf_counter()
        backend = DiffusionBackend(backend_name, settings=settings, dtype=dtype, fast_path=PLAIN)
        device = backend.device
        t1 = time.perf_counter()
        if lora is not None:
            backend.pipeline.load_lora_weights(str(lora), adapter_name=lora.stem.replace("-", "_"))
        t2 = time.perf_counter()
        model, processor, processor_class = load_reference_clip(clip_folder, device)
        t3 = time.perf_counter()
        counts["pipeline_loads"] += 1
        counts["clip_loads"] += 1
        sec["load"] += (t1 - t0) + (t3 - t2)
        sec["lora_load"] += t2 - t1
        timer = timer or StageTimer(device)
        timer.attach(backend.pipeline)
        feats = []
        for prompt in prompts:
            t4 = time.perf_counter()
            text = lora_prompt(prompt, None) if lora is not None else prompt
            imgs = authors_images(backend.pipeline, text, m, settings, 1.0 if lora is not None else 0.0, counts, batch)
            t5 = time.perf_counter()
            feats.append(authors_embed(model, processor, imgs, device))
            sec["generate"] += t5 - t4
            sec["embed"] += time.perf_counter() - t5
            images += len(imgs)
        timer.close()
        del backend, model, processor
        return np.concatenate(feats).astype(np.float64)

    t_all = time.perf_counter()
    base = one_run(None)
    reps = []
    for i, f in enumerate(files):
        lora_feats = one_run(f)
        t = time.perf_counter()
        rep = summarize(lora_feats - base)
        sec["summarise"] += time.perf_counter() - t
        reps.append((rep.direction, rep.strength, rep.consistency))
        if progress:
            progress(i + 1, len(files))
    run_s = time.perf_counter() - t_all
    assert timer is not None
    return {
        "run_s": run_s,
        "seconds": sec,
        "stages": timer.split(sec["generate"]),
        "images": images,
        "base_images": len(base),
        "lora_images": images - len(base),
        "pipeline_loads": counts["pipeline_loads"],
        "clip_loads": counts["clip_loads"],
        "empty_cache_calls": counts["empty_cache"],
        "clip_image_processor": processor_class,
        "device": device,
        "reps": reps,
    }
