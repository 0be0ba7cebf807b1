"""The CLIP models CARLoS knows, as data, and where their weights are on this machine.

A :class:`ClipSpec` names an architecture, its weights and its shapes; the registry
holds the paper's ``ViT-B-32/openai`` plus random-weight variants for timing and tests
(``list_clip_models`` / ``get_clip_spec``). Weights are resolved offline only, in two
layouts (:func:`find_clip_weights`, first match wins):

1. an explicit path (``--clip-checkpoint`` / ``load_clip(checkpoint=...)``), then
2. ``$CARLOS_CLIP_CHECKPOINT`` -- either one a transformers folder (``config.json`` with
   ``model.safetensors`` or ``pytorch_model.bin``) or an open_clip checkpoint file;
3. the Hugging Face cache, transformers format: ``openai/clip-vit-base-patch32``, the
   checkpoint the corpus was measured with (PAPER.md, "The authors' procedure");
4. the Hugging Face cache, open_clip format: ``timm/vit_base_patch32_clip_224.openai``.

:func:`missing_weights_message` names every place looked and how to fill one. No torch or
open_clip here: loading is :mod:`carlos.models.clip`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carlos.errors import InvalidInputError, WeightsUnavailableError

#: Environment variable naming a ViT-B-32 OpenAI checkpoint: open_clip file or transformers folder.
CHECKPOINT_ENV = "CARLOS_CLIP_CHECKPOINT"

#: The two checkpoint layouts :func:`find_clip_weights` recognizes.
TRANSFORMERS = "transformers"
OPEN_CLIP = "open_clip"
#: A transformers folder: this config plus one of these weight files (preferred first).
TRANSFORMERS_CONFIG = "config.json"
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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
    hf_transformers_repo: str | None = None  # the same weights in transformers format
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
            hf_transformers_repo="openai/clip-vit-base-patch32",
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


@dataclass(frozen=True)
class ClipWeights:
    """A checkpoint found on this machine: its layout, where it is, and how it was found."""

    format: str  # TRANSFORMERS or OPEN_CLIP
    path: Path  # the model folder (transformers) or the checkpoint file (open_clip)
    weights_file: Path  # the file the tensors are read from
    found_by: str  # "--clip-checkpoint", CHECKPOINT_ENV or "the Hugging Face cache"

    @property
    def source(self) -> str:
        """Provenance as recorded with features, e.g. ``transformers:/…/snapshots/<rev>``."""
        return f"{self.format}:{self.path}"

    def describe(self) -> str:
        """One line for people: format, weights file, path and how it was found."""
        file = f" ({self.weights_file.name})" if self.weights_file != self.path else ""
        return f"{self.format} format{file} at {self.path}, from {self.found_by}"


def transformers_weights_file(folder: Path) -> Path | None:
    """The weights of a transformers model folder: ``model.safetensors`` before ``pytorch_model.bin``;
    None unless ``config.json`` is there too. Symlinks are followed (a dangling one is absent)."""
    if not (folder / TRANSFORMERS_CONFIG).is_file():
        return None
    for name in TRANSFORMERS_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _hf_snapshots(repo: str, cache_dir: Path) -> list[Path]:
    """Snapshots of ``repo`` in the cache: the ``refs/main`` one first, then newest first."""
    repo_dir = cache_dir / ("models--" + repo.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return []
    ordered: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        ordered.append(snapshots / ref.read_text(encoding="utf-8").strip())
    ordered += sorted(
        (p for p in snapshots.iterdir() if p.is_dir() and p not in ordered),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    return ordered


def _find_in_hf_cache(repo: str, filenames: Sequence[str], cache_dir: Path) -> Path | None:
    """A cached file of ``repo``: the ``refs/main`` snapshot first, then any other snapshot."""
    for snapshot in _hf_snapshots(repo, cache_dir):
        for filename in filenames:
            candidate = snapshot / filename
            if candidate.is_file():  # follows the blob symlink; a dangling link is skipped
                return candidate
    return None


def _formats_hint(spec: ClipSpec) -> str:
    return (
        f"a transformers folder ({TRANSFORMERS_CONFIG} with {' or '.join(TRANSFORMERS_WEIGHT_FILES)}, "
        f"as in the Hugging Face repo {spec.hf_transformers_repo}) or an open_clip checkpoint file "
        f"({' or '.join(spec.hf_filenames)} from the Hugging Face repo {spec.hf_repo})"
    )


def _explicit_weights(spec: ClipSpec, path: Path, found_by: str) -> ClipWeights:
    """Classify a path the user gave: a transformers folder (or its weights file), else an open_clip file."""
    if path.is_dir():
        file = transformers_weights_file(path)
        if file is not None:
            return ClipWeights(TRANSFORMERS, path, file, found_by)
        for name in spec.hf_filenames:
            if (path / name).is_file():
                return ClipWeights(OPEN_CLIP, path / name, path / name, found_by)
        raise WeightsUnavailableError(f"{found_by} {str(path)!r} is a folder with neither format in it; expected {_formats_hint(spec)}.")
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{found_by} {str(path)!r} is not a file or folder. Point it at the {spec.name} checkpoint: {_formats_hint(spec)}."
        )
    if path.name in TRANSFORMERS_WEIGHT_FILES and (path.parent / TRANSFORMERS_CONFIG).is_file():
        return ClipWeights(TRANSFORMERS, path.parent, path, found_by)
    return ClipWeights(OPEN_CLIP, path, path, found_by)


def find_clip_weights(spec: ClipSpec, checkpoint: str | Path | None = None) -> ClipWeights | None:
    """Where the weights of ``spec`` are on this machine and in which format, without the network.

    Order: explicit ``checkpoint``; ``$CARLOS_CLIP_CHECKPOINT``; the Hugging Face cache in
    transformers format (``openai/clip-vit-base-patch32``, what the corpus was measured with), then
    in open_clip format (``timm/vit_base_patch32_clip_224.openai``). An explicit path or env var that
    does not hold a checkpoint is an error, not a silent fall-through. None: nothing found.
    """
    if spec.weights != "openai":
        return None
    for found_by, value in (("--clip-checkpoint", checkpoint), (CHECKPOINT_ENV, os.environ.get(CHECKPOINT_ENV))):
        if value:
            return _explicit_weights(spec, Path(value).expanduser(), found_by)
    cache = hf_hub_cache_dir()
    if spec.hf_transformers_repo:
        for snapshot in _hf_snapshots(spec.hf_transformers_repo, cache):
            file = transformers_weights_file(snapshot)
            if file is not None:
                return ClipWeights(TRANSFORMERS, snapshot, file, f"the Hugging Face cache ({spec.hf_transformers_repo})")
    if spec.hf_repo:
        path = _find_in_hf_cache(spec.hf_repo, spec.hf_filenames, cache)
        if path is not None:
            return ClipWeights(OPEN_CLIP, path, path, f"the Hugging Face cache ({spec.hf_repo})")
    return None


def resolve_clip_checkpoint(spec: ClipSpec, checkpoint: str | Path | None = None) -> Path | None:
    """The path of :func:`find_clip_weights` (a transformers folder or an open_clip file), or None."""
    found = find_clip_weights(spec, checkpoint)
    return None if found is None else found.path


def weight_locations(spec: ClipSpec) -> list[str]:
    """Every place :func:`find_clip_weights` looks, in order, as lines for people."""
    cache = hf_hub_cache_dir()
    env = os.environ.get(CHECKPOINT_ENV)
    places = [
        "an explicit checkpoint (--clip-checkpoint PATH, load_clip(..., checkpoint=PATH)): none given",
        f"${CHECKPOINT_ENV}: " + (env if env else "not set"),
    ]
    if spec.hf_transformers_repo:
        repo_dir = cache / ("models--" + spec.hf_transformers_repo.replace("/", "--"))
        places.append(
            f"transformers format: {repo_dir}/snapshots/<rev>/ with {TRANSFORMERS_CONFIG} and "
            f"{' or '.join(TRANSFORMERS_WEIGHT_FILES)} (Hugging Face repo {spec.hf_transformers_repo})"
        )
    if spec.hf_repo:
        repo_dir = cache / ("models--" + spec.hf_repo.replace("/", "--"))
        places.append(f"open_clip format: {repo_dir}/snapshots/<rev>/{' or '.join(spec.hf_filenames)} (Hugging Face repo {spec.hf_repo})")
    return places


def missing_weights_message(spec: ClipSpec) -> str:
    """What to do when the weights of ``spec`` are not on this machine (every place looked, every way to provide them)."""
    looked = "".join(f"  {i}. {place}\n" for i, place in enumerate(weight_locations(spec), 1))
    return (
        f"The {spec.name} CLIP weights are not on this machine and downloading is disabled.\n"
        f"Looked for them, in this order:\n{looked}"
        f"To use them, do one of:\n"
        f"  - on a machine with network access run either\n"
        f"      hf download {spec.hf_transformers_repo} {TRANSFORMERS_CONFIG} preprocessor_config.json "
        f"{TRANSFORMERS_WEIGHT_FILES[0]}  (transformers format, the corpus's own checkpoint) or\n"
        f"      hf download {spec.hf_repo} {spec.hf_filenames[0]}  (open_clip format);\n"
        f"    they land in the Hugging Face cache, {hf_hub_cache_dir()}; copy that cache here or set "
        f"HF_HUB_CACHE/HF_HOME to it;\n"
        f"  - pass the checkpoint explicitly: --clip-checkpoint PATH (load_clip(..., checkpoint=PATH)), "
        f"a transformers folder or an open_clip file;\n"
        f"  - or set the environment variable {CHECKPOINT_ENV}=PATH (either format);\n"
        f"  - or allow the download (allow_download=True) where network is available.\n"
        f"Alternatives without these weights: the 'tiny' demo backend (random weights, not the "
        f"paper's space) or the text-seeded behaviour search over stored LoRA directions."
    )
