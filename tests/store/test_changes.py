"""Change tokens per area: which writes change which token, across processes, and sessions that
open no connection when nothing needs reading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carlos.config import REPO_ROOT
from carlos.store.changes import AREAS, written_areas
from carlos.store.store import Store


@pytest.mark.parametrize(
    ("sql", "areas"),
    [
        ("SELECT * FROM decisions", set()),
        ("  -- a comment\n  INSERT INTO decisions (lora_id) VALUES (?)", {"review"}),
        ("INSERT INTO pair_results VALUES (?, ?)", {"jobs"}),
        ('UPDATE "jobs" SET heartbeat = now()', {"jobs"}),
        ("INSERT INTO jobs (lora_id) VALUES (?) RETURNING job_id", {"jobs", "queue"}),
        ("DELETE FROM claims WHERE lora_id = ?", {"review"}),
        ("INSERT OR REPLACE INTO map_cache VALUES (?)", {"caches"}),
        ("INSERT INTO representations SELECT * FROM t", {"data"}),
        ("insert into loras values (?)", {"data"}),
        ("CREATE TABLE x (a INT)", set(AREAS)),
        ("ALTER TABLE jobs ADD COLUMN y INT", set(AREAS)),
        ("BEGIN TRANSACTION", set()),
        # a read refreshing a cache entry's LRU stamp changes nothing a page shows; other updates do
        ("UPDATE vector_cache SET last_used = ? WHERE kind = ? AND cache_key = ?", set()),
        ("UPDATE map_cache_entries SET last_used = ? WHERE map_key = ?", set()),
        ("UPDATE vector_cache SET last_used = ?, vector = ? WHERE kind = ?", {"caches"}),
        ("UPDATE map_cache_entries SET nbytes = ? WHERE map_key = ?", {"caches"}),
        ("", set()),
    ],
)
def test_each_statement_changes_its_tables_area(sql: str, areas: set[str]) -> None:
    assert written_areas(sql) == areas


def test_a_write_changes_only_its_areas_token(store_copy: Store) -> None:
    before = {a: store_copy.change_token([a]) for a in AREAS}
    assert None not in before.values()  # opening the store set every token
    job = store_copy.jobs.enqueue("civitai:130580", "/tmp/x.safetensors", "tiny", "smoke", 2, {}, "ada")
    queued = {a: store_copy.change_token([a]) for a in AREAS}
    assert [a for a in AREAS if queued[a] != before[a]] == ["jobs", "queue"]
    store_copy.jobs.heartbeat(job, "w1")
    after = {a: store_copy.change_token([a]) for a in AREAS}
    assert [a for a in AREAS if after[a] != queued[a]] == ["jobs"]
    store_copy.review.append_decision("civitai:130580", "bob", "flag", "unreviewed", "flagged", None)
    assert store_copy.change_token(["review"]) != after["review"] and store_copy.change_token(["data"]) == before["data"]


def test_a_cache_read_refreshing_its_lru_stamp_leaves_the_caches_token(store_copy: Store) -> None:
    """Reading a cached vector long after its last use stamps it (eviction order) without making every
    process read its caches again."""
    store_copy.caches.put_vector("query", "k", [1.0, 2.0], {})
    token = store_copy.change_token(["caches"])
    store_copy.caches.clock = lambda: 1e12  # much later: the stamp is stale and gets refreshed
    assert store_copy.caches.get_vector("query", "k") is not None
    with store_copy.session() as con:
        assert con.execute("SELECT last_used FROM vector_cache WHERE cache_key = 'k'").fetchone()[0] == 1e12
    assert store_copy.change_token(["caches"]) == token


def test_another_process_write_changes_the_token_and_reads_do_not(store_copy: Store) -> None:
    token = store_copy.change_token()
    store_copy.review.current_statuses(), store_copy.loras.resolve("civitai:130580")  # reads
    assert store_copy.change_token() == token
    writer = "import sys; from carlos.store.store import Store; Store.open(sys.argv[1]).review.claim('civitai:130580', 'eve')"
    subprocess.run([sys.executable, "-c", writer, str(store_copy.path)], cwd=REPO_ROOT, check=True, timeout=120)
    assert store_copy.change_token(["review"]) != token.split("|")[AREAS.index("review")]
    assert Store(store_copy.path).change_token(["data", "jobs", "queue", "caches"]) == "|".join(
        t for a, t in zip(AREAS, token.split("|")) if a != "review"
    )


def test_a_session_connects_on_first_use_only(store_copy: Store) -> None:
    before = Store.connections_opened
    with store_copy.session():
        assert not store_copy.holds_lock()  # nothing read yet: no connection, no lock
    assert Store.connections_opened == before
    with store_copy.session():
        store_copy.loras.resolve("civitai:130580")
        assert store_copy.holds_lock()
    assert Store.connections_opened == before + 1 and not store_copy.holds_lock()


def test_a_store_from_before_change_tokens_gets_them_when_opened(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    store.changes.path.unlink()
    assert store.change_token() is None  # nothing vouches for a cached read
    assert Store.open(store.path).change_token() is not None
