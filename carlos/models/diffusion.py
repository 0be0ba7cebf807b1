"""Diffusion backends: paired base / LoRA generations on one loaded SDXL pipeline.

The paper's representation compares x0(p, s) and xl(p, s): the same prompt and seed with
and without the LoRA. So a backend (1) is loaded once, (2) gives image j of a prompt its
starting noise by a named scheme (:data:`NOISE_SCHEMES`), computed per image and passed
as ``latents=`` so the noise does not depend on batch composition, device or which LoRA is
active, and (3) attaches LoRAs as PEFT adapters to the same pipeline and removes them
again, never reloading the model.

The ``authors`` scheme reproduces the released procedure (PAPER.md, "Noise"): image j
(0..15) starts from slice ``j % 4`` of the latents diffusers draws for
``generator=torch.manual_seed(42 + 4 * (j // 4))`` with ``num_images_per_prompt=4``.

Backends (see :func:`list_backends`): ``tiny`` (SDXL architecture at toy size, random
weights, CPU-fast; for tests and demos), ``sdxl`` (the real SDXL base 1.0) and
``sdxl-random`` (full-size SDXL architecture with random weights, for GPU benchmarks).
Finding and loading the real SDXL weights is :mod:`carlos.models.sdxl_loader`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError, InvalidLoRAFileError
from carlos.models.fast_path import FastPath, FusedLoRA, auto_batch_size, fuse_lora, prepare_pipeline
from carlos.models.sdxl_loader import real_sdxl_loader
from carlos.models.tiny_sdxl import (
    CPU_EFFICIENCY,
    SDXL_UNET_TFLOP_PER_EVAL_1024,
    estimate_sdxl_cpu_seconds,
)

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

_ADAPTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DTYPES = ("float32", "float16", "bfloat16")


#: Noise schemes: how image j of a prompt gets its starting latents.
AUTHORS_NOISE = "authors"
PER_IMAGE_SEED = "per-image-seed"
NOISE_SCHEMES = {
    AUTHORS_NOISE: "as released: image j is slice j % 4 of the latents of torch.manual_seed(42 + 4 * (j // 4)) "
    "with num_images_per_prompt=4 (the default CPU generator)",
    PER_IMAGE_SEED: "image j from its own CPU torch.Generator seeded with j",
}
#: The released procedure's generator seeds: one call of 4 images per seed, 4 calls per prompt.
AUTHORS_FIRST_SEED = 42
AUTHORS_IMAGES_PER_CALL = 4


def authors_seed(j: int) -> tuple[int, int]:
    """(generator seed, slice) of image ``j`` of a prompt under the authors' noise."""
    return AUTHORS_FIRST_SEED + AUTHORS_IMAGES_PER_CALL * (j // AUTHORS_IMAGES_PER_CALL), j % AUTHORS_IMAGES_PER_CALL


@dataclass(frozen=True)
class DiffusionSettings:
    """Generation settings that determine the images; recorded in provenance."""

    steps: int = 25
    guidance_scale: float = 5.0
    height: int = 1024
    width: int = 1024
    lora_scale: float = 1.0
    scheduler: str = "EulerDiscreteScheduler"  # informative: the pipeline's own scheduler
    noise: str = AUTHORS_NOISE  # how image j's starting latents are drawn (NOISE_SCHEMES)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidInputError(f"steps must be an int >= 1, got {self.steps!r}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 8 or v % 8:
                raise InvalidInputError(f"{name} must be a positive multiple of 8, got {v!r}")
        for name in ("guidance_scale", "lora_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise InvalidInputError(f"{name} must be a finite number, got {v!r}")
        if self.guidance_scale < 0:
            raise InvalidInputError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.noise not in NOISE_SCHEMES:
            raise InvalidInputError(f"unknown noise scheme {self.noise!r}; choose one of: {', '.join(NOISE_SCHEMES)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackendSpec:
    """One registered backend: what it is, its default settings, how it is built."""

    name: str
    description: str
    default_settings: DiffusionSettings
    needs_weights: bool
    loader: Callable[..., tuple[Any, str]] = field(repr=False, compare=False)


def _tiny_loader(*, seed: int, device: str, dtype: Any, cache_dir: Any, **_: Any) -> tuple[Any, str]:
    from carlos.models.sdxl_arch import TINY_SDXL
    from carlos.models.tiny_sdxl import build_sdxl_pipeline

    pipe = build_sdxl_pipeline(TINY_SDXL, seed=seed, device=device, dtype=dtype, tokenizer_cache=cache_dir)
    return pipe, f"tiny-sdxl/seed{seed}"


def _random_sdxl_loader(*, seed: int, device: str, dtype: Any, cache_dir: Any, **_: Any) -> tuple[Any, str]:
    from carlos.models.sdxl_arch import SDXL_BASE_1_0
    from carlos.models.tiny_sdxl import build_sdxl_pipeline

    on_gpu = not device.startswith("cpu")
    pipe = build_sdxl_pipeline(SDXL_BASE_1_0, seed=seed, device=device, dtype=dtype, tokenizer_cache=cache_dir, init_on_device=on_gpu)
    return pipe, f"sdxl-random/seed{seed}" + ("/gpu-init" if on_gpu else "")


_BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "tiny",
            "SDXL architecture at toy size with seeded random weights; 64x64 px, CPU, no download",
            DiffusionSettings(steps=4, guidance_scale=5.0, height=64, width=64),
            needs_weights=False,
            loader=_tiny_loader,
        ),
        BackendSpec(
            "sdxl",
            "Stable Diffusion XL base 1.0 (the paper's backbone): 25 steps, 1024x1024, guidance 5.0",
            DiffusionSettings(steps=25, guidance_scale=5.0, height=1024, width=1024),
            needs_weights=True,
            loader=real_sdxl_loader,
        ),
        BackendSpec(
            "sdxl-random",
            "full-size SDXL base 1.0 architecture with random weights, for GPU throughput benchmarks",
            DiffusionSettings(steps=25, guidance_scale=5.0, height=1024, width=1024),
            needs_weights=False,
            loader=_random_sdxl_loader,
        ),
    )
}


def list_backends() -> list[str]:
    """Names accepted by :func:`get_backend_spec` and :class:`DiffusionBackend`."""
    return sorted(_BACKENDS)


def get_backend_spec(name: str) -> BackendSpec:
    if name not in _BACKENDS:
        raise InvalidInputError(f"unknown diffusion backend {name!r}; valid backends: {', '.join(list_backends())}")
    return _BACKENDS[name]


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise InvalidInputError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' requested but torch sees no CUDA GPU; use device='cpu'")
    return device


class DiffusionBackend:
    """A loaded pipeline that makes paired base / LoRA images.

    ``pipeline_loads`` counts pipeline constructions (stays 1 for the object's life) and
    ``lora_loads`` / ``lora_unloads`` count adapter operations, so callers and tests can
    check that switching LoRAs never reloads the model. ``fast_path``
    (:class:`~carlos.models.fast_path.FastPath`, default: all its speed-ups) never enters
    :meth:`settings_dict`; ``batch_size`` overrides its batch.
    """

    def __init__(
        self,
        name: str = "tiny",
        *,
        settings: DiffusionSettings | None = None,
        device: str | None = None,
        dtype: str | None = None,
        seed: int = 0,
        weights: str | Path | None = None,
        sdxl_config: str | Path | None = None,
        allow_download: bool = False,
        cache_dir: str | Path | None = None,
        batch_size: int | None = None,
        fast_path: FastPath | None = None,
    ) -> None:
        import torch

        self.spec = get_backend_spec(name)
        self.name = name
        self.settings = settings if settings is not None else self.spec.default_settings
        if not isinstance(self.settings, DiffusionSettings):
            raise InvalidInputError("settings must be a DiffusionSettings")
        self.device = _resolve_device(device)
        on_gpu = not self.device.startswith("cpu")
        if dtype is None:  # tiny stays fp32 everywhere: random toy weights gain nothing from fp16
            dtype = "float16" if on_gpu and name != "tiny" else "float32"
        if dtype not in _DTYPES:
            raise InvalidInputError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        if weights is not None and not self.spec.needs_weights:
            raise InvalidInputError(f"backend {name!r} builds its own weights; do not pass weights=")
        self.fast_path = fast_path if fast_path is not None else FastPath()
        if batch_size is not None:
            self._check_batch(batch_size)
        if self.device == "cpu" and name != "tiny":
            est = estimate_sdxl_cpu_seconds(self.settings.steps, self.settings.guidance_scale, self.settings.height, self.settings.width)
            logger.warning(
                "running full-size SDXL on CPU: about %.1f min per image at %dx%d, %d steps "
                "(estimate: %.1f TFLOP per UNet evaluation at 1024x1024 counted with torch's FlopCounterMode, "
                "x2 for guidance, + VAE decode, at %.0f%% of this CPU's measured fp32 matmul rate); "
                "use a CUDA GPU for real runs",
                est / 60,
                self.settings.width,
                self.settings.height,
                self.settings.steps,
                SDXL_UNET_TFLOP_PER_EVAL_1024,
                CPU_EFFICIENCY * 100,
            )
        t0 = time.perf_counter()
        self.pipeline, self.backend_id = self.spec.loader(
            seed=seed,
            device=self.device,
            dtype=getattr(torch, dtype),
            weights=weights,
            sdxl_config=sdxl_config,
            allow_download=allow_download,
            cache_dir=cache_dir,
        )
        self.pipeline.set_progress_bar_config(disable=True)
        self.fast_report = prepare_pipeline(self.pipeline, self.fast_path, self.device)
        if batch_size is None and on_gpu:  # the largest batch that fits (FastPath: auto or its batch_size)
            batch_size = auto_batch_size(self.fast_path, self.device, self.settings.height, self.settings.width)
        elif batch_size is None:  # CPU SDXL: one image at a time; memory is not the limit there, time is
            batch_size = self.fast_path.batch_size or (8 if name == "tiny" else 1)
        self.default_batch_size = self._check_batch(batch_size)
        self.fused: FusedLoRA | None = None
        self.lora_seconds = {"load": 0.0, "unload": 0.0}  # attach (+ fuse) and detach (+ restore)
        self.pipeline_loads = 1
        self.lora_loads = 0
        self.lora_unloads = 0
        self.active_lora: Path | None = None
        self.adapter_name: str | None = None
        self._latent_blocks: dict[tuple[int, Any], Any] = {}
        logger.info("diffusion backend %s ready in %.1f s", self.backend_id, time.perf_counter() - t0)

    # ------------------------------------------------------------------ provenance

    def settings_dict(self) -> dict[str, Any]:
        """Everything that determines the images, for the provenance record."""
        return {
            "backend": self.name,
            "backend_id": self.backend_id,
            **self.settings.as_dict(),
            "dtype": self.dtype,
            "device_type": self.device.split(":")[0],
            "noise_scheme": NOISE_SCHEMES[self.settings.noise],
        }

    # ------------------------------------------------------------------ LoRA adapters

    def load_lora(self, path: str | Path, adapter_name: str | None = None) -> str:
        """Attach a LoRA file as the only active adapter (replacing any other); returns its name."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"LoRA file not found: {path}")
        if path.suffix.lower() != ".safetensors":
            raise InvalidInputError(f"LoRA files must be .safetensors (no pickles), got {path.name}")
        if adapter_name is None:
            adapter_name = f"carlos_lora_{self.lora_loads}"
        if not isinstance(adapter_name, str) or not _ADAPTER_NAME.match(adapter_name):
            raise InvalidInputError(f"adapter_name must be a Python identifier of <= 64 characters, got {adapter_name!r}")
        if self.active_lora is not None:
            self.unload_lora()
        pipe, t0 = self.pipeline, time.perf_counter()
        try:
            pipe.load_lora_weights(str(path), adapter_name=adapter_name, use_safetensors=True)  # True: no pickle fallback
            loaded = {n for names in pipe.get_list_adapters().values() for n in names}
            if adapter_name not in loaded:
                raise ValueError("no layer of the pipeline matched the file's LoRA keys")
            pipe.set_adapters([adapter_name], adapter_weights=[float(self.settings.lora_scale)])
            if self.fast_path.fuse_lora:
                self.fused = fuse_lora(pipe, adapter_name, self.fast_path.snapshot)
        except (ValueError, KeyError, RuntimeError, TypeError) as err:
            self._remove_adapters()
            raise InvalidLoRAFileError(f"could not load LoRA {path.name} onto {self.backend_id}: {err}") from err
        self.active_lora, self.adapter_name = path.resolve(), adapter_name
        self.lora_loads += 1
        self.lora_seconds["load"] += time.perf_counter() - t0
        logger.info("loaded LoRA %s as adapter %s", path.name, adapter_name)
        return adapter_name

    def unload_lora(self) -> None:
        """Remove the active LoRA so the pipeline computes exactly the base model again."""
        if self.active_lora is None:
            return
        t0 = time.perf_counter()
        if self.fused is not None:  # the snapshot back: the base weights bit for bit
            self.fused.restore()
            self.fused = None
        self._remove_adapters()
        self.lora_seconds["unload"] += time.perf_counter() - t0
        self.active_lora, self.adapter_name = None, None
        self.lora_unloads += 1

    def _remove_adapters(self) -> None:
        try:
            self.pipeline.unload_lora_weights()
        except Exception:
            logger.exception("could not remove LoRA layers from %s", self.backend_id)

    @contextmanager
    def lora(self, path: str | Path, adapter_name: str | None = None) -> Iterator[DiffusionBackend]:
        """``with backend.lora(path): backend.generate(...)`` -- unloaded on exit, even on error."""
        self.load_lora(path, adapter_name)
        try:
            yield self
        finally:
            self.unload_lora()

    # ------------------------------------------------------------------ generation

    @staticmethod
    def _check_batch(batch_size: Any) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        return batch_size

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        lora: str | Path | None = None,
        base: bool = False,
        batch_size: int | None = None,
        progress: ProgressFn | None = None,
    ) -> list[np.ndarray]:
        """One uint8 HxWx3 image per (prompt, seed), in input order.

        With the defaults the pipeline runs as it stands: base images when no LoRA is
        attached, LoRA images inside ``with backend.lora(path)``. ``lora=path`` attaches that
        file first unless it is already the active one (it stays attached). ``base=True``
        disables an attached adapter (swaps the base weights in, if fused) for this call only.
        ``seeds`` are image indices j within their prompt; the noise scheme of the settings turns
        j into starting latents. The noise of an image depends on j alone, but kernels may round differently
        for other batch shapes (up to 1/255 on CPU): pair base and LoRA runs with the same
        ``batch_size`` and prompt order when the comparison must be bit-exact.
        """
        if lora is not None and base:
            raise InvalidInputError("pass either lora=path or base=True, not both")
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InvalidInputError("prompts must be a list of strings")
        seeds = list(seeds)
        if len(prompts) != len(seeds):
            raise InvalidInputError(f"{len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < 2**63:
                raise InvalidInputError(f"seeds must be ints in [0, 2**63), got {s!r}")
        batch = self._check_batch(batch_size) if batch_size is not None else self.default_batch_size
        if lora is not None and (self.active_lora is None or Path(lora).expanduser().resolve() != self.active_lora):
            self.load_lora(lora)
        if base and self.fused is not None:  # fused: swap the base weights in for this call
            with self.fused.base_weights():
                return self._run(list(prompts), [int(s) for s in seeds], batch, progress)
        disable = base and self.active_lora is not None
        if disable:
            self.pipeline.disable_lora()
        try:
            return self._run(list(prompts), [int(s) for s in seeds], batch, progress)
        finally:
            if disable:
                self.pipeline.enable_lora()

    def initial_latents(self, seeds: list[int]) -> Any:
        """Starting latents (before the scheduler's sigma scaling) of images ``seeds``, on the
        pipeline's device and dtype, drawn on the CPU exactly as diffusers draws them."""
        import torch

        pipe, s = self.pipeline, self.settings
        shape = (pipe.unet.config.in_channels, s.height // pipe.vae_scale_factor, s.width // pipe.vae_scale_factor)
        dtype = pipe.text_encoder_2.dtype if getattr(pipe, "text_encoder_2", None) is not None else pipe.unet.dtype
        rows = []
        for j in seeds:
            if s.noise == AUTHORS_NOISE:
                seed, k = authors_seed(j)
                block = self._latent_blocks.get((seed, dtype))
                if block is None:  # one draw of 4 serves 4 images; keep the last few
                    block = torch.randn((AUTHORS_IMAGES_PER_CALL, *shape), generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)
                    if len(self._latent_blocks) >= 8:
                        self._latent_blocks.pop(next(iter(self._latent_blocks)))
                    self._latent_blocks[(seed, dtype)] = block
                rows.append(block[k])
            else:
                rows.append(torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(j), dtype=dtype)[0])
        return torch.stack(rows).to(self.device)

    def _run(self, prompts: list[str], seeds: list[int], batch: int, progress: ProgressFn | None) -> list[np.ndarray]:
        s = self.settings
        images: list[np.ndarray] = []
        total = len(prompts)
        for start in range(0, total, batch):
            chunk = slice(start, start + batch)
            out = self.pipeline(
                prompt=prompts[chunk],
                num_inference_steps=s.steps,
                guidance_scale=s.guidance_scale,
                height=s.height,
                width=s.width,
                latents=self.initial_latents(seeds[chunk]),
                output_type="np",
            ).images
            if np.isnan(out).any():
                logger.warning("NaN pixels in a batch of %s (fp16 overflow?); set to 0", self.backend_id)
                out = np.nan_to_num(out, nan=0.0)
            images.extend(np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8))
            if progress is not None:
                progress(len(images), total)
        return images
