"""Characterization: protocols and the engine that turns image pairs into a representation
(``engine``), jobs and the worker (``jobs``), what they leave in the store (``results``), and
the Ray driver (``ray_driver``) and actors (``ray_actors``). The worker and the Ray driver are
the only writers of results.
"""

from __future__ import annotations

from carlos import exports

__all__ = ["PROTOCOLS", "get_protocol", "Characterizer", "submit", "Worker"]
__getattr__, __dir__ = exports(
    __name__, {"PROTOCOLS": "engine", "get_protocol": "engine", "Characterizer": "engine", "submit": "jobs", "Worker": "jobs"}
)
