"""Untrusted LoRA files: safetensors read by hand before any tensor library (``header``), the
upload validator and its report (``validate``), adapter formats and modules (``formats``),
the base model a file was made for (``base_model``), its training metadata (``metadata``),
and small test LoRAs for the tiny backend (``testing``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["validate_lora", "inspect_lora", "LoRAFileLimits", "LoRAFileReport", "make_test_lora"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "validate_lora": "validate",
        "inspect_lora": "validate",
        "LoRAFileLimits": "validate",
        "LoRAFileReport": "validate",
        "make_test_lora": "testing",
    },
)
