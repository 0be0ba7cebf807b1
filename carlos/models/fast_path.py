"""The fast path of a diffusion backend: speed options that leave the images' distribution alone.

What changes the images is :class:`carlos.models.diffusion.DiffusionSettings` plus the weights
dtype; that is ``DiffusionBackend.settings_dict()``, the base-image cache key. Nothing here is in
that key: every option below makes the same images (up to float rounding) faster.

* **LoRA fused into the weights** for its run (:class:`FusedLoRA`): diffusers' ``fuse_lora`` merges
  the adapter, ``unload_lora_weights`` then drops the PEFT wrappers, so every layer is one plain
  matmul again. The base weights it touches are snapshotted first and copied back afterwards, so
  unfusing restores the base model bit for bit (diffusers' own ``unfuse_lora`` subtracts the delta
  again: off by rounding, 3e-8 in fp32 and 5e-4 in fp16 on the tiny backend). Fused images equal
  the adapter's within rounding (tiny, fp32: at most 1 uint8 level).
* **SDPA attention**: every attention processor must be diffusers' ``AttnProcessor2_0`` (the
  default; checked, and set where it is not).
* **Batch**: the largest that fits (:func:`auto_batch_size`), from free GPU memory.
* **VAE in fp32 for the decode**: SDXL's VAE overflows in fp16. Its config says ``force_upcast``
  and diffusers then decodes in fp32 from the same fp16 weights; a config without it gets it set.
  With ``vae_slicing`` the batch is decoded one image at a time (bounded fp32 decode memory).
* No ``torch.cuda.empty_cache()`` anywhere in the generation loop (the caching allocator keeps
  its blocks between batches); optional ``torch.compile`` of the UNet and ``channels_last``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from carlos.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: Pipeline components a LoRA may touch (diffusers' SDXL LoRA loader).
LORA_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
GIB = 2**30


@dataclass(frozen=True)
class FastPath:
    """How a backend runs fast. Every field leaves the images as they are (up to rounding)."""

    #: Fuse the LoRA into the weights for its run; restore the snapshotted base weights after it.
    fuse_lora: bool = True
    #: Where the snapshot of the touched base weights lives: "device" (fast) or "cpu" (saves GPU memory).
    snapshot: str = "device"
    #: Images per pipeline call; None: :func:`auto_batch_size` on a GPU, 8 (tiny) or 1 (SDXL) on a CPU.
    batch_size: int | None = None
    #: Cap of the automatic batch (throughput is flat beyond it on an H200-class GPU at 1024²).
    max_batch: int = 16
    #: GPU memory one 1024² image takes during a batch (UNet activations with guidance, fp16), for the auto batch.
    gib_per_image: float = 1.5
    #: GPU memory kept free besides: one fp32 VAE decode (~3 at 1024²), the LoRA snapshot and a swap copy, CLIP.
    reserve_gib: float = 8.0
    #: "sdpa": every attention processor is AttnProcessor2_0 (set where not); "keep": as loaded.
    attention: str = "sdpa"
    #: fp16 weights decode in fp32 (sets the VAE's ``force_upcast`` where its config lacks it).
    vae_fp32: bool = True
    #: Decode the batch one image at a time; None: on a GPU only.
    vae_slicing: bool | None = None
    #: torch.compile the UNet (off: the first batch compiles for a minute or more).
    compile_unet: bool = False
    #: torch.compile mode ("default", "reduce-overhead", "max-autotune", ...).
    compile_mode: str = "default"
    #: UNet in channels_last memory format.
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.snapshot not in ("device", "cpu"):
            raise InvalidInputError(f"snapshot must be 'device' or 'cpu', got {self.snapshot!r}")
        if self.attention not in ("sdpa", "keep"):
            raise InvalidInputError(f"attention must be 'sdpa' or 'keep', got {self.attention!r}")
        for name in ("batch_size", "max_batch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidInputError(f"{name} must be an int >= 1, got {v!r}")
        if not self.gib_per_image > 0 or self.reserve_gib < 0:
            raise InvalidInputError("gib_per_image must be > 0 and reserve_gib >= 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The pipeline exactly as diffusers builds it: what the reference procedure runs.
PLAIN = FastPath(fuse_lora=False, attention="keep", vae_fp32=False, vae_slicing=False, max_batch=4)


def auto_batch_size(fast: FastPath, device: str, height: int, width: int) -> int:
    """``fast.batch_size``, else (free GPU memory - reserve) / per-image memory, in [1, max_batch]."""
    if fast.batch_size is not None:
        return fast.batch_size
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    per_image = fast.gib_per_image * GIB * height * width / 1024**2
    n = int((free - fast.reserve_gib * GIB) // per_image)
    return max(1, min(fast.max_batch, n))


def attention_processors(pipe: Any) -> dict[str, int]:
    """Class name -> how many attention layers of the UNet and VAE use it."""
    counts: dict[str, int] = {}
    for net in (pipe.unet, pipe.vae):
        for proc in net.attn_processors.values():
            counts[type(proc).__name__] = counts.get(type(proc).__name__, 0) + 1
    return counts


def prepare_pipeline(pipe: Any, fast: FastPath, device: str) -> dict[str, Any]:
    """Apply ``fast`` to a freshly loaded pipeline; returns what runs (for reports)."""
    import torch

    on_gpu = not device.startswith("cpu")
    if fast.attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        for net in (pipe.unet, pipe.vae):
            if any(not isinstance(p, AttnProcessor2_0) for p in net.attn_processors.values()):
                net.set_attn_processor(AttnProcessor2_0())
    vae = pipe.vae
    if fast.vae_fp32 and vae.dtype == torch.float16 and not vae.config.get("force_upcast", False):
        vae.register_to_config(force_upcast=True)  # fp16 SDXL VAE decodes overflow: decode in fp32
    if fast.vae_slicing if fast.vae_slicing is not None else on_gpu:
        vae.enable_slicing()
    if fast.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if fast.compile_unet:
        pipe.unet.compile(mode=fast.compile_mode)
    fp16_upcast = vae.dtype == torch.float16 and bool(vae.config.get("force_upcast"))
    return {
        "attention_processors": attention_processors(pipe),
        "sdpa_flash_enabled": bool(on_gpu and torch.backends.cuda.flash_sdp_enabled()),
        "vae_decode_dtype": "float32" if fp16_upcast else str(vae.dtype).removeprefix("torch."),
        "vae_slicing": bool(getattr(vae, "use_slicing", False)),
        "unet_compiled": fast.compile_unet,
        "channels_last": fast.channels_last,
    }


class FusedLoRA:
    """A LoRA merged into the pipeline's weights, with a snapshot of the base weights it changed.

    Built by :func:`fuse_lora` while the adapter is loaded and active; :meth:`restore` puts the
    snapshot back (exact), :meth:`base_weights` does so for the length of a ``with`` block.
    """

    def __init__(self, params: list[Any], originals: list[Any]) -> None:
        self.params = params
        self.originals = originals

    @property
    def n_tensors(self) -> int:
        return len(self.params)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for p, orig in zip(self.params, self.originals):
                p.copy_(orig, non_blocking=True)

    @contextmanager
    def base_weights(self) -> Iterator[None]:
        """The base model for a moment (base images made while a LoRA is fused)."""
        import torch

        with torch.no_grad():
            fused = [p.detach().clone() for p in self.params]
        self.restore()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, f in zip(self.params, fused):
                    p.copy_(f)


def fuse_lora(pipe: Any, adapter_name: str, snapshot: str = "device") -> FusedLoRA:
    """Merge the active adapter ``adapter_name`` into the weights and drop the PEFT layers.

    The scale is the adapter's weight from ``set_adapters`` (``lora_scale=1.0`` here adds none).
    On failure the snapshot is restored before the error propagates.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    seen: set[int] = set()
    params: list[Any] = []
    components = [c for c in LORA_COMPONENTS if getattr(pipe, c, None) is not None]
    for comp in components:
        for module in getattr(pipe, comp).modules():
            if isinstance(module, BaseTunerLayer):
                for p in module.get_base_layer().parameters(recurse=False):
                    if id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
    if not params:
        raise ValueError(f"adapter {adapter_name!r} has no layer to fuse")
    with torch.no_grad():
        originals = [p.detach().to("cpu", copy=True) if snapshot == "cpu" else p.detach().clone() for p in params]
    fused = FusedLoRA(params, originals)
    try:
        pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=[adapter_name])
        pipe.unload_lora_weights()  # the merged weights stay; the wrappers go
    except Exception:
        pipe.unload_lora_weights()
        fused.restore()
        raise
    merged = getattr(pipe, "_merged_adapters", None)
    if isinstance(merged, set):
        merged.discard(adapter_name)  # unloaded: no longer "fused" in diffusers' bookkeeping
    return fused


@contextmanager
def count_empty_cache() -> Iterator[list[int]]:
    """Counts ``torch.cuda.empty_cache()`` calls inside the block (tests and benchmarks)."""
    import torch

    calls: list[int] = []
    original = torch.cuda.empty_cache

    def counting() -> None:
        calls.append(1)
        original()

    torch.cuda.empty_cache = counting
    try:
        yield calls
    finally:
        torch.cuda.empty_cache = original
