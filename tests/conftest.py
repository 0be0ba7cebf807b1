"""Shared fixtures: the real corpus imported once per session into a temporary store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from carlos.config import REPO_ROOT
from carlos.data.corpus import fetch_release, import_parquet
from carlos.store.store import Store

CACHE = REPO_ROOT / "data" / "cache"


@pytest.fixture(scope="session")
def corpus_parquet() -> Path:
    """The verified authors' parquet (downloaded with pip on first use)."""
    return fetch_release(CACHE)


@pytest.fixture(scope="session")
def real_store_path(tmp_path_factory: pytest.TempPathFactory, corpus_parquet: Path) -> Path:
    path = tmp_path_factory.mktemp("real") / "carlos.duckdb"
    import_parquet(Store.open(path), corpus_parquet)
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
