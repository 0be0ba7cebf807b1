"""CARLoS: characterize, search and review SDXL LoRAs by what they do.

The library behind the dashboard and the CLI. Heavy dependencies (torch,
diffusers, open_clip, umap) are imported lazily by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"
