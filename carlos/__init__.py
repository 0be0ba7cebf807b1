"""CARLoS: characterize, search and review SDXL LoRAs by what they do.

The library behind the dashboard and the CLI, one package per stage (README, "Architecture").
Heavy dependencies (torch, diffusers, open_clip, umap) are imported lazily by the modules
that need them, and each package's public names load on first use (:func:`exports`), so
``import carlos.<stage>`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__version__ = "0.2.0"


def exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public ``names`` (name -> submodule)
    are imported on first access (PEP 562), like diffusers' lazy import table."""

    def getattr_(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    def dir_() -> list[str]:
        return sorted(names)

    return getattr_, dir_
