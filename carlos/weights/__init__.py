"""Weight space: what a LoRA file changes in SDXL, read from its tensors before any image is made.

Owns reading every accepted adapter format into canonical SDXL module names, one module at a
time and without torch (``canonical``, on top of ``tensors``: float32 blocks of safetensors
bytes, and the writer of such files); the fixed-size fingerprint whose inner products estimate
those of the whole ΔW (``sketch``); exact comparison of two files and the relationship labels
(``relate``); candidate search over stored fingerprints and re-ranking (``match``); and
per-block statistics of a file (``stats``). Uses :mod:`carlos.files` to validate an untrusted
file first; never the store, the models or torch.
"""

from __future__ import annotations

from carlos import exports

__all__ = ["AdapterFile", "ArrayAdapter", "Fingerprint", "SketchSpec", "fingerprint", "exact_relation", "Relation"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "AdapterFile": "canonical",
        "ArrayAdapter": "canonical",
        "Fingerprint": "sketch",
        "SketchSpec": "sketch",
        "fingerprint": "sketch",
        "exact_relation": "relate",
        "Relation": "relate",
    },
)
