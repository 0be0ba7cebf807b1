"""SDXL-architecture pipelines built from config, without any download.

Two uses: a *tiny* SDXL (seeded random weights, 64x64 px, CPU-fast) so the whole
generate -> LoRA -> embed path runs in tests, and a *full-size* SDXL with random
weights (configs of SDXL base 1.0 written out below as data) for GPU throughput
benchmarks where the real weights are not at hand. Both are real
``StableDiffusionXLPipeline`` objects, so LoRA loading, CFG and the
``text_time`` added conditioning run the same code as with the real model.

The CLIP tokenizers are rebuilt from the BPE table that open_clip ships in its
package (``bpe_simple_vocab_16e6.txt.gz``), so no tokenizer download is needed.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from carlos.errors import InvalidInputError

logger = logging.getLogger(__name__)

CLIP_CONTEXT_LENGTH = 77
CLIP_VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
#: SDXL's second tokenizer (OpenCLIP bigG) pads with "!" (id 0), as open_clip does.
TOKENIZER_2_PAD = "!"
_N_MERGES = 49152 - 256 - 2  # what CLIP keeps of the BPE table (open_clip and OpenAI alike)
_TOKENIZER_FORMAT = "carlos-clip-bpe-v1"  # bump when the written files change


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


# --------------------------------------------------------------------------- tokenizer


def _default_tokenizer_cache() -> Path:
    from carlos.config import default_paths

    return default_paths().cache_dir / "clip_tokenizer"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (the first 256 vocabulary entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_tokenizer_dir(cache_dir: str | Path | None = None) -> Path:
    """Write (once) ``vocab.json`` + ``merges.txt`` converted from open_clip's BPE table.

    The vocabulary order is CLIP's: 256 byte symbols, the same with ``</w>``, one entry per
    merge, then the start/end tokens (ids 49406/49407), so ids match open_clip's tokenizer.
    """
    from open_clip.tokenizer import default_bpe

    folder = Path(cache_dir) if cache_dir is not None else _default_tokenizer_cache()
    folder = folder / _TOKENIZER_FORMAT
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    if len(vocab) != CLIP_VOCAB_SIZE or len(set(vocab)) != CLIP_VOCAB_SIZE:
        raise InvalidInputError(f"open_clip's BPE table gave {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}; reinstall open_clip_torch")
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "vocab.json": json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
    }
    for name, text in files.items():  # atomic: concurrent builders never see half a file
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, folder / name)
    return folder


def load_clip_tokenizer(pad_token: str = EOS_TOKEN, cache_dir: str | Path | None = None):
    """A transformers ``CLIPTokenizer`` (77 tokens) from the converted open_clip vocabulary."""
    from transformers import CLIPTokenizer

    folder = clip_tokenizer_dir(cache_dir)
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        pad_token=pad_token,
        model_max_length=CLIP_CONTEXT_LENGTH,
    )


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class SDXLArchitecture:
    """Configs of the four SDXL networks plus the scheduler, as plain data."""

    name: str
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_encoder: Mapping[str, Any]
    text_encoder_2: Mapping[str, Any]
    scheduler: Mapping[str, Any]

    def __post_init__(self) -> None:
        check_sdxl_consistency(self)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)


def check_sdxl_consistency(arch: SDXLArchitecture) -> None:
    """Raise if the UNet's conditioning sizes do not fit the two text encoders.

    SDXL concatenates the penultimate hidden states of both encoders (cross-attention
    context) and feeds the pooled, projected output of the second one plus six
    Fourier-embedded size/crop numbers (``add_time_ids``) to the ``text_time`` embedding.
    """
    te1, te2, unet = arch.text_encoder, arch.text_encoder_2, arch.unet
    context = te1["hidden_size"] + te2["hidden_size"]
    if unet["cross_attention_dim"] != context:
        raise InvalidInputError(
            f"{arch.name}: UNet cross_attention_dim {unet['cross_attention_dim']} != "
            f"text_encoder hidden {te1['hidden_size']} + text_encoder_2 hidden {te2['hidden_size']}"
        )
    added = 6 * unet["addition_time_embed_dim"] + te2["projection_dim"]
    if unet["projection_class_embeddings_input_dim"] != added or unet["addition_embed_type"] != "text_time":
        raise InvalidInputError(
            f"{arch.name}: projection_class_embeddings_input_dim must be 6 * addition_time_embed_dim "
            f"+ text_encoder_2 projection_dim = {added} with addition_embed_type 'text_time'"
        )


#: The Euler scheduler of SDXL base 1.0 (scheduler/scheduler_config.json there).
SDXL_SCHEDULER = _frozen(
    {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "timestep_spacing": "leading",
        "steps_offset": 1,
    }
)

#: SDXL base 1.0, sizes as in its unet/ vae/ text_encoder/ text_encoder_2/ config.json files.
SDXL_BASE_1_0 = SDXLArchitecture(
    name="sdxl-base-1.0",
    unet=_frozen(
        {
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10),
            "attention_head_dim": (5, 10, 20),
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "norm_num_groups": 32,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        }
    ),
    vae=_frozen(
        {
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": (128, 256, 512, 512),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "norm_num_groups": 32,
            "sample_size": 1024,
            "scaling_factor": 0.13025,
            "force_upcast": True,
        }
    ),
    text_encoder=_frozen(  # CLIP ViT-L/14 text tower (OpenAI)
        {
            "vocab_size": CLIP_VOCAB_SIZE,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "projection_dim": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        }
    ),
    text_encoder_2=_frozen(  # OpenCLIP ViT-bigG/14 text tower, with its text projection
        {
            "vocab_size": CLIP_VOCAB_SIZE,
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "projection_dim": 1280,
            "num_hidden_layers": 32,
            "num_attention_heads": 20,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
        }
    ),
    scheduler=SDXL_SCHEDULER,
)

#: Same block structure as SDXL (layers_per_block=2, a plain first stage, cross-attention
#: stages with linear projections, text_time conditioning) at toy widths. The encoders have
#: different widths so a wiring mistake (te1 vs te2) cannot go unnoticed.
TINY_SDXL = SDXLArchitecture(
    name="tiny-sdxl",
    unet=_frozen(
        {
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": (32, 64),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2),
            "attention_head_dim": (2, 4),
            "cross_attention_dim": 32 + 64,
            "use_linear_projection": True,
            "norm_num_groups": 16,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        }
    ),
    vae=_frozen(
        {
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (16, 32, 32),
            "down_block_types": ("DownEncoderBlock2D",) * 3,
            "up_block_types": ("UpDecoderBlock2D",) * 3,
            "norm_num_groups": 8,
            "sample_size": 64,
            "scaling_factor": 0.13025,
            "force_upcast": False,
        }
    ),
    text_encoder=_frozen(
        {
            "vocab_size": CLIP_VOCAB_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "projection_dim": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        }
    ),
    text_encoder_2=_frozen(
        {
            "vocab_size": CLIP_VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "projection_dim": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
        }
    ),
    scheduler=SDXL_SCHEDULER,
)


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
