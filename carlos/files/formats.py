"""What a LoRA file's tensors are: adapter format, modules, ranks, base model, metadata.

Works on the parsed safetensors header only (names, dtypes, shapes), never on tensor
values, so it is cheap and needs no torch. Key names follow kohya sd-scripts
(``lora_unet_*.lora_down.weight``), diffusers/PEFT (``unet.*.lora_A.weight``) and LyCORIS
(``*.hada_w1_a``, ``*.lokr_w1``). Base models are told apart by layer widths that only one
family has: SDXL's cross-attention reads 2048-wide text embeddings (768 in SD 1.5, 1024 in
SD 2.x), and only SDXL has two text encoders in a UNet model.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from carlos.errors import InvalidLoRAFileError

#: Display names of the base-model families, used in messages.
FAMILY_NAMES = {"sdxl": "SDXL", "sd15": "SD 1.5", "sd2": "SD 2.x", "flux": "Flux", "unknown": "an unknown base model"}
#: Cross-attention (text embedding) width, and text-encoder width, of each UNet family.
_CONTEXT_DIMS = {2048: "sdxl", 768: "sd15", 1024: "sd2"}
_TEXT_WIDTHS = {768: "sd15", 1024: "sd2"}


@dataclass(frozen=True)
class TensorInfo:
    """One entry of a safetensors header; offsets are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Module:
    """The adapter tensors that patch one layer of the base model."""

    name: str  # key without its adapter suffix
    kind: str  # "kohya" | "diffusers" | "loha" | "lokr"
    component: str  # "unet" | "te" | "te1" | "te2" | "te3" | "transformer" | "other"
    path: str  # layer path inside the component, "_"-separated
    roles: Mapping[str, TensorInfo]  # "down", "up", "w1_a", ... -> tensor
    rank: int | None
    in_features: int | None  # input width of a linear layer, None for convs


@dataclass(frozen=True)
class KeyAnalysis:
    format: str
    modules: tuple[Module, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class FamilyGuess:
    family: str  # a key of FAMILY_NAMES
    reason: str  # the evidence, for messages ("cross-attention dim 2048")
    notes: tuple[str, ...]  # evidence that disagrees with the decision


# suffix -> (kind, role); kind None: the tensor belongs to any kind of module.
_SUFFIXES: dict[str, tuple[str | None, str]] = {
    ".lora_down.weight": ("kohya", "down"),
    ".lora_up.weight": ("kohya", "up"),
    ".lora_mid.weight": ("kohya", "mid"),
    ".lora_A.weight": ("diffusers", "down"),
    ".lora_B.weight": ("diffusers", "up"),
    "_lora.down.weight": ("diffusers", "down"),
    "_lora.up.weight": ("diffusers", "up"),  # attention processors
    ".lora_linear_layer.down.weight": ("diffusers", "down"),
    ".lora_linear_layer.up.weight": ("diffusers", "up"),
    ".lora.down.weight": ("diffusers", "down"),
    ".lora.up.weight": ("diffusers", "up"),
    ".lora_magnitude_vector": ("diffusers", "aux"),
    **{f".hada_{r}": ("loha", r) for r in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")},
    **{f".lokr_{r}": ("lokr", r) for r in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")},
    ".alpha": (None, "alpha"),
    ".dora_scale": (None, "aux"),
}
_KOHYA_PREFIXES = {
    "lora_unet_": "unet",
    "lora_te1_": "te1",
    "lora_te2_": "te2",
    "lora_te3_": "te3",
    "lora_te_": "te",
    "lora_transformer_": "transformer",
}
_DOTTED_PREFIXES = (  # (prefix, component, whether the prefix is part of the layer path)
    ("unet.", "unet", False),
    ("text_encoder_2.", "te2", False),
    ("text_encoder_3.", "te3", False),
    ("text_encoder.", "te", False),
    ("transformer.", "transformer", False),
    ("model.diffusion_model.", "unet", False),
    ("diffusion_model.", "unet", False),
    # attention-processor files carry no component prefix
    ("down_blocks.", "unet", True),
    ("mid_block.", "unet", True),
    ("up_blocks.", "unet", True),
    ("text_model.", "te", True),
)


def show(text: str, limit: int = 120) -> str:
    """A user-controlled string made safe to put in a message: quoted, escaped, capped."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return ascii(text) if not text.isprintable() else repr(text)


def _split_key(key: str) -> tuple[str, str | None, str] | None:
    for suffix, (kind, role) in _SUFFIXES.items():
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], kind, role
    return None


def _locate(module_name: str) -> tuple[str, str]:
    """Component ("unet", "te2", ...) and the "_"-separated layer path of a module."""
    name = module_name.removeprefix("base_model.model.")
    for prefix, component in _KOHYA_PREFIXES.items():
        if name.startswith(prefix):
            return component, name[len(prefix) :]
    component, rest = "other", name
    for prefix, comp, keep in _DOTTED_PREFIXES:
        if name.startswith(prefix):
            component, rest = comp, (name if keep else name[len(prefix) :])
            break
    path = rest.replace(".", "_").replace("_processor_", "_")
    return component, re.sub(r"_lora$", "", path)


def _fail(module: str, what: str) -> InvalidLoRAFileError:
    return InvalidLoRAFileError(f"LoRA module {show(module)} is malformed: {what}")


def _lora_module(name: str, roles: Mapping[str, TensorInfo]) -> tuple[int, int | None]:
    if "down" not in roles or "up" not in roles:
        have, need = ("down (A)", "up (B)") if "down" in roles else ("up (B)", "down (A)")
        raise _fail(name, f"it has a {have} weight but no {need} weight")
    down, up = roles["down"].shape, roles["up"].shape
    if len(down) not in (2, 4) or len(up) not in (2, 4):
        raise _fail(name, f"down/up weights must be 2-D or 4-D, got shapes {down} and {up}")
    if up[1] != down[0]:
        raise _fail(name, f"up weight {up} does not take the down weight's rank {down[0]}")
    linear = len(down) == 2 or down[2:] == (1, 1)
    return down[0], (down[1] if linear else None)


def _loha_module(name: str, roles: Mapping[str, TensorInfo]) -> tuple[int, int | None]:
    missing = [r for r in ("w1_a", "w1_b", "w2_a", "w2_b") if r not in roles]
    if missing:
        raise _fail(name, "LoHa needs hada_w1_a/w1_b/w2_a/w2_b; missing " + ", ".join(missing))
    s = {r: roles[r].shape for r in ("w1_a", "w1_b", "w2_a", "w2_b")}
    if any(len(v) != 2 for v in s.values()):
        raise _fail(name, f"LoHa factors must be 2-D, got {s}")
    for w in ("w1", "w2"):
        tucker = f"t{w[1]}" in roles
        a, b = s[f"{w}_a"], s[f"{w}_b"]
        if (a[0] if tucker else a[1]) != b[0]:
            raise _fail(name, f"hada_{w}_a {a} and hada_{w}_b {b} disagree on the rank")
    return s["w1_b"][0], s["w1_b"][1]


def _lokr_module(name: str, roles: Mapping[str, TensorInfo]) -> tuple[int | None, int | None]:
    in_parts: list[int | None] = []
    rank = None
    for w in ("w1", "w2"):
        if w in roles:
            shape = roles[w].shape
            if len(shape) < 2:
                raise _fail(name, f"lokr_{w} must be at least 2-D, got {shape}")
            in_parts.append(shape[1] if len(shape) == 2 else None)
        elif f"{w}_a" in roles and f"{w}_b" in roles:
            a, b = roles[f"{w}_a"].shape, roles[f"{w}_b"].shape
            tucker = w == "w2" and "t2" in roles
            if len(a) != 2 or len(b) < 2 or (a[0] if tucker else a[1]) != b[0]:
                raise _fail(name, f"lokr_{w}_a {a} and lokr_{w}_b {b} do not compose")
            rank = b[0]
            in_parts.append(b[1] if len(b) == 2 else None)
        else:
            raise _fail(name, f"LoKr needs lokr_{w} or lokr_{w}_a + lokr_{w}_b")
    m, n = in_parts
    return rank, (m * n if m is not None and n is not None else None)


_CHECKERS = {"kohya": _lora_module, "diffusers": _lora_module, "loha": _loha_module, "lokr": _lokr_module}


def analyse_keys(tensors: Mapping[str, TensorInfo]) -> KeyAnalysis:
    """Group tensors into adapter modules, check each is complete, name the format.

    Raises InvalidLoRAFileError when no LoRA weights are recognised or a module is broken.
    """
    grouped: dict[str, dict[str, TensorInfo]] = {}
    kinds: dict[str, set[str]] = {}
    unknown: list[str] = []
    for key, info in tensors.items():
        split = _split_key(key)
        if split is None:
            unknown.append(key)
            continue
        module, kind, role = split
        grouped.setdefault(module, {})[role] = info
        if kind is not None:
            kinds.setdefault(module, set()).add(kind)
    warnings: list[str] = []
    modules: list[Module] = []
    for name, roles in grouped.items():
        module_kinds = kinds.get(name, set())
        if not module_kinds:
            warnings.append(f"{show(name)} has only alpha/scale tensors and no weights; ignored")
            continue
        if len(module_kinds) > 1:
            raise _fail(name, "it mixes adapter types " + ", ".join(sorted(module_kinds)))
        kind = module_kinds.pop()
        rank, in_features = _CHECKERS[kind](name, roles)
        alpha = roles.get("alpha")
        if alpha is not None and math.prod(alpha.shape) != 1:
            warnings.append(f"alpha of {show(name)} has shape {alpha.shape}, expected a scalar")
        component, path = _locate(name)
        modules.append(Module(name, kind, component, path, dict(roles), rank, in_features))
    if not modules:
        raise InvalidLoRAFileError(_no_lora_message(list(tensors)))
    counts = Counter(m.kind for m in modules)
    if counts["loha"] or counts["lokr"]:  # LyCORIS files may patch a few layers with plain LoRA
        fmt = "loha" if counts["loha"] >= counts["lokr"] else "lokr"
    else:
        fmt = "kohya" if counts["kohya"] >= counts["diffusers"] else "diffusers"
    if len(counts) > 1:
        mix = ", ".join(f"{n} {k}" for k, n in counts.most_common())
        warnings.append(f"the file mixes adapter types ({mix}); reported as {fmt}")
    if unknown:
        what = " (bundled textual-inversion embeddings)" if all(k.startswith("bundle_emb.") for k in unknown) else ""
        example = show(unknown[0])
        warnings.append(f"{len(unknown)} tensor(s) that are not LoRA weights were ignored{what}, e.g. {example}")
    if any(m.component == "te2" for m in modules):  # diffusers calls SDXL's first encoder plain "text_encoder"
        modules = [replace(m, component="te1") if m.component == "te" else m for m in modules]
    return KeyAnalysis(fmt, tuple(sorted(modules, key=lambda m: m.name)), tuple(warnings))


def _no_lora_message(keys: list[str]) -> str:
    example = ", ".join(show(k, 80) for k in sorted(keys)[:3]) or "none"
    if keys and sum(k.endswith((".weight", ".bias")) for k in keys) > 0.9 * len(keys):
        return (
            f"no LoRA weights found: the {len(keys)} tensors (e.g. {example}) look like a full model "
            "or another kind of weights, not a LoRA adapter"
        )
    return (
        "unrecognised LoRA format: expected kohya (lora_unet_*.lora_down.weight), diffusers/PEFT (*.lora_A.weight, "
        f"*.lora.down.weight) or LyCORIS LoHa/LoKr (*.hada_w1_a, *.lokr_w1) keys; found e.g. {example}"
    )


# --- base model -----------------------------------------------------------------------------

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


# --- metadata -------------------------------------------------------------------------------


def _as_int(value: str) -> int:
    if not float(value).is_integer():
        raise ValueError(value)
    return int(float(value))


def _as_bool(value: str) -> bool:
    return {"true": True, "false": False}[value.strip().lower()]


def _as_resolution(value: str) -> list[int]:
    found = re.fullmatch(r"\s*[(\[]?\s*(\d+)\s*(?:[,x]\s*(\d+))?\s*[)\]]?\s*", value)
    if not found:
        raise ValueError(value)
    return [int(found[1]), int(found[2] or found[1])]


#: The training fields a reviewer wants, with how to read each one.
_REVIEW_FIELDS: dict[str, Callable[[str], Any]] = {
    "ss_base_model_version": str,
    "ss_sd_model_name": str,
    "ss_output_name": str,
    "ss_resolution": _as_resolution,
    "ss_network_dim": _as_int,
    "ss_network_alpha": float,
    "ss_network_module": str,
    "ss_network_args": json.loads,
    "ss_v2": _as_bool,
    "ss_num_train_images": _as_int,
    "ss_num_epochs": _as_int,
    "ss_max_train_steps": _as_int,
    "ss_learning_rate": float,
    "ss_clip_skip": _as_int,
    "ss_training_comment": str,
    "modelspec.architecture": str,
    "modelspec.title": str,
    "modelspec.trigger_phrase": str,
    "modelspec.description": str,
    "modelspec.author": str,
    "modelspec.date": str,
    "modelspec.tags": str,
}
_TOP_TAGS = 20


def _present(value: Any) -> bool:
    return not (value is None or isinstance(value, str) and value.strip() in ("", "None"))


def summarize_metadata(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The reviewer fields of ``__metadata__``, parsed; malformed values stay raw with a warning."""
    summary: dict[str, Any] = {}
    warnings: list[str] = []
    for key, parse in _REVIEW_FIELDS.items():
        value = raw.get(key)
        if not _present(value):
            continue
        summary[key] = value  # non-strings were already warned about by the header parser
        if isinstance(value, str) and not (key == "ss_network_dim" and value.strip().lower() == "dynamic"):
            try:  # "dynamic" is written by kohya's resize script for mixed ranks
                summary[key] = parse(value)
            except (ValueError, KeyError, RecursionError):
                warnings.append(f"metadata {key}={show(value, 60)} could not be parsed; kept as text")
    tags, tag_warning = _top_tags(raw)
    warnings += [tag_warning] if tag_warning else []
    if tags:
        summary["top_tags"] = tags
    return summary, warnings


def _top_tags(raw: Mapping[str, Any]) -> tuple[list[list[Any]], str | None]:
    """Most frequent training-caption tags from ``ss_tag_frequency`` (or ``ss_datasets``)."""
    key = "ss_tag_frequency" if "ss_tag_frequency" in raw else "ss_datasets"
    text = raw.get(key)
    if not isinstance(text, str) or not _present(text):
        return [], None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return [], f"metadata {key} is not valid JSON; kept as text"
    if isinstance(parsed, list):  # ss_datasets: one dict per dataset
        sources = [d.get("tag_frequency") for d in parsed if isinstance(d, dict)]
    else:  # ss_tag_frequency: {dataset folder: {tag: count}}
        sources = list(parsed.values()) if isinstance(parsed, dict) else []
    counts: Counter[str] = Counter()
    for freq in sources:
        for tag, count in freq.items() if isinstance(freq, dict) else ():
            if isinstance(count, (int, float)) and not isinstance(count, bool) and tag.strip():
                counts[tag.strip()] += int(count)
    if not counts and parsed:
        return [], f"metadata {key} has no tag counts in the expected layout; kept as text"
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_TAGS]
    return [[tag, n] for tag, n in ranked], None


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
        if isinstance(raw.get(key), str) and _present(raw[key])
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


def suggest_trigger_words(summary: Mapping[str, Any], limit: int = 5) -> list[str]:
    """Words to put in prompts: the declared trigger phrase, else the most frequent tags."""
    phrase = summary.get("modelspec.trigger_phrase")
    if isinstance(phrase, str) and phrase.strip():
        return list(dict.fromkeys(w.strip() for w in phrase.split(",") if w.strip()))
    return [tag for tag, _ in summary.get("top_tags", [])[:limit]]
