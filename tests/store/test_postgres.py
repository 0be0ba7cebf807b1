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


def test_a_reading_session_sees_one_state_and_never_waits_for_a_writer(pg_url: str) -> None:
    """Page reads (``Store.reading``): one snapshot, no session lock; a writer holding the lock mid-
    transaction neither blocks them nor shows them its uncommitted rows."""
    writer, reader = Store.open(pg_url), Store(pg_url, lock_timeout=0.5)
    writer.loras.upsert([{"lora_id": "a", "source": "t"}])
    inside, commit = threading.Event(), threading.Event()

    def write() -> None:
        with writer.transaction():
            writer.loras.upsert([{"lora_id": "b", "source": "t"}])
            inside.set()
            commit.wait(10)

    t = threading.Thread(target=write)
    t.start()
    inside.wait(10)
    started = time.monotonic()
    with reader.reading():
        first = reader.table_counts()["loras"]
        commit.set()
        t.join(10)  # committed while the reading session is open
        assert reader.table_counts()["loras"] == first == 1  # its snapshot: one state throughout
    assert time.monotonic() - started < 5  # never waited for the writer's lock (0.5 s would have raised)
    with reader.reading():
        assert reader.table_counts()["loras"] == 2


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


def test_arrow_tables_cross_in_binary_with_nulls_and_every_column_kind(pg_url: str) -> None:
    """``register`` (binary COPY) and ``sql(...).to_arrow_reader`` (a binary stream) keep every value:
    NULLs, non-ASCII text, bytes, NaN, vectors; a column without a binary encoder (ragged vectors)
    takes the row path and a ``text[]`` column is read back by inference."""
    import pyarrow as pa

    store = Store.open(pg_url)
    vectors = np.random.default_rng(3).standard_normal((5, 7)).astype(np.float32)
    table = pa.table(
        {
            "name": pa.array(["a", None, "像素风格 😀", "", "e'\"\\"]),
            "blob": pa.array([b"\x00\xff", None, b"", b"x", b"y"]),
            "n": pa.array([1, None, -(2**40), 0, 5], pa.int64()),
            "small": pa.array([1, 2, None, 4, 5], pa.int32()),
            "x": pa.array([0.5, None, float("nan"), -1e300, 2.0]),
            "f": pa.array([0.25, 1.5, None, 3.0, -0.0], pa.float32()),
            "ok": pa.array([True, None, False, True, False]),
            "v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 7),
        }
    )
    with store.session() as con:
        con.register("t_binary", table)
        back = con.sql("SELECT * FROM t_binary ORDER BY n NULLS FIRST").to_arrow_table()
        batches = list(con.sql("SELECT v FROM t_binary").to_arrow_reader(2))
        con.register(
            "t_ragged", pa.table({"v": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32())), "tags": pa.array([["a"], ["b", "c"]])})
        )
        ragged = con.sql("SELECT v, tags FROM t_ragged ORDER BY cardinality(v) DESC").to_arrow_table().to_pylist()
    by_name = {r["name"]: r for r in back.to_pylist()}
    assert len(back) == 5 and back.schema.field("v").type == pa.list_(pa.float32())
    assert by_name["像素风格 😀"]["n"] == -(2**40) and np.isnan(by_name["像素风格 😀"]["x"]) and by_name["像素风格 😀"]["f"] is None
    assert by_name[None]["blob"] is None and by_name[None]["n"] is None and by_name[None]["ok"] is None and by_name[None]["x"] is None
    assert by_name["e'\"\\"]["blob"] == b"y" and by_name["a"]["blob"] == b"\x00\xff" and by_name[""]["blob"] == b"x"
    assert by_name["a"]["x"] == 0.5 and by_name[""]["x"] == -1e300 and by_name["a"]["small"] == 1 and by_name["a"]["ok"] is True
    got = np.array([r["v"] for r in back.to_pylist()], dtype=np.float32)
    assert {tuple(r) for r in got} == {tuple(r) for r in vectors}
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert ragged == [{"v": [1.0, 2.0], "tags": ["a"]}, {"v": [3.0], "tags": ["b", "c"]}]
