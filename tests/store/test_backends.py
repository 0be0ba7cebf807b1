"""Every repository gives the same answers on both backends (the ``backend`` fixture: a DuckDB file
and a real PostgreSQL database): jobs and pair results, review, caches, imports."""

from __future__ import annotations

import numpy as np
import pytest

from carlos.store.store import Store


def test_a_job_from_queue_to_pairs_to_finish(empty_store: Store) -> None:
    s = empty_store
    s.loras.upsert([{"lora_id": "sha256:ab", "source": "upload", "trigger_words": ["neon", "glow"]}])
    job = s.jobs.enqueue("sha256:ab", "/uploads/ab.safetensors", "tiny", "quick", 3, {"clip": "tiny"}, "ann")
    assert s.jobs.lora_ids() == frozenset({"sha256:ab"}) and s.jobs.live_of("sha256:ab", "tiny", "quick") == [(job, '{"clip": "tiny"}')]
    taken = s.jobs.claim_next("w1", stale_after_s=60)
    assert taken is not None and taken["job_id"] == job and taken["status"] == "running" and taken["options"] == {"clip": "tiny"}
    assert s.jobs.claim_next("w2", stale_after_s=60) is None  # nothing else queued, and w1 is alive
    assert s.jobs.heartbeat(job, "w1") == "running"
    diffs = np.arange(12, dtype=np.float32).reshape(3, 4)
    rows = [{"pair_index": i, "prompt": f"p{i}", "category": "c", "seed": i, "diff": diffs[i]} for i in range(3)]
    assert s.jobs.add_pair_results(job, rows[:2]) == 2
    assert s.jobs.add_pair_results(job, rows) == 3  # pairs stored: idempotent per (job, pair)
    assert s.jobs.done_pairs(job) == {0, 1, 2}
    frame, matrix = s.jobs.pair_diffs(job)
    assert np.array_equal(matrix, diffs) and list(frame["prompt"]) == ["p0", "p1", "p2"]
    norms = s.jobs.pair_results_of("sha256:ab")["norm"].to_numpy()
    assert np.allclose(norms, np.linalg.norm(diffs, axis=1))
    s.jobs.put_thumbnails(job, [(0, b"\x89PNG-base", b"\x89PNG-lora")])
    thumbs = s.jobs.thumbnails_of("sha256:ab")
    assert bytes(thumbs.iloc[0]["lora_png"]) == b"\x89PNG-lora"
    s.jobs.put_round(job, 0, 3, {"stop": True})
    assert s.jobs.rounds(job)[0]["decision"]["stop"] is True
    s.jobs.set_status(job, "finished")
    done = s.jobs.get(job)
    assert done is not None and done["status"] == "finished" and done["finished_at"] is not None
    assert not s.jobs.cancel(job)  # a finished job cannot be cancelled
    assert s.loras.get("sha256:ab")["trigger_words"] is not None


def test_review_claims_decisions_and_thresholds(empty_store: Store) -> None:
    s = empty_store
    s.loras.upsert([{"lora_id": "civitai:1", "source": "t", "name": "One"}])
    assert s.review.claim("civitai:1", "ann") == "ann"
    assert s.review.claim("civitai:1", "bob") == "ann"  # held: bob is told who holds it
    s.review.append_decision("civitai:1", "ann", "flag", "unreviewed", "flagged", "looks like a style clone")
    assert s.review.status_of("civitai:1") == "flagged" and s.review.claim_holder("civitai:1") == "ann"
    statuses = s.review.current_statuses()
    assert list(statuses["lora_id"]) == ["civitai:1"] and statuses.iloc[0]["claimed_by"] == "ann"
    s.review.release_claim("civitai:1", "ann")
    assert s.review.claim_holder("civitai:1") is None
    log = s.review.decisions("civitai:1")
    assert list(log["name"]) == ["One"] and list(log["note"]) == ["looks like a style clone"]
    first = s.review.record_thresholds(0.5, None, "ann", "tighter")
    assert s.review.record_thresholds(0.4, 0.2, "bob", None) > first
    history = s.review.threshold_history()
    assert list(history["reviewer"]) == ["bob", "ann"] and np.isnan(history.iloc[1]["consistency_min"])


def test_caches_and_imports(empty_store: Store) -> None:
    s = empty_store
    v = np.linspace(-1, 1, 8).astype(np.float32)
    assert s.caches.put_vector("query-direction", "k1", v, {"query": "pixel art"})
    got = s.caches.get_vector("query-direction", "k1")
    assert got is not None and np.array_equal(got[0], v) and got[1] == {"query": "pixel art"}
    s.caches.put_map("m1", ["a", "b"], np.array([[0.0, 1.0], [2.0, 3.0]]))
    assert s.caches.has_map("m1") and list(s.caches.get_map("m1")["x"]) == [0.0, 2.0]
    s.loras.record_import("pypi:carlos==0.0.3", "f" * 64, 740, {"release": "0.0.3"})
    s.loras.record_import("pypi:carlos==0.0.3", "f" * 64, 740, {"release": "again"})  # a second record is ignored
    (record,) = s.loras.imports()
    assert record["rows"] == 740 and s.loras.import_record("pypi:carlos==0.0.3", "f" * 64) is not None


def test_a_write_inside_a_reading_session_is_refused(empty_store: Store) -> None:
    """``Store.reading`` is for reads: a repository writing inside one is a bug, refused before the
    statement runs on both backends; nested reads and a later write session work as usual."""
    s = empty_store
    s.loras.upsert([{"lora_id": "a", "source": "t"}])
    with s.reading():
        assert s.table_counts()["loras"] == 1
        with pytest.raises(RuntimeError, match="reading session"):
            s.loras.upsert([{"lora_id": "b", "source": "t"}])
        with pytest.raises(RuntimeError, match="reading session"), s.transaction():
            s.review.append_decision("a", "ann", "flag", "unreviewed", "flagged", None)
    s.loras.upsert([{"lora_id": "c", "source": "t"}])
    assert s.table_counts()["loras"] == 2 and s.loras.get("c")["lora_id"] == "c" and s.review.decisions().empty
