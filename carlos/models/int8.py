"""The int8 GEMV backend of the direction index: torch's fbgemm quantized linear.

:class:`carlos.core.index.DirectionIndex` quantizes the unit directions and bounds the
error in numpy; this backend only packs the codes and multiplies them with a float
query (a quarter of the float32 bytes to read, which bounds a 1M x 512 scan). torch is
imported when a large index is built, never by the core.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


@functools.cache
def fbgemm_available() -> bool:
    """torch with the fbgemm quantized engine and its dynamic int8 linear op."""
    try:
        import torch

        return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")
    except Exception:  # noqa: BLE001 -- any failure means: use the float32 scan
        return False


class FbgemmInt8:
    """Per-channel int8 weights packed for ``quantized::linear_dynamic`` (see the core's bound)."""

    name = "fbgemm"

    def available(self) -> bool:
        return fbgemm_available()

    def pack(self, codes: np.ndarray, scales: np.ndarray) -> Any:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch marks quantized-tensor constructors deprecated
            q = torch._make_per_channel_quantized_tensor(
                torch.from_numpy(codes), torch.from_numpy(scales), torch.zeros(len(codes), dtype=torch.long), 0
            )
            return torch.ops.quantized.linear_prepack(q, None)

    def scores(self, packed: Sequence[Any], x: np.ndarray) -> np.ndarray:
        import torch

        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        with torch.inference_mode():
            approx = torch.cat([torch.ops.quantized.linear_dynamic(xt, p, True) for p in packed], 1)
        return approx.numpy()[0]
