"""CLIP embedders: one interface for the real ViT-B/32 and a tiny local model.

The paper's space is CLIP ``ViT-B-32`` with OpenAI weights, projected and
*not* normalized. Which models exist and where their weights are is
:mod:`carlos.models.clip_registry` (weights are never downloaded unless asked);
this module owns loading one (:func:`load_clip`) and :class:`ClipEmbedder`. Both
checkpoint layouts end up in open_clip's model: an open_clip file is loaded by
open_clip, a transformers folder is converted (:mod:`carlos.models.clip_transformers`)
and keeps its processor's image preprocessing. The
``tiny`` model has random seeded weights and the real tokenizer, so every code
path can be exercised without weights. Torch tensors never leave
:class:`ClipEmbedder`: features come out as float32 numpy arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError, WeightsUnavailableError
from carlos.models.clip_registry import (
    TRANSFORMERS,
    ClipSpec,
    find_clip_weights,
    get_clip_spec,
    missing_weights_message,
)

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- loading


def _pick_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return str(device)


def _build_random(spec: ClipSpec) -> Any:
    """Seeded random weights without disturbing the caller's global RNG."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed or 0)
        if spec.architecture == "tiny":
            from open_clip.model import CLIP

            cfg = spec.model_cfg
            return CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=spec.quick_gelu)
        return open_clip.create_model(spec.architecture, pretrained=None, force_quick_gelu=spec.quick_gelu)


def _build_architecture(spec: ClipSpec) -> Any:
    """open_clip's ``spec.architecture`` with its initial weights, to be overwritten by a checkpoint
    (built directly: ``create_model(pretrained=None)`` would log that it stays random)."""
    import open_clip
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config(spec.architecture)
    if cfg is None or "custom_text" in cfg or "hf_model_name" in cfg.get("text_cfg", {}):
        raise InvalidInputError(f"{spec.architecture} is not an open_clip CLIP with a built-in text tower")
    cfg["quick_gelu"] = spec.quick_gelu or bool(cfg.get("quick_gelu"))
    return CLIP(**cfg)


def _preprocess_for(model: Any, spec: ClipSpec) -> Any:
    """The inference transform open_clip pairs with this model (OpenAI mean/std, bicubic)."""
    import open_clip
    from open_clip.transform import PreprocessCfg

    cfg = getattr(model.visual, "preprocess_cfg", None)
    if cfg:
        return open_clip.transform.image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    return open_clip.image_transform(spec.image_size, is_train=False)


def load_clip(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    allow_download: bool = False,
    device: str | None = None,
) -> ClipEmbedder:
    """Load a registered CLIP model as a :class:`ClipEmbedder` (eval mode, fp32).

    ``device=None`` picks CUDA when available, else CPU. Real weights are never
    downloaded unless ``allow_download`` is set; absent weights raise
    :class:`WeightsUnavailableError` with instructions. ``checkpoint`` is an open_clip
    file or a transformers folder (see :func:`carlos.models.clip_registry.find_clip_weights`);
    either way the embedder runs open_clip's model with open_clip's tokenizer (the same BPE
    ids as the folder's ``CLIPTokenizer``), and a transformers folder keeps its processor's
    image preprocessing.
    """
    import open_clip
    import torch

    spec = get_clip_spec(name)
    dev = _pick_device(device)
    preprocess = None
    if spec.weights == "random":
        if checkpoint is not None:
            raise InvalidInputError(f"{name!r} has random weights; a checkpoint does not apply to it")
        model = _build_random(spec)
        source = f"random(seed={spec.seed})"
    else:
        weights = find_clip_weights(spec, checkpoint)
        if weights is None and not allow_download:
            raise WeightsUnavailableError(missing_weights_message(spec))
        try:
            if weights is None:
                logger.info("downloading %s weights through open_clip", spec.name)
                model = open_clip.create_model(spec.architecture, pretrained=spec.weights, force_quick_gelu=spec.quick_gelu)
                source = f"open_clip:{spec.architecture}/{spec.weights}"
            elif weights.format == TRANSFORMERS:
                from carlos.models.clip_transformers import load_transformers_weights, processor_preprocess

                model = _build_architecture(spec)
                load_transformers_weights(model, weights, spec)
                preprocess = processor_preprocess(weights.path)
                source = weights.source
            else:
                model = open_clip.create_model(spec.architecture, pretrained=str(weights.weights_file), force_quick_gelu=spec.quick_gelu)
                source = weights.source
        except Exception as exc:  # any failure here means: no usable weights (corrupt, wrong model)
            where = weights.describe() if weights is not None else "the network"
            raise WeightsUnavailableError(
                f"could not load {spec.name} weights from {where}: {exc}\n" + missing_weights_message(spec)
            ) from exc
    model = model.to(torch.device(dev)).eval()
    tokenizer = open_clip.get_tokenizer(spec.architecture if spec.architecture != "tiny" else "ViT-B-32")
    if preprocess is None:
        preprocess = _preprocess_for(model, spec)
    logger.info("loaded CLIP %s from %s on %s", spec.embedder_id, source, dev)
    return ClipEmbedder(model, tokenizer, preprocess, spec=spec, device=dev, weights_source=source)


# --------------------------------------------------------------------------- embedder


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")


def _check_texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidInputError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return texts


class ClipEmbedder:
    """Text and image features of one CLIP model, as unnormalized float32 numpy arrays."""

    def __init__(self, model: Any, tokenizer: Any, preprocess: Any, *, spec: ClipSpec, device: str, weights_source: str) -> None:
        self.model = model  # open_clip CLIP, eval mode; carlos.models.prefix_cache runs its text tower
        self._tokenizer = tokenizer
        self._preprocess = preprocess
        self.spec = spec
        self.device = device
        self.weights_source = weights_source  # "transformers:<folder>", "open_clip:<file>" or "random(seed=...)"

    @property
    def embedder_id(self) -> str:
        return self.spec.embedder_id

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def context_length(self) -> int:
        return self.spec.context_length

    def __repr__(self) -> str:
        return f"ClipEmbedder({self.embedder_id!r}, device={self.device!r})"

    # ---- tokens
    @property
    def sot_token_id(self) -> int:
        return int(self._tokenizer.sot_token_id)

    @property
    def eot_token_id(self) -> int:
        return int(self._tokenizer.eot_token_id)

    def bpe_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens and without truncation."""
        return list(self._tokenizer.encode(text))

    def token_ids(self, text: str) -> tuple[list[int], bool]:
        """Ids as the model reads them (SOT ... EOT) and whether the text was truncated.

        Mirrors open_clip: keep the first ``context_length`` ids and make the last one EOT.
        """
        ids = [self.sot_token_id, *self.bpe_ids(text), self.eot_token_id]
        if len(ids) <= self.context_length:
            return ids, False
        ids = ids[: self.context_length]
        ids[-1] = self.eot_token_id
        return ids, True

    def tokenize(self, texts: Sequence[str] | str) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens (n, context_length) int64, truncated (n,) bool)``, zero-padded like open_clip."""
        texts = _check_texts(texts)
        tokens = np.zeros((len(texts), self.context_length), dtype=np.int64)
        truncated = np.zeros(len(texts), dtype=bool)
        for i, text in enumerate(texts):
            ids, truncated[i] = self.token_ids(text)
            tokens[i, : len(ids)] = ids
        return tokens, truncated

    # ---- features
    def _run_batches(self, items: list[Any], batch_size: int, encode: Callable[[list[Any]], Any], progress: Progress | None) -> np.ndarray:
        import torch

        out = np.empty((len(items), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                out[start : start + len(chunk)] = encode(chunk).float().cpu().numpy()
                if progress is not None:
                    progress(start + len(chunk), len(items))
        return out

    def text_features(self, texts: Sequence[str] | str, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        """Projected text features, not normalized (open_clip ``encode_text(normalize=False)``)."""
        import torch

        texts = _check_texts(texts)
        _check_batch_size(batch_size)
        tokens, truncated = self.tokenize(texts)
        if truncated.any():
            logger.info(
                "%d of %d texts exceeded %d tokens and were truncated",
                int(truncated.sum()),
                len(texts),
                self.context_length,
            )
        rows = list(range(len(texts)))

        def encode(idx: list[int]) -> Any:
            batch = torch.from_numpy(tokens[idx]).to(self.device)
            return self.model.encode_text(batch, normalize=False)

        return self._run_batches(rows, batch_size, encode, progress)

    def image_features(self, images: Sequence[Any], batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
        """Projected image features, not normalized, of PIL images or uint8 HxWx3 arrays."""
        import torch
        from PIL import Image

        _check_batch_size(batch_size)
        if isinstance(images, (Image.Image, np.ndarray)):
            images = [images]
        pil: list[Any] = []
        for i, img in enumerate(images):
            if isinstance(img, Image.Image):
                pil.append(img.convert("RGB"))
            elif isinstance(img, np.ndarray):
                if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                    raise InvalidInputError(f"image {i}: arrays must be uint8 HxWx3, got {img.dtype} {img.shape}")
                pil.append(Image.fromarray(np.ascontiguousarray(img), "RGB"))
            else:
                raise InvalidInputError(f"image {i}: expected a PIL image or a uint8 HxWx3 array, got {type(img).__name__}")

        def encode(chunk: list[Any]) -> Any:
            batch = torch.stack([self._preprocess(im) for im in chunk]).to(self.device)
            return self.model.encode_image(batch, normalize=False)

        return self._run_batches(pil, batch_size, encode, progress)
