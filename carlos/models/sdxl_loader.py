"""Real SDXL base 1.0 weights: where they are found and how they are loaded.

:mod:`carlos.models.diffusion` keeps the backends and the pipeline logic; this module is
the one place that knows about the real weights: an explicit ``weights=`` path, the
``$CARLOS_SDXL_WEIGHTS`` default or the Hugging Face cache (offline unless
``allow_download``), a diffusers folder or a single-file ``.safetensors`` checkpoint
(with configs from ``sdxl_config``, the cache or our own), and error messages that say
exactly how to get the weights when they are absent. The cheap "are they here?" check
the dashboard shows is :func:`carlos.search.capabilities.sdxl_weights`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from carlos.errors import InvalidInputError

log = logging.getLogger(__name__)

SDXL_REPO_ID = "stabilityai/stable-diffusion-xl-base-1.0"
SDXL_BACKEND_ID = "sdxl-base-1.0"
#: Optional default for ``weights``: a diffusers folder or a single .safetensors checkpoint.
WEIGHTS_ENV = "CARLOS_SDXL_WEIGHTS"


def sdxl_weights_help(cache: Path) -> str:
    """Exact steps to make the SDXL base 1.0 weights available offline."""
    return (
        f"SDXL base 1.0 weights are not available offline (Hugging Face cache: {cache}).\n"
        "Get them on a machine with network access (about 7 GB, fp16):\n"
        f"  hf download {SDXL_REPO_ID} --include '*.json' --include '*.txt' "
        "--include '*/*.fp16.safetensors'\n"
        "(older huggingface_hub: `huggingface-cli download` with the same arguments), then copy "
        "the cache folder (~/.cache/huggingface/hub) here and point HF_HUB_CACHE (or HF_HOME) at it; "
        "or pass weights=<local diffusers folder> (e.g. from `hf download ... --local-dir DIR`) or "
        "weights=<sd_xl_base_1.0.safetensors single-file checkpoint>; or pass allow_download=True."
    )


def real_sdxl_loader(
    *, device: str, dtype: Any, weights: Any, sdxl_config: Any, allow_download: bool, cache_dir: Any, **_: Any
) -> tuple[Any, str]:
    """SDXL base 1.0 from a hub id (offline cache first), a diffusers folder or a single file."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    from carlos.errors import WeightsUnavailableError
    from carlos.models.clip_registry import hf_hub_cache_dir

    cache = hf_hub_cache_dir()
    if weights is None and os.environ.get(WEIGHTS_ENV):
        weights = os.environ[WEIGHTS_ENV]
    source = str(weights) if weights is not None else SDXL_REPO_ID
    path = Path(source).expanduser()
    common = {"dtype": dtype, "cache_dir": str(cache), "local_files_only": not allow_download}
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise InvalidInputError(f"single-file checkpoints must be .safetensors, got {path.name}")
        attempts = [
            lambda: StableDiffusionXLPipeline.from_single_file(
                str(path), config=_single_file_config(sdxl_config, cache, cache_dir), **common
            )
        ]
        backend_id = f"sdxl:{path.name}"
    else:
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise WeightsUnavailableError(f"{path} is not a diffusers folder (no model_index.json)")
        if not path.is_dir():
            if source.startswith((".", "/", "~")) or source.count("/") != 1:
                raise WeightsUnavailableError(f"no such SDXL weights file or folder: {source}\n" + sdxl_weights_help(cache))
            if not allow_download and not in_hf_cache(source, cache):
                raise WeightsUnavailableError(sdxl_weights_help(cache))
        # fp16 files first on GPU, full-precision first on CPU; either converts to `dtype`
        variants = ["fp16", None] if dtype == torch.float16 else [None, "fp16"]
        attempts = [
            (lambda v=v: StableDiffusionXLPipeline.from_pretrained(source, variant=v, use_safetensors=True, **common)) for v in variants
        ]
        backend_id = SDXL_BACKEND_ID if source == SDXL_REPO_ID else f"sdxl:{path.name}"
    errors = []
    for attempt in attempts:
        try:
            pipe = attempt()
            break
        except (OSError, ValueError) as err:
            errors.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
    else:
        raise WeightsUnavailableError(f"could not load SDXL from {source}: {'; '.join(errors)}\n" + sdxl_weights_help(cache))
    return pipe.to(device), backend_id


def in_hf_cache(repo_id: str, cache: Path) -> bool:
    """Whether a diffusers repo's ``model_index.json`` is in the Hugging Face cache.

    A missing or broken hub client counts as "not cached": the caller then says how
    to get the weights instead of failing on an import error.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=str(cache))
    except Exception as e:  # noqa: BLE001
        log.debug("Hugging Face cache lookup for %s failed: %s", repo_id, e)
        return False
    return isinstance(found, str)


def _single_file_config(sdxl_config: Any, cache: Path, cache_dir: Any) -> str:
    """Diffusers configs for a single-file checkpoint: given, cached hub configs, or ours."""
    if sdxl_config is not None:
        if not (Path(sdxl_config) / "model_index.json").is_file():
            raise InvalidInputError(f"sdxl_config must be a diffusers folder with model_index.json: {sdxl_config}")
        return str(sdxl_config)
    if in_hf_cache(SDXL_REPO_ID, cache):
        from huggingface_hub import snapshot_download

        return snapshot_download(SDXL_REPO_ID, cache_dir=str(cache), local_files_only=True, allow_patterns=["*.json", "*.txt"])
    from carlos.models.sdxl_arch import SDXL_BASE_1_0
    from carlos.models.tiny_sdxl import write_diffusers_configs

    return str(write_diffusers_configs(SDXL_BASE_1_0, tokenizer_cache=cache_dir))
