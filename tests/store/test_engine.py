"""The kept DuckDB instance that store sessions attach the file to (carlos.store.engine)."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

from carlos.store import engine
from carlos.store.store import Store

READ_IN_ANOTHER_PROCESS = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])  # fails while any process still has the file attached
print(con.execute("SELECT count(*) FROM loras").fetchone()[0])
"""


def _count_elsewhere(path: Path) -> int:
    out = subprocess.run([sys.executable, "-c", READ_IN_ANOTHER_PROCESS, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_a_finished_session_leaves_the_file_to_other_processes_with_its_writes(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    store.loras.upsert([{"lora_id": "a", "source": "t"}, {"lora_id": "b", "source": "t"}])
    assert _count_elsewhere(store.path) == 2
    assert not (tmp_path / "s.duckdb.wal").exists()  # DETACH checkpointed
    with store.session() as con:  # while a session is open, the file is this process's
        con.execute("SELECT 1")
        out = subprocess.run([sys.executable, "-c", READ_IN_ANOTHER_PROCESS, str(store.path)], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "lock" in out.stderr.lower()
    assert _count_elsewhere(store.path) == 2


def test_a_session_ended_mid_transaction_is_rolled_back_and_releases_the_file(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    with store.session() as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO loras (lora_id, source) VALUES ('half', 't')")
        # ends without COMMIT or ROLLBACK (a caller that failed between statements)
    assert _count_elsewhere(store.path) == 0
    assert store.table_counts()["loras"] == 0


def test_a_broken_instance_is_replaced(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    store.loras.upsert([{"lora_id": "a", "source": "t"}])
    key = str(store.path.resolve())
    engine._INSTANCES[key].con.close()  # what an internal DuckDB error leaves behind: an unusable instance
    assert store.table_counts()["loras"] == 1
    assert not engine._INSTANCES[key].closed


def test_instances_are_bounded_and_never_taken_from_a_session_in_use(tmp_path: Path) -> None:
    first = Store.open(tmp_path / "first.duckdb")
    with first.session() as con:
        con.execute("SELECT 1")
        stores = [Store.open(tmp_path / f"s{i}.duckdb") for i in range(engine.MAX_INSTANCES + 2)]
        assert str(first.path.resolve()) in engine._INSTANCES  # its session holds it
        assert con.execute("SELECT count(*) FROM loras").fetchone()[0] == 0
    for s in stores:
        s.table_counts()
    assert len(engine._INSTANCES) <= engine.MAX_INSTANCES
    assert first.table_counts()["loras"] == 0  # evicted or not, it opens again


def _child(path: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = Store(path)
    store.loras.upsert([{"lora_id": "from the child", "source": "t"}])
    out.put(store.table_counts()["loras"])


def test_a_forked_child_uses_its_own_instance(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    store.loras.upsert([{"lora_id": "a", "source": "t"}])  # the parent has an instance for the file
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child, args=(str(store.path), out))
    child.start()
    assert out.get(timeout=60) == 2
    child.join(60)
    assert child.exitcode == 0
    assert store.table_counts()["loras"] == 2
