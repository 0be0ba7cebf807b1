"""A team store's administration: least-privilege roles (database and library refuse the same
writes), copying between DuckDB and PostgreSQL with verification, and pg_dump/pg_restore."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from carlos.characterize import jobs
from carlos.core.access import CurrentUser
from carlos.errors import InvalidInputError, PermissionDeniedError
from carlos.files.testing import make_test_lora
from carlos.pagemodels.corpus_pages import read_review
from carlos.pagemodels.detail import build_detail, read_detail
from carlos.review import workflow
from carlos.search.retrievers import SearchConfig
from carlos.search.service import SearchService
from carlos.store.roles import apply_roles
from carlos.store.store import Store
from carlos.store.transfer import copy_store

USER = CurrentUser.local("ann@example.org")


def _as(url: str, role: str) -> str:
    """``url`` logging in as ``role`` (the test server trusts its Unix socket)."""
    return url.replace("postgres:@", f"{role}:@", 1)


def test_each_role_writes_only_what_it_needs(pg_url: str) -> None:
    owner = Store.open(pg_url)
    owner.loras.upsert([{"lora_id": "civitai:1", "source": "t"}])
    apply_roles(owner)
    suffix = uuid.uuid4().hex[:6]
    names = {group: f"{group.split('_')[1]}_{suffix}" for group in ("carlos_dashboard", "carlos_worker", "carlos_readonly")}
    with psycopg.connect(pg_url, autocommit=True) as con:
        for group, login in names.items():
            con.execute(f"CREATE ROLE {login} LOGIN IN ROLE {group}")
    dashboard = Store.open(_as(pg_url, names["carlos_dashboard"]))
    worker_url = _as(pg_url, names["carlos_worker"])
    worker, readonly = Store.open(worker_url), Store.open(_as(pg_url, names["carlos_readonly"]))
    # the database refuses (whatever the client)
    with psycopg.connect(worker_url, autocommit=True) as con, pytest.raises(psycopg.errors.InsufficientPrivilege):
        con.execute(
            "INSERT INTO decisions (lora_id, reviewer, action, status_before, status_after) VALUES ('civitai:1', 'w', 'flag', 'a', 'b')"
        )
    with (
        psycopg.connect(_as(pg_url, names["carlos_dashboard"]), autocommit=True) as con,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        con.execute("UPDATE decisions SET note = 'rewritten'")  # the audit log is append-only
    # the library says so, as a refused write, and nothing is written
    with pytest.raises(PermissionDeniedError, match="refused this write"):
        workflow.claim(worker, "civitai:1", USER)
    with pytest.raises(PermissionDeniedError, match="refused this write"):
        readonly.loras.upsert([{"lora_id": "civitai:2", "source": "t"}])
    assert readonly.table_counts()["loras"] == 1 and owner.review.claim_holder("civitai:1") is None
    # the dashboard reviews (worker processes under the worker role run jobs in test_postgres_processes)
    workflow.claim(dashboard, "civitai:1", USER)
    workflow.decide(dashboard, "civitai:1", USER, "approve")
    assert readonly.review.status_of("civitai:1") == "approved"


def _with_every_kind_of_row(store: Store, tmp_path: Path) -> None:
    """Decisions, claims, thresholds, a finished job with pairs, thumbnails and rounds: every column type."""
    workflow.claim(store, "civitai:160844", USER)
    workflow.decide(store, "civitai:160844", USER, "flag", note="ünïcode ✓ and 'quotes'")
    store.review.record_thresholds(9.0, 0.05, "ann@example.org", None)
    lora = tmp_path / "c.safetensors"
    make_test_lora(lora, seed=5)
    sub = jobs.submit(store, lora, backend="tiny", protocol="smoke", uploads_dir=tmp_path / "uploads", user=USER)
    jobs.Worker(store).run(once=True)
    assert store.jobs.get(sub.job_id)["status"] == "finished"


def test_copy_to_postgres_and_back_is_verified(real_store_path: Path, pg_url: str, tmp_path: Path) -> None:
    shutil.copy(real_store_path, tmp_path / "src.duckdb")
    source = Store.open(tmp_path / "src.duckdb")
    _with_every_kind_of_row(source, tmp_path)
    team = Store.open(pg_url)
    report = copy_store(source, team)
    assert report.ok and {t.table: t.target_rows for t in report.tables}["representations"] == 741
    assert team.reps.corpus_frame("ViT-B-32/openai")["lora_id"].tolist() == source.reps.corpus_frame("ViT-B-32/openai")["lora_id"].tolist()
    # the dashboard's page models and the search service read the same from the team store
    for key in ("civitai:160844", "civitai:148554"):
        on_file, on_team = read_detail(source, key), read_detail(team, key)
        assert (on_team.lora_id, on_team.status, len(on_team.reps)) == (on_file.lora_id, on_file.status, len(on_file.reps))
        model_file, model_team = build_detail(on_file, on_file.basics.saved), build_detail(on_team, on_team.basics.saved)
        assert (
            model_team.flags == model_file.flags
            and model_team.representations["Strength"].tolist() == model_file.representations["Strength"].tolist()
        )
    assert read_review(team).log["note"].tolist() == read_review(source).log["note"].tolist()
    config = SearchConfig(retriever="bm25")
    assert [h.lora_id for h in SearchService(team).search("pixel art", config).hits] == [
        h.lora_id for h in SearchService(source).search("pixel art", config).hits
    ]
    with pytest.raises(InvalidInputError, match="not empty"):
        copy_store(source, team)
    assert copy_store(source, team, force=True).ok
    back = Store.open(tmp_path / "back.duckdb")
    assert copy_store(team, back).ok
    # ids keep counting after the copied ones on both sides
    assert team.review.record_thresholds(None, None, "bob", None) == back.review.record_thresholds(None, None, "bob", None) == 2


def test_pg_dump_and_pg_restore_round_trip(pg_server: Any, pg_url: str, tmp_path: Path) -> None:
    store = Store.open(pg_url)
    store.loras.upsert([{"lora_id": f"civitai:{i}", "source": "t"} for i in range(10)])
    workflow.claim(store, "civitai:3", USER)
    bin_dir = Path(pg_server.bin_path)
    parts = urlsplit(pg_url)
    socket_dir, database = parse_qs(parts.query)["host"][0], parts.path.strip("/")
    dump = tmp_path / "team.dump"
    subprocess.run([bin_dir / "pg_dump", "-h", socket_dir, "-U", "postgres", "-Fc", "-f", dump, database], check=True, timeout=120)
    restored = f"r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {restored}")
    subprocess.run([bin_dir / "pg_restore", "-h", socket_dir, "-U", "postgres", "-d", restored, dump], check=True, timeout=120)
    copy = Store.open(pg_url.replace(f"/{database}?", f"/{restored}?"))
    assert copy.table_counts() == store.table_counts() and copy.review.claim_holder("civitai:3") == "ann@example.org"
    assert copy.data_version() == store.data_version()
