"""Pictures: Plotly figures as pure functions of frames (``figures``; the error bars of a
LoRA's intervals in ``uncertainty``) and 2-D maps of the directions, fitted once and cached (``maps``).
"""

from __future__ import annotations

from carlos import exports

__all__ = ["MapConfig", "cached_map", "fit_map"]
__getattr__, __dir__ = exports(__name__, {"MapConfig": "maps", "cached_map": "maps", "fit_map": "maps"})
