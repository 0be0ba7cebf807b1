"""What a LoRA file's tensors are: adapter format, modules and ranks, from key names and shapes.

Works on the parsed safetensors header only (names, dtypes, shapes), never on tensor
values, so it is cheap and needs no torch. This module owns the key-name conventions:
kohya sd-scripts (``lora_unet_*.lora_down.weight``), diffusers/PEFT (``unet.*.lora_A.weight``)
and LyCORIS (``*.hada_w1_a``, ``*.lokr_w1``), grouping tensors into the :class:`Module`
each patches and checking that every module is complete. Which base model the modules
fit is :mod:`carlos.files.base_model`; the training metadata is :mod:`carlos.files.metadata`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

from carlos.errors import InvalidLoRAFileError


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


#: Dtypes adapter weights may have: those diffusers' loader puts into a float layer (integer,
#: bool and complex weights fail there or turn the layer complex; F4 packs two values a byte).
WEIGHT_DTYPES = ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")


def _fail(module: str, what: str) -> InvalidLoRAFileError:
    if len(what) > 300:  # shapes come from the file: a million-dimension one stays a short message
        what = what[:300] + "…"
    return InvalidLoRAFileError(f"LoRA module {show(module)} is malformed: {what}")


def _check_dtypes(name: str, roles: Mapping[str, TensorInfo]) -> None:
    """Weights that load into a float layer, and a real, non-empty rank factor."""
    for role, info in sorted(roles.items()):
        if role == "alpha":
            if info.dtype in ("C64", "F4"):
                raise _fail(name, f"its alpha is {info.dtype}; alpha must be a real number")
        elif info.dtype not in WEIGHT_DTYPES:
            raise _fail(name, f"its {role} weight is {info.dtype}; LoRA weights must be one of {', '.join(WEIGHT_DTYPES)}")
        elif 0 in info.shape:
            raise _fail(name, f"its {role} weight is empty (shape {info.shape[:8]})")


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
        _check_dtypes(name, roles)
        rank, in_features = _CHECKERS[kind](name, roles)
        alpha = roles.get("alpha")
        if alpha is not None and math.prod(alpha.shape) != 1:
            warnings.append(f"alpha of {show(name)} has shape {str(alpha.shape[:8])[:100]}, expected a scalar")
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
