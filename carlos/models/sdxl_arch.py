"""SDXL architectures as plain data: the four networks' configs and the scheduler's.

:data:`SDXL_BASE_1_0` writes out the sizes of SDXL base 1.0 (its ``config.json`` files),
:data:`TINY_SDXL` the same block structure at toy widths for CPU tests. Both are checked
on construction (:func:`check_sdxl_consistency`); :mod:`carlos.models.tiny_sdxl` builds
networks and pipelines from them. No torch, diffusers or transformers here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from carlos.errors import InvalidInputError
from carlos.models.clip_tokenizer import CLIP_VOCAB_SIZE


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


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
