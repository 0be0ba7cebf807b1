"""CLIP embedders: one interface for the real ViT-B/32 and a tiny local model.

The paper's space is open_clip ``ViT-B-32`` with OpenAI weights, projected and
*not* normalized. Weights cannot be downloaded here, so they are resolved
offline (explicit path, ``CARLOS_CLIP_CHECKPOINT``, the Hugging Face cache);
the ``tiny`` model has random seeded weights and the real tokenizer, so every
code path can be exercised without weights. Torch tensors never leave
:class:`ClipEmbedder`: features come out as float32 numpy arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError, WeightsUnavailableError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: Environment variable naming a ViT-B-32 OpenAI checkpoint file (open_clip format).
CHECKPOINT_ENV = "CARLOS_CLIP_CHECKPOINT"


@dataclass(frozen=True)
class ClipSpec:
    """A named CLIP model: architecture, where its weights come from, its shapes."""

    name: str  # registry key, e.g. "ViT-B-32/openai"
    embedder_id: str  # recorded with every vector computed by this model
    architecture: str  # open_clip model name, or "tiny" for the locally built towers
    weights: str  # "openai" (resolved checkpoint) or "random" (seeded init)
    dim: int  # projected feature size
    context_length: int  # text window in tokens (SOT and EOT included)
    image_size: int  # square input resolution of the vision tower
    quick_gelu: bool  # OpenAI CLIP was trained with QuickGELU
    description: str
    seed: int | None = None  # random-weight models only
    hf_repo: str | None = None  # Hugging Face repo open_clip fetches the weights from
    hf_filenames: tuple[str, ...] = ()  # files in that repo, preferred first
    model_cfg: dict[str, Any] = field(default_factory=dict)  # tiny towers only


_TINY_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

# open_clip 3.3.0 pretrained.py: ViT-B-32 "openai" -> hf_hub "timm/vit_base_patch32_clip_224.openai/",
# file open_clip_model.safetensors (preferred) or open_clip_pytorch_model.bin; quick_gelu=True.
_REGISTRY: dict[str, ClipSpec] = {
    spec.name: spec
    for spec in (
        ClipSpec(
            name="ViT-B-32/openai",
            embedder_id="ViT-B-32/openai",
            architecture="ViT-B-32",
            weights="openai",
            dim=512,
            context_length=77,
            image_size=224,
            quick_gelu=True,
            description="CLIP ViT-B/32, OpenAI weights: the space of the paper and the released corpus.",
            hf_repo="timm/vit_base_patch32_clip_224.openai",
            hf_filenames=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
        ),
        ClipSpec(
            name="ViT-B-32/random",
            embedder_id="ViT-B-32/random-seed0",
            architecture="ViT-B-32",
            weights="random",
            dim=512,
            context_length=77,
            image_size=224,
            quick_gelu=True,
            description="ViT-B/32 architecture with seeded random weights (timing, tests).",
            seed=0,
        ),
        ClipSpec(
            name="tiny",
            embedder_id="tiny-clip/seed0",
            architecture="tiny",
            weights="random",
            dim=_TINY_CFG["embed_dim"],
            context_length=77,
            image_size=_TINY_CFG["vision_cfg"]["image_size"],
            quick_gelu=True,
            description="Tiny random CLIP (2-layer towers, 32-d) with the real tokenizer: demos, tests.",
            seed=0,
            model_cfg=_TINY_CFG,
        ),
    )
}


def list_clip_models() -> list[str]:
    """Names accepted by :func:`get_clip_spec` and :func:`load_clip`."""
    return list(_REGISTRY)


def get_clip_spec(name: str) -> ClipSpec:
    """The spec registered under ``name``; unknown names list the valid ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidInputError(f"unknown CLIP model {name!r}; choose one of: {', '.join(list_clip_models())}") from None


# --------------------------------------------------------------------------- weights


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved like huggingface_hub does (read at call time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _find_in_hf_cache(repo: str, filenames: Sequence[str], cache_dir: Path) -> Path | None:
    """A cached file of ``repo``: the ``refs/main`` snapshot first, then any other snapshot."""
    repo_dir = cache_dir / ("models--" + repo.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ordered: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        ordered.append(snapshots / ref.read_text(encoding="utf-8").strip())
    ordered += sorted(
        (p for p in snapshots.iterdir() if p.is_dir() and p not in ordered),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for snapshot in ordered:
        for filename in filenames:
            candidate = snapshot / filename
            if candidate.is_file():  # follows the blob symlink; a dangling link is skipped
                return candidate
    return None


def resolve_clip_checkpoint(spec: ClipSpec, checkpoint: str | Path | None = None) -> Path | None:
    """Where the weights of ``spec`` are on this machine, without touching the network.

    Order: explicit ``checkpoint``; ``$CARLOS_CLIP_CHECKPOINT``; the Hugging Face cache.
    An explicit path or env var that does not exist is an error, not a silent fall-through.
    """
    if spec.weights != "openai":
        return None
    for source, value in (("checkpoint", checkpoint), (CHECKPOINT_ENV, os.environ.get(CHECKPOINT_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise WeightsUnavailableError(
                    f"{source} {str(path)!r} is not a file. Point it at the {spec.name} checkpoint "
                    f"({' or '.join(spec.hf_filenames)} from the Hugging Face repo {spec.hf_repo})."
                )
            return path
    if spec.hf_repo:
        return _find_in_hf_cache(spec.hf_repo, spec.hf_filenames, hf_hub_cache_dir())
    return None


def _missing_weights_message(spec: ClipSpec) -> str:
    return (
        f"The {spec.name} CLIP weights are not on this machine and downloading is disabled.\n"
        f"To use them, do one of:\n"
        f"  - on a machine with network access run: hf download {spec.hf_repo} "
        f"{spec.hf_filenames[0]}  (it lands in the Hugging Face cache, {hf_hub_cache_dir()}; "
        f"copy that cache here or set HF_HUB_CACHE/HF_HOME to it);\n"
        f"  - pass the file explicitly: --clip-checkpoint PATH (load_clip(..., checkpoint=PATH));\n"
        f"  - or set the environment variable {CHECKPOINT_ENV}=PATH;\n"
        f"  - or allow the download (allow_download=True) where network is available.\n"
        f"Alternatives without these weights: the 'tiny' demo backend (random weights, not the "
        f"paper's space) or the text-seeded behaviour search over stored LoRA directions."
    )


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
    :class:`WeightsUnavailableError` with instructions.
    """
    import open_clip
    import torch

    spec = get_clip_spec(name)
    dev = _pick_device(device)
    if spec.weights == "random":
        if checkpoint is not None:
            raise InvalidInputError(f"{name!r} has random weights; a checkpoint does not apply to it")
        model = _build_random(spec)
        source = f"random(seed={spec.seed})"
    else:
        path = resolve_clip_checkpoint(spec, checkpoint)
        if path is None and not allow_download:
            raise WeightsUnavailableError(_missing_weights_message(spec))
        try:
            if path is not None:
                model = open_clip.create_model(spec.architecture, pretrained=str(path), force_quick_gelu=spec.quick_gelu)
                source = str(path)
            else:
                logger.info("downloading %s weights through open_clip", spec.name)
                model = open_clip.create_model(spec.architecture, pretrained=spec.weights, force_quick_gelu=spec.quick_gelu)
                source = f"open_clip:{spec.architecture}/{spec.weights}"
        except Exception as exc:  # any failure here means: no usable weights (corrupt, wrong model)
            where = path if path is not None else "the network"
            raise WeightsUnavailableError(
                f"could not load {spec.name} weights from {where}: {exc}\n" + _missing_weights_message(spec)
            ) from exc
    model = model.to(torch.device(dev)).eval()
    tokenizer = open_clip.get_tokenizer(spec.architecture if spec.architecture != "tiny" else "ViT-B-32")
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
        self._model = model  # open_clip CLIP, eval mode; used by carlos.models.prefix_cache
        self._tokenizer = tokenizer
        self._preprocess = preprocess
        self.spec = spec
        self.device = device
        self.weights_source = weights_source  # checkpoint path or "random(seed=...)": provenance

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
            return self._model.encode_text(batch, normalize=False)

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
            return self._model.encode_image(batch, normalize=False)

        return self._run_batches(pil, batch_size, encode, progress)
