"""The store: schema, migrations, bound parameters, and two writing processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from carlos.errors import InvalidInputError, NotFoundError, StoreBusyError
from carlos.store.schema import SCHEMA_VERSION
from carlos.store.store import Store


def test_open_creates_and_migrates_once(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION  # second run applies nothing
    assert store.table_counts()["schema_migrations"] == SCHEMA_VERSION


def test_representations_roundtrip_and_replace(empty_store: Store) -> None:
    empty_store.loras.upsert([{"lora_id": "x", "source": "test", "name": "X"}])
    prov = {"protocol": "smoke", "backend": "tiny", "seeds": [0, 1]}
    rid = empty_store.reps.put("x", "tiny-clip", np.arange(4.0), 1.5, 0.2, 4, prov)
    reps = empty_store.reps.of("x")
    assert [r.rep_id for r in reps] == [rid]
    np.testing.assert_array_equal(reps[0].direction, np.arange(4.0, dtype=np.float32))
    assert reps[0].provenance["seeds"] == "[0, 1]"
    # same LoRA/space/protocol/backend replaces; another protocol adds
    empty_store.reps.put("x", "tiny-clip", np.ones(4), 2.0, 0.3, 4, prov)
    empty_store.reps.put("x", "tiny-clip", np.ones(4), 2.0, 0.3, 4, {**prov, "protocol": "quick"})
    assert len(empty_store.reps.of("x")) == 2
    ids, m = empty_store.reps.direction_matrix("tiny-clip")
    assert ids == ["x"] and m.shape == (1, 4)
    with pytest.raises(InvalidInputError, match="not finite"):
        empty_store.reps.put("x", "tiny-clip", np.array([np.nan]), 1, 1, 1, prov)


def test_sql_looking_text_is_data(empty_store: Store) -> None:
    evil = "x'; DROP TABLE loras; --"
    empty_store.loras.upsert([{"lora_id": evil, "source": "test", "name": evil}])
    assert empty_store.loras.get(evil)["name"] == evil
    assert empty_store.table_counts()["loras"] == 1
    with pytest.raises(NotFoundError):
        empty_store.loras.get("1 OR 1=1")


def test_unknown_lora_fields_are_rejected(empty_store: Store) -> None:
    with pytest.raises(InvalidInputError, match="unknown LoRA fields"):
        empty_store.loras.upsert([{"lora_id": "a", "source": "t", "colour": "red"}])


def test_transaction_is_all_or_nothing(empty_store: Store) -> None:
    with pytest.raises(RuntimeError):
        with empty_store.transaction():
            empty_store.loras.upsert([{"lora_id": "a", "source": "t"}])
            raise RuntimeError("abort")
    assert empty_store.table_counts()["loras"] == 0


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from carlos.store.store import Store
    path, role, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store.open(path)
    for i in range(n):
        if role == "worker":
            lid = f"w{i}"
            store.loras.upsert([{"lora_id": lid, "source": "upload"}])
            store.reps.put(lid, "tiny-clip", np.full(8, i, dtype=np.float32), 1.0, 0.5, 2,
                           {"protocol": "smoke", "backend": "tiny"})
        else:
            store.caches.put_vector("query-direction", f"q{i}", np.ones(8) * i, {"i": i})
    print("done", role)
    """
)


def test_two_processes_write_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    Store.open(path)
    n = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), role, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for role in ("worker", "dashboard")
    ]
    reader = Store.open(path)
    seen = 0
    while any(p.poll() is None for p in procs):  # a third process reads meanwhile
        seen = max(seen, reader.table_counts()["representations"])
        time.sleep(0.05)
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
    counts = reader.table_counts()
    assert counts["loras"] == n and counts["representations"] == n
    assert counts["vector_cache"] == n  # every cached vector is a query direction here
    assert reader.data_version() == 2 * n  # every LoRA insert and representation write bumped it
    assert seen <= n


def test_lock_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    Store.open(path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import fcntl, os, time
            fd = os.open({str(path) + ".lock"!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError, match="stayed locked"):
            Store(path, lock_timeout=0.3).table_counts()
    finally:
        holder.kill()
        holder.wait()
    assert Store(path).table_counts()["loras"] == 0  # usable again once released


def test_data_version_is_exact_across_stores_and_reads_the_database_only_after_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v.duckdb"
    a, b = Store.open(path), Store.open(path)
    v0 = a.data_version()
    a.loras.upsert([{"lora_id": "x", "source": "t"}])
    assert a.data_version() == v0 + 1  # own write
    b.loras.upsert([{"lora_id": "y", "source": "t"}])
    assert a.data_version() == v0 + 2  # another writer's, seen at once
    opened = []
    real_session = Store.session
    monkeypatch.setattr(Store, "session", lambda self: opened.append(1) or real_session(self))
    assert [a.data_version() for _ in range(5)] == [v0 + 2] * 5
    assert opened == []  # nothing changed: answered from the stamp file, no connection
    b.loras.upsert([{"lora_id": "z", "source": "t"}])
    opened.clear()
    assert a.data_version() == v0 + 3 and len(opened) == 1
    a.stamp_path.unlink()  # a store from before stamps: the next read writes a stamp
    assert a.data_version() == v0 + 3 and len(opened) == 2 and a.stamp_path.is_file()
    assert b.data_version() == v0 + 3 and len(opened) == 3  # b's token is gone: one read
    assert [s.data_version() for s in (a, b, a, b)] == [v0 + 3] * 4 and len(opened) == 3
    b.loras.upsert([{"lora_id": "v", "source": "t"}])
    assert a.data_version() == v0 + 4  # the new stamp vouches for later writes as before
    with pytest.raises(RuntimeError), a.transaction():  # a rolled-back write leaves the version
        a.loras.upsert([{"lora_id": "w", "source": "t"}])
        raise RuntimeError("abort")
    assert a.data_version() == b.data_version() == v0 + 4


def test_locked_reads_see_one_state_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    a, other = Store.open(path), Store(path, lock_timeout=0.2)
    a.loras.upsert([{"lora_id": "x", "source": "t"}])
    before = Store.connections_opened
    with a.locked():
        assert a.table_counts()["loras"] == 1
        with pytest.raises(StoreBusyError):  # a writer waits for the whole block, not one read
            other.loras.upsert([{"lora_id": "y", "source": "t"}])
        assert a.table_counts()["loras"] == 1 and Store.connections_opened - before == 2  # a connection per read
    other.loras.upsert([{"lora_id": "y", "source": "t"}])  # released
    assert a.table_counts()["loras"] == 2
