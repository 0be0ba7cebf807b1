"""CLIP checkpoints in transformers format, read into open_clip's model (PAPER.md, "Embedding").

The corpus was measured with transformers ``CLIPModel`` + ``CLIPProcessor`` from
``openai/clip-vit-base-patch32``. Rather than run a second implementation, this module
converts such a folder into open_clip's layout, so :class:`carlos.models.clip.ClipEmbedder`
and the prefix KV cache (:mod:`carlos.models.prefix_cache`, which runs open_clip's text
blocks itself) serve both formats unchanged. The conversion is exact: the two
implementations compute the same function with the same tensors (q/k/v projections are
concatenated into ``in_proj``, the projections transposed), which the tests check against
``CLIPModel.get_image_features``/``get_text_features`` themselves.

It owns: reading the weights (``model.safetensors`` preferred; ``pytorch_model.bin`` only
through ``torch.load(weights_only=True)``, never arbitrary unpickling), checking
``config.json`` against the open_clip architecture (:func:`check_config`), the key mapping
(:func:`to_open_clip_state_dict`), and the processor's image preprocessing
(:class:`ProcessorPreprocess`, read from ``preprocessor_config.json``), which is *not*
open_clip's: the centre crop of the transformers processor starts at ``(size - 224) // 2``
where torchvision rounds, so odd margins differ by one pixel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import WeightsUnavailableError
from carlos.models.clip_registry import ClipSpec, ClipWeights

#: CLIP's image normalization (transformers ``OPENAI_CLIP_MEAN``/``OPENAI_CLIP_STD``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_PIL_BICUBIC = 3

# transformers' CLIPTextConfig / CLIPVisionConfig defaults (5.23), used for keys a config.json omits.
_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
    "vision": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
}

# --------------------------------------------------------------------------- weights


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a weights file: safetensors, or a pickle loaded with ``weights_only=True``."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:  # the restricted unpickler: tensors and plain containers only, never arbitrary objects
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} is not a state dict of tensors")
    return state


def _tower(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A tower's settings as transformers reads them: defaults, ``*_config``, then legacy ``*_config_dict``."""
    merged = dict(_CONFIG_DEFAULTS[name])
    merged.update(config.get(f"{name}_config") or {})
    merged.update(config.get(f"{name}_config_dict") or {})  # transformers lets the legacy dict win
    return merged


def check_config(folder: Path, model: Any, spec: ClipSpec) -> None:
    """Refuse a ``config.json`` whose CLIP is not the architecture ``model`` implements.

    Shapes are checked again by the strict state-dict load; this catches what shapes cannot
    show: the activation, the layer-norm epsilon, the number of heads, the patch size.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsUnavailableError(f"cannot read {folder / 'config.json'}: {exc}") from exc
    if config.get("model_type", "clip") != "clip":
        raise WeightsUnavailableError(f"{folder / 'config.json'} describes a {config.get('model_type')!r} model, not CLIP")
    text, vision = _tower(config, "text"), _tower(config, "vision")
    text_blk, vision_blk = model.transformer.resblocks[0], model.visual.transformer.resblocks[0]
    act = "quick_gelu" if spec.quick_gelu else "gelu"
    expected = {
        "projection_dim": (config.get("projection_dim", 512), spec.dim),
        "text hidden_size": (text["hidden_size"], model.token_embedding.embedding_dim),
        "text num_hidden_layers": (text["num_hidden_layers"], len(model.transformer.resblocks)),
        "text num_attention_heads": (text["num_attention_heads"], text_blk.attn.num_heads),
        "text intermediate_size": (text["intermediate_size"], text_blk.mlp.c_fc.out_features),
        "text max_position_embeddings": (text["max_position_embeddings"], spec.context_length),
        "text vocab_size": (text["vocab_size"], model.vocab_size),
        "text hidden_act": (text["hidden_act"], act),
        "text layer_norm_eps": (float(text["layer_norm_eps"]), float(model.ln_final.eps)),
        "vision hidden_size": (vision["hidden_size"], model.visual.conv1.out_channels),
        "vision num_hidden_layers": (vision["num_hidden_layers"], len(model.visual.transformer.resblocks)),
        "vision num_attention_heads": (vision["num_attention_heads"], vision_blk.attn.num_heads),
        "vision intermediate_size": (vision["intermediate_size"], vision_blk.mlp.c_fc.out_features),
        "vision image_size": (vision["image_size"], spec.image_size),
        "vision patch_size": (vision["patch_size"], model.visual.conv1.kernel_size[0]),
        "vision hidden_act": (vision["hidden_act"], act),
        "vision layer_norm_eps": (float(vision["layer_norm_eps"]), float(model.visual.ln_post.eps)),
    }
    wrong = [f"{key} is {got!r}, {spec.name} has {want!r}" for key, (got, want) in expected.items() if got != want]
    if wrong:
        raise WeightsUnavailableError(f"{folder / 'config.json'} is not {spec.name}: " + "; ".join(wrong))


_LAYER_KEY = re.compile(r"(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
_TOP_KEYS = {
    "logit_scale": "logit_scale",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: transformers' name
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
}
# nn.Linear(in, out, bias=False) in transformers; an (in, out) matrix applied as x @ proj in open_clip
_PROJECTIONS = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}


def to_open_clip_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """transformers ``CLIPModel`` keys -> open_clip ``CLIP`` keys; an unknown key is an error."""
    import torch

    out: dict[str, Any] = {}
    qkv: dict[tuple[str, str], list[Any]] = {}
    unknown = []
    for key, value in state.items():
        if key.endswith("embeddings.position_ids"):  # a buffer older transformers saved; open_clip has none
            continue
        if key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value
        elif key in _PROJECTIONS:
            out[_PROJECTIONS[key]] = value.t().contiguous()
        elif (m := _LAYER_KEY.fullmatch(key)) is not None:
            tower, layer, part, kind = m.groups()
            prefix = ("" if tower == "text" else "visual.") + f"transformer.resblocks.{layer}."
            if part in _QKV:
                qkv.setdefault((prefix, kind), [None, None, None])[_QKV[part]] = value
            elif part in _LAYER_PARTS:
                out[f"{prefix}{_LAYER_PARTS[part]}.{kind}"] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    for (prefix, kind), parts in qkv.items():
        if any(p is None for p in parts):
            raise WeightsUnavailableError(f"{prefix}: the q/k/v {kind} tensors are incomplete")
        out[f"{prefix}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
    if unknown:
        raise WeightsUnavailableError(f"not a transformers CLIPModel state dict: unknown keys {unknown[:5]}")
    return out


def load_transformers_weights(model: Any, weights: ClipWeights, spec: ClipSpec) -> None:
    """Check the folder's config, convert its weights and load them into ``model`` (strict, fp32)."""
    check_config(weights.path, model, spec)
    state = {k: v.float() for k, v in read_state_dict(weights.weights_file).items()}
    result = model.load_state_dict(to_open_clip_state_dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsUnavailableError(
            f"{weights.weights_file} does not fill open_clip {spec.architecture}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ProcessorPreprocess:
    """transformers' CLIP image processor (PIL backend), as a PIL image -> (3, H, W) tensor transform.

    Resize (the shortest side to ``shortest_edge``, or to ``resize_hw`` exactly) with PIL's
    filter ``resample``, crop ``crop_hw`` from ``((h - ch) // 2, (w - cw) // 2)``, multiply by
    ``rescale_factor`` and normalize, in the processor's float order (float64 rescale, float32 after).
    """

    shortest_edge: int | None = 224
    resize_hw: tuple[int, int] | None = None
    crop_hw: tuple[int, int] | None = (224, 224)
    resample: int = _PIL_BICUBIC
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, ...] | None = CLIP_MEAN
    std: tuple[float, ...] | None = CLIP_STD

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step."""
        if self.resize_hw is not None:
            return self.resize_hw[1], self.resize_hw[0]
        if self.shortest_edge is None:
            return width, height
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)

    def __call__(self, image: Any) -> Any:
        import torch

        image = image.convert("RGB")
        size = self.size_for(*image.size)
        if size != image.size:
            image = image.resize(size, resample=self.resample, reducing_gap=None)
        arr = np.asarray(image).transpose(2, 0, 1)  # CHW uint8
        if self.crop_hw is not None:
            arr = _center_crop(arr, *self.crop_hw)
        x = (arr.astype(np.float64) * self.rescale_factor).astype(np.float32) if self.rescale_factor else arr.astype(np.float32)
        if self.mean is not None and self.std is not None:
            mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
            std = np.asarray(self.std, dtype=np.float32)[:, None, None]
            x = (x - mean) / std
        return torch.from_numpy(np.ascontiguousarray(x))


def _center_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' ``center_crop``: offsets rounded down, zero padding when the image is smaller."""
    _, h, w = arr.shape
    if h < height or w < width:
        padded = np.zeros((arr.shape[0], max(h, height), max(w, width)), dtype=arr.dtype)
        top, left = -(-(padded.shape[1] - h) // 2), -(-(padded.shape[2] - w) // 2)  # ceil, as transformers pads
        padded[:, top : top + h, left : left + w] = arr
        arr, h, w = padded, padded.shape[1], padded.shape[2]
    top, left = (h - height) // 2, (w - width) // 2
    return arr[:, top : top + height, left : left + width]


def _hw(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    raise WeightsUnavailableError(f"unsupported {what} {value!r} in the image processor config")


def processor_preprocess(folder: Path) -> ProcessorPreprocess:
    """The image preprocessing of the folder's processor (``preprocessor_config.json``, or the
    ``image_processor`` of ``processor_config.json``); without either, CLIP's defaults."""
    cfg: dict[str, Any] | None = None
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise WeightsUnavailableError(f"cannot read {path}: {exc}") from exc
            cfg = data.get(key) if key else data
            if cfg is not None:
                break
    if cfg is None:
        return ProcessorPreprocess()
    shortest, resize_hw = None, None
    if cfg.get("do_resize", True):
        size = cfg.get("size", {"shortest_edge": 224})
        if isinstance(size, int):  # CLIP does not default to square: an int is the shortest edge
            shortest = size
        elif isinstance(size, dict) and set(size) == {"shortest_edge"}:
            shortest = int(size["shortest_edge"])
        else:
            resize_hw = _hw(size, "size")
    crop = _hw(cfg.get("crop_size", 224), "crop_size") if cfg.get("do_center_crop", True) else None
    do_norm = cfg.get("do_normalize", True)
    return ProcessorPreprocess(
        shortest_edge=shortest,
        resize_hw=resize_hw,
        crop_hw=crop,
        resample=int(cfg.get("resample", _PIL_BICUBIC)),
        rescale_factor=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else None,
        mean=tuple(cfg.get("image_mean", CLIP_MEAN)) if do_norm else None,
        std=tuple(cfg.get("image_std", CLIP_STD)) if do_norm else None,
    )
