"""Which base model a LoRA was trained for: from its layer widths, and from what its metadata says.

Base models are told apart by layer widths that only one family has: SDXL's
cross-attention reads 2048-wide text embeddings (768 in SD 1.5, 1024 in SD 2.x), and
only SDXL has two text encoders in a UNet model; Flux and MMDiT files have their own
block names. :func:`detect_base_family` reads the modules of :mod:`carlos.files.formats`;
:func:`declared_base` reads the kohya/modelspec fields a trainer wrote, so the two can
be compared (the tensors decide).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from carlos.files.formats import Module, show
from carlos.files.metadata import has_value

#: Display names of the base-model families, used in messages.
FAMILY_NAMES = {"sdxl": "SDXL", "sd15": "SD 1.5", "sd2": "SD 2.x", "flux": "Flux", "unknown": "an unknown base model"}
#: Cross-attention (text embedding) width, and text-encoder width, of each UNet family.
_CONTEXT_DIMS = {2048: "sdxl", 768: "sd15", 1024: "sd2"}
_TEXT_WIDTHS = {768: "sd15", 1024: "sd2"}


@dataclass(frozen=True)
class FamilyGuess:
    family: str  # a key of FAMILY_NAMES
    reason: str  # the evidence, for messages ("cross-attention dim 2048")
    notes: tuple[str, ...]  # evidence that disagrees with the decision


_FLUX_MARKERS = ("single_transformer_blocks", "double_blocks", "single_blocks")
_SDXL_LAYOUT = (  # attention where only SDXL's UNet has it
    (re.compile(r"transformer_blocks_([1-9]\d*)_"), "UNet transformer depth > 1"),
    (re.compile(r"^up_blocks_0_attentions_"), "attention in up_blocks.0"),
    (re.compile(r"^output_blocks_[0-2]_1_(transformer_blocks|proj_|norm)"), "attention in output_blocks 0-2"),
)
_SD12_LAYOUT = (  # attention where only SD 1.x/2.x UNets have it
    (re.compile(r"^down_blocks_0_attentions_"), "attention in down_blocks.0"),
    (re.compile(r"^up_blocks_3_attentions_"), "attention in up_blocks.3"),
    (re.compile(r"^input_blocks_[12]_1_"), "attention in input_blocks 1-2"),
    (re.compile(r"^output_blocks_(9|10|11)_1_"), "attention in output_blocks 9-11"),
)
_CONTEXT_LAYER = re.compile(r"attn2_to_[kv]$")  # input width = text-embedding width
_QUERY_LAYER = re.compile(r"attn[12]_to_q$")  # input width = channels of the block
_TEXT_LAYER = re.compile(r"(self_attn_(q|k|v|out)_proj|mlp_fc1)$")  # input width = encoder width


def detect_base_family(modules: tuple[Module, ...], sdxl_context_dims: Collection[int] = (2048,)) -> FamilyGuess:
    """Which base model the adapter was trained for, from layer names and widths.

    ``sdxl_context_dims`` are the cross-attention widths taken as SDXL: 2048 for the real
    model; a test backend adds its tiny model's width.
    """
    comps = {m.component for m in modules}
    paths = [m.path for m in modules]
    flux = [p for p in paths if any(marker in p for marker in _FLUX_MARKERS)]
    if flux or any(m.name.startswith("lora_transformer_") for m in modules):
        return FamilyGuess("flux", "Flux transformer blocks, e.g. " + (flux or [modules[0].name])[0], ())
    if "te3" in comps or any("joint_blocks" in p or "context_block" in p for p in paths):
        return FamilyGuess("unknown", "SD 3-style MMDiT keys (joint blocks / third text encoder)", ())
    if "transformer" in comps:
        return FamilyGuess("unknown", "diffusion-transformer keys that are not Flux", ())
    unet = [m for m in modules if m.component == "unet"]
    ctx = sorted({m.in_features for m in unet if _CONTEXT_LAYER.search(m.path) and m.in_features})
    two_te = bool({"te1", "te2"} & comps)
    te_dims = sorted({m.in_features for m in modules if m.component == "te" and _TEXT_LAYER.search(m.path)} - {None})
    sdxl_layout = [why for m in unet for rx, why in _SDXL_LAYOUT if rx.search(m.path)]
    sd12_layout = [why for m in unet for rx, why in _SD12_LAYOUT if rx.search(m.path)]
    sd12_layout += ["320-channel attention" for m in unet if _QUERY_LAYER.search(m.path) and m.in_features == 320]
    if len(ctx) > 1:
        family, reason = "unknown", f"inconsistent cross-attention dims {ctx}"
    elif ctx:
        known = {**_CONTEXT_DIMS, **{int(d): "sdxl" for d in sdxl_context_dims}}
        family, reason = known.get(ctx[0], "unknown"), f"cross-attention dim {ctx[0]}"
        reason += ", as in the SDXL refiner" if ctx[0] == 1280 else ""
    elif two_te:
        family, reason = "sdxl", "two text encoders (te1/te2)"
    elif len(te_dims) == 1 and te_dims[0] in _TEXT_WIDTHS:
        family, reason = _TEXT_WIDTHS[te_dims[0]], f"text-encoder width {te_dims[0]}"
    elif sdxl_layout and not sd12_layout:
        family, reason = "sdxl", f"SDXL UNet layout ({sdxl_layout[0]})"
    elif sd12_layout and not sdxl_layout:
        family, reason = "unknown", f"SD 1.x/2.x UNet layout ({sd12_layout[0]})"
    else:
        family, reason = "unknown", "no layer whose width identifies the base model"
    notes = []
    if family == "sdxl" and sd12_layout:
        notes.append(f"{reason} says SDXL but the UNet has an SD 1.x/2.x layout ({sd12_layout[0]})")
    if family in ("sd15", "sd2") and (two_te or sdxl_layout):
        why = "two text encoders" if two_te else sdxl_layout[0]
        notes.append(f"{reason} says {FAMILY_NAMES[family]} but the file has {why}, as SDXL does")
    if family in ("sd15", "sd2") and te_dims and _TEXT_WIDTHS.get(te_dims[0]) != family:
        notes.append(f"{reason} says {FAMILY_NAMES[family]} but the text encoder is {te_dims[0]} wide")
    return FamilyGuess(family, reason, tuple(notes))


def family_from_text(value: str) -> str:
    """Family key for a declared base-model string (kohya or modelspec spelling)."""
    v = value.lower()
    if "refiner" in v:
        return "unknown"
    if "sdxl" in v or "stable-diffusion-xl" in v or "sd_xl" in v:
        return "sdxl"
    if "flux" in v:
        return "flux"
    if re.search(r"stable-diffusion-v1|sd_?v1|sd-?1[._-]?5|^sd1", v):
        return "sd15"
    if re.search(r"stable-diffusion-v2|sd_?v2|sd-?2[._-]?[01]|^sd2", v):
        return "sd2"
    return "unknown"


def declared_base(raw: Mapping[str, Any]) -> tuple[str | None, str | None, list[str]]:
    """(family, "field='value'", disagreements) the metadata declares, if any."""
    found = [
        (family_from_text(raw[key]), f"{key}={show(raw[key], 60)}")
        for key in ("modelspec.architecture", "ss_base_model_version")
        if isinstance(raw.get(key), str) and has_value(raw[key])
    ]
    if not found and str(raw.get("ss_v2")).strip().lower() == "true":  # kohya's SD 2.x flag
        found.append(("sd2", "ss_v2='True'"))
    if not found:
        return None, None, []
    known = [f for f in found if f[0] != "unknown"]
    disagree = []
    if len({f for f, _ in known}) > 1:
        disagree.append("metadata fields disagree on the base model: " + ", ".join(s for _, s in found))
    family, source = (known or found)[0]
    return family, source, disagree
