"""The CLIP models CARLoS knows, as data, and where their weights are on this machine.

A :class:`ClipSpec` names an architecture, its weights and its shapes; the registry
holds the paper's ``ViT-B-32/openai`` plus random-weight variants for timing and tests
(``list_clip_models`` / ``get_clip_spec``). Weights are resolved offline only
(:func:`resolve_clip_checkpoint`: explicit path, ``CARLOS_CLIP_CHECKPOINT``, the Hugging
Face cache), and :func:`missing_weights_message` says how to provide them. No torch or
open_clip here: loading is :mod:`carlos.models.clip`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carlos.errors import InvalidInputError, WeightsUnavailableError

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


def missing_weights_message(spec: ClipSpec) -> str:
    """What to do when the weights of ``spec`` are not on this machine (every way to provide them)."""
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
