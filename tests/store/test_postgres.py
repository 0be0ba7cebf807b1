"""The PostgreSQL backend's own parts: the dialect rewrite, credentials never shown, the session lock."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from carlos.config import default_paths
from carlos.errors import StoreBusyError, StoreUnavailableError
from carlos.store.dialect import to_postgres
from carlos.store.postgres import local_path, redact, scrub
from carlos.store.schema import MIGRATIONS
from carlos.store.store import Store


def test_the_rewrite_leaves_literals_and_names_alone() -> None:
    sql = "SELECT json_extract_string(extra, '$.a') AS \"len(?)\", 'x ? 10%' FROM t WHERE len(v) = ? AND strlen(k) > 1 -- ?"
    out = to_postgres(sql)
    assert out == (
        "SELECT (jsonb_path_query_first((extra)::jsonb, ('$.a')::jsonpath) #>> '{}') AS \"len(?)\", 'x ? 10%%' "
        "FROM t WHERE cardinality(v) = %s AND length(k) > 1 -- ?"
    )
    assert to_postgres("CREATE TABLE t (a FLOAT[], b DOUBLE, c BLOB, d JSON, e VARCHAR[], f DOUBLE PRECISION)") == (
        "CREATE TABLE t (a real[], b double precision, c bytea, d text, e text[], f DOUBLE PRECISION)"
    )
    assert to_postgres("UPDATE c SET u = epoch(created_at)") == "UPDATE c SET u = extract(epoch from created_at)"
    assert to_postgres("SELECT sqrt(list_dot_product(p.diff, p.diff))") == (
        "SELECT sqrt((SELECT sum(u.a * u.b) FROM unnest(p.diff, p.diff) AS u(a, b)))"
    )


def test_every_migration_statement_is_rewritten_without_duckdb_words() -> None:
    for _, _, statements in MIGRATIONS:
        for stmt in statements:
            out = re.sub(r"--[^\n]*", "", to_postgres(stmt))  # comments are left as written
            for word in ("FLOAT[]", " BLOB", " JSON", "strlen(", "epoch(", " len("):
                assert word not in out, (word, out)


def test_credentials_are_never_shown(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    secret = "s3cret-Pa55word"
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"CREATE ROLE carlos_team LOGIN PASSWORD '{secret}'")
        con.execute("GRANT ALL ON SCHEMA public TO carlos_team")
    base, _, query = pg_url.partition("?")
    url = base.replace("postgres:@", f"carlos_team:{secret}@") + "?" + query
    caplog.set_level(logging.DEBUG)
    store = Store.open(url)
    store.loras.upsert([{"lora_id": "a", "source": "t"}])
    assert secret not in store.where and secret not in str(store.path)
    assert secret not in redact(url) and "carlos_team" not in redact(url)
    wrong = url.replace(base.rsplit("/", 1)[1], "no_such_database")
    with pytest.raises(StoreUnavailableError, match="no_such_database") as err:
        Store.open(wrong)
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert secret not in caplog.text
    assert scrub(f"failed: {url}", url).count(secret) == 0


def test_sessions_take_turns_and_a_long_hold_is_a_clear_error(pg_url: str) -> None:
    a = Store.open(pg_url)
    b = Store(pg_url, lock_timeout=0.3)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with a.session() as con:
            con.execute("SELECT 1")
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    started = time.monotonic()
    with pytest.raises(StoreBusyError, match="stayed locked") as err:
        b.loras.upsert([{"lora_id": "x", "source": "t"}])
    assert time.monotonic() - started < 5 and redact(pg_url) in str(err.value)
    release.set()
    t.join(10)
    b.loras.upsert([{"lora_id": "x", "source": "t"}])
    assert a.table_counts()["loras"] == 1


def test_vectors_and_numbers_round_trip_exactly(empty_store: Store) -> None:
    m = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    empty_store.reps.bulk_insert(
        [f"l{i}" for i in range(5)], m, np.arange(5.0), np.linspace(0, 1, 5), embedder="E", source="s", protocol="p"
    )
    ids, out, strength, consistency = empty_store.reps.load_directions("E")
    order = np.argsort(ids)
    assert np.array_equal(out[order], m) and out.dtype == np.float32
    assert np.allclose(strength[order], np.arange(5.0)) and np.allclose(consistency[order], np.linspace(0, 1, 5))
    frame = empty_store.reps.corpus_frame("E")
    assert list(frame["lora_id"]) == [f"l{i}" for i in range(5)] and frame["n_samples"].isna().all()


def test_the_store_comes_from_the_environment_or_the_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CARLOS_STORE", "CARLOS_DB", "CARLOS_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[carlos]\nstore = "postgresql://team:pw@db.internal:5432/carlos"\n')
    assert default_paths().store == "postgresql://team:pw@db.internal:5432/carlos"
    monkeypatch.setenv("CARLOS_STORE", "postgresql://other@db2/carlos")  # the environment wins
    assert default_paths().store == "postgresql://other@db2/carlos"
    monkeypatch.setenv("CARLOS_STORE", str(tmp_path / "x.duckdb"))  # a path is a DuckDB store
    assert default_paths().store == str(tmp_path / "x.duckdb") and default_paths().store_url is None
    assert "pw" not in str(local_path("postgresql://team:pw@db.internal:5432/carlos"))
