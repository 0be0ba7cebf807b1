"""Small LoRA files for the tiny SDXL backend, in the naming conventions real files use.

Real SDXL LoRAs come in two layouts: kohya-ss (``lora_unet_input_blocks_4_1_...``, the
module names of the original SGM UNet, plus ``lora_te1_`` / ``lora_te2_`` for the two text
encoders, ``.lora_down`` / ``.lora_up`` / ``.alpha`` tensors and ``ss_*`` metadata) and
diffusers/PEFT (``unet.down_blocks.1.attentions.0....lora_A.weight``). The files written
here have the shapes of :data:`carlos.models.sdxl_arch.TINY_SDXL`, so diffusers'
``load_lora_weights`` accepts them on the tiny pipeline and they change its images. Their
cross-attention context width is not SDXL's 2048, so they carry the metadata marker
``carlos_test_lora = "tiny-sdxl"`` for a validator to recognise them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from carlos.errors import InvalidInputError

#: Metadata marker of a test LoRA for the tiny backend (key, value).
TEST_LORA_MARKER = ("carlos_test_lora", "tiny-sdxl")
LAYOUTS = ("kohya", "diffusers")

# Linear layers real SDXL LoRAs train: attention and feed-forward of the transformer blocks
# and their in/out projections in the UNet; attention and MLP in the text encoders.
_UNET_TARGET = re.compile(
    r"(attentions\.\d+\.(proj_in|proj_out)"
    r"|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)))$"
)
_TE_TARGET = re.compile(r"layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))$")


def _linear_layers() -> dict[str, list[tuple[str, int, int]]]:
    """(module name, in_features, out_features) of the LoRA targets of the tiny networks."""
    import torch

    from carlos.models.sdxl_arch import TINY_SDXL
    from carlos.models.tiny_sdxl import build_networks

    with torch.device("meta"):
        nets = build_networks(TINY_SDXL)
    found: dict[str, list[tuple[str, int, int]]] = {}
    for comp, pattern in (("unet", _UNET_TARGET), ("text_encoder", _TE_TARGET), ("text_encoder_2", _TE_TARGET)):
        found[comp] = [
            (name, mod.in_features, mod.out_features)
            for name, mod in nets[comp].named_modules()
            if isinstance(mod, torch.nn.Linear) and pattern.search(name)
        ]
    return found


def sgm_unet_name(diffusers_name: str, layers_per_block: int = 2) -> str:
    """Diffusers UNet module name -> the SGM (original SDXL) name kohya-ss trains on.

    ``down_blocks.b.attentions.j`` is ``input_blocks.(1 + b*(L+1) + j).1``,
    ``mid_block.attentions.0`` is ``middle_block.1`` and ``up_blocks.b.attentions.j`` is
    ``output_blocks.(b*(L+1) + j).1`` with L = layers_per_block (2 in SDXL).
    """
    step = layers_per_block + 1
    m = re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$", diffusers_name)
    if m:
        return f"input_blocks.{1 + int(m[1]) * step + int(m[2])}.1.{m[3]}"
    m = re.match(r"mid_block\.attentions\.0\.(.+)$", diffusers_name)
    if m:
        return f"middle_block.1.{m[1]}"
    m = re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$", diffusers_name)
    if m:
        return f"output_blocks.{int(m[1]) * step + int(m[2])}.1.{m[3]}"
    raise InvalidInputError(f"no SGM name for UNet module {diffusers_name!r} (only attention blocks map)")


def _metadata(defaults: dict[str, str], extra: Mapping[str, Any] | None) -> dict[str, str]:
    out = dict(defaults)
    for key, value in (extra or {}).items():
        if not isinstance(key, str):
            raise InvalidInputError(f"metadata keys must be strings, got {key!r}")
        if value is None:  # lets a test drop a default entry
            out.pop(key, None)
        else:
            out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def make_test_lora(
    out_path: str | Path,
    *,
    seed: int = 0,
    layout: str = "kohya",
    rank: int = 4,
    alpha: float | None = None,
    zero: bool = False,
    strength: float = 1.0,
    text_encoders: bool = True,
    dtype: str = "float16",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a seeded random LoRA for the tiny SDXL pipeline; returns ``out_path``.

    ``zero=True`` makes every up-projection zero, so the LoRA loads but changes nothing.
    ``strength`` scales the up-projections (a stronger or weaker effect). ``alpha``
    defaults to ``rank`` (scale alpha/rank = 1); the diffusers layout has no alpha tensors,
    so its weights carry the alpha/rank factor themselves. ``metadata`` entries are added to
    the defaults, and an entry set to ``None`` removes that default.
    """
    import torch
    from safetensors.torch import save_file

    from carlos.models.sdxl_arch import TINY_SDXL

    if layout not in LAYOUTS:
        raise InvalidInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InvalidInputError(f"rank must be an int >= 1, got {rank!r}")
    if dtype not in ("float16", "float32"):
        raise InvalidInputError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    alpha = float(rank if alpha is None else alpha)
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise InvalidInputError(f"out_path must end in .safetensors, got {out_path.name}")

    gen = torch.Generator().manual_seed(seed)
    tdtype = getattr(torch, dtype)
    prefixes = {
        "unet": ("lora_unet_", "unet."),
        "text_encoder": ("lora_te1_", "text_encoder."),
        "text_encoder_2": ("lora_te2_", "text_encoder_2."),
    }
    tensors: dict[str, torch.Tensor] = {}
    for comp, layers in _linear_layers().items():
        if comp != "unet" and not text_encoders:
            continue
        kohya_prefix, diffusers_prefix = prefixes[comp]
        for name, fan_in, fan_out in layers:
            # down ~ N(0, 1/fan_in), up ~ N(0, 1/rank): the low-rank update is about as large
            # as the layer's own output, a clearly visible but not saturating change
            down = torch.randn(rank, fan_in, generator=gen) / fan_in**0.5
            up = torch.randn(fan_out, rank, generator=gen) / rank**0.5 * strength
            if zero:
                up.zero_()
            if layout == "kohya":
                module = sgm_unet_name(name, TINY_SDXL.unet["layers_per_block"]) if comp == "unet" else name
                key = kohya_prefix + module.replace(".", "_")
                tensors[f"{key}.lora_down.weight"] = down.to(tdtype)
                tensors[f"{key}.lora_up.weight"] = up.to(tdtype)
                tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=tdtype)
            else:
                key = diffusers_prefix + name
                tensors[f"{key}.lora_A.weight"] = down.to(tdtype)
                tensors[f"{key}.lora_B.weight"] = (up * (alpha / rank)).to(tdtype)

    defaults = {
        TEST_LORA_MARKER[0]: TEST_LORA_MARKER[1],
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_output_name": out_path.stem,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha if alpha != int(alpha) else int(alpha)),
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
        "ss_resolution": "(1024, 1024)",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.title": out_path.stem,
        "carlos_test_lora_layout": layout,
        "carlos_test_lora_seed": str(seed),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata=_metadata(defaults, metadata))
    return out_path
