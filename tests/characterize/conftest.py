"""The local Ray cluster of the Ray test modules (2 CPUs, quiet, a small object store).

It asks for the module's own ``reference`` fixture, so every module's single-process reference
runs before Ray takes the 2 cores."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def cluster(reference: object) -> Iterator[object]:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024**2,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
