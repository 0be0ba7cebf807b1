"""The models, torch imported lazily inside them: CLIP embedders (``clip``, the registry and
checkpoint resolution in ``clip_registry``, transformers-format checkpoints converted to open_clip
in ``clip_transformers``), the prefix KV cache of query directions
(``prefix_cache``; the text tower run piece by piece, pad-to-longest included, in
``text_tower``), diffusion backends (``diffusion``; SDXL architectures as data in
``sdxl_arch``, tiny pipelines built from config in ``tiny_sdxl``, real weights in
``sdxl_loader``, tokenizers in ``clip_tokenizer``), the textual baselines' models
(``bm25``, ``sentence``) and the int8 GEMV backend of the direction index (``int8``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["load_clip", "ClipEmbedder", "DiffusionBackend", "build_prefix_cache", "query_direction_cached"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "load_clip": "clip",
        "ClipEmbedder": "clip",
        "DiffusionBackend": "diffusion",
        "build_prefix_cache": "prefix_cache",
        "query_direction_cached": "prefix_cache",
    },
)
