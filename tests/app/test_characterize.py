"""AppTest of the characterize page: the demo label, the sdxl explanation, and a finished job
(enqueued through the library, as the upload button does) shown with its result."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from carlos.characterize import jobs
from carlos.config import REPO_ROOT
from carlos.core.access import CurrentUser
from carlos.files.testing import make_test_lora
from carlos.store.store import Store

USER = CurrentUser.local("test")  # local mode: anyone identified may write

APP = str(REPO_ROOT / "streamlit_app.py")


def test_page_labels_the_tiny_backend_as_a_demo(store_copy: Store, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/characterize.py").run()
    assert not at.exception
    assert any("random weights" in w.value for w in at.warning)
    at.radio[0].set_value("sdxl").run()
    assert any("needs SDXL base 1.0" in e.value for e in at.error)


def test_finished_job_is_shown_with_its_result(store_copy: Store, monkeypatch, tmp_path) -> None:
    lora = tmp_path / "demo.safetensors"
    make_test_lora(lora, seed=4)
    sub = jobs.submit(store_copy, lora, backend="tiny", protocol="smoke", user=USER)
    jobs.Worker(store_copy, worker_id="test").run_one(job_id=sub.job_id)
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/characterize.py")
    at.session_state["char_job"] = sub.job_id
    at.run()
    assert not at.exception
    assert any(s.value.startswith(f"Job #{sub.job_id}: finished") for s in at.subheader)
    labels = {m.label for m in at.metric}
    assert {"Strength", "Consistency", "Pairs"} <= labels
    assert any("Demo space" in c.value for c in at.caption)


#: Rounds of 6 pairs, no filters, loose targets: a tiny LoRA stops after a few rounds (seconds).
ADAPTIVE = {
    "pairs_per_round": 6,
    "growth": 0.0,
    "min_pairs": 12,
    "target_cosine": 0.9,
    "strength_half_width": 0.04,
    "consistency_half_width": 0.1,
    "thresholds": {"strength_max": None, "consistency_min": None},
}


def _rounds_drawn(at: AppTest) -> list[list[int]]:
    """The pairs (x) of every trace of the adaptive chart."""
    import json

    (chart,) = [c for c in at.get("plotly_chart") if "pairs" in c.proto.spec]
    return [trace["x"] for trace in json.loads(chart.proto.spec)["data"]]


def test_adaptive_jobs_show_the_rule_round_by_round(store_copy: Store, monkeypatch, tmp_path) -> None:
    worker = jobs.Worker(store_copy, worker_id="test", chunk_pairs=6)
    done = jobs.submit(
        store_copy, make_test_lora(tmp_path / "a.safetensors", seed=50), backend="tiny", protocol="adaptive", user=USER, adaptive=ADAPTIVE
    )
    worker.run_one(job_id=done.job_id)
    (rep,) = store_copy.reps.of(done.lora_id)
    stopped = rep.provenance["adaptive"]["message"]
    assert stopped == f"stopped after {rep.n_samples} of 4,480 pairs: direction and intervals settled" and rep.n_samples > 12
    # a second job stopped by its worker before its third round: running, two rounds decided
    running = jobs.submit(
        store_copy, make_test_lora(tmp_path / "b.safetensors", seed=51), backend="tiny", protocol="adaptive", user=USER, adaptive=ADAPTIVE
    )
    job = store_copy.jobs.claim_next("another-worker", 120.0, running.job_id)
    answers = iter([True, True, False])  # asked before each chunk, one per round here
    assert worker.characterizer("tiny", "adaptive").run_job(job, should_continue=lambda: next(answers)) is None
    started = []
    monkeypatch.setattr("app.worker.ensure_background_worker", lambda: started.append(1))  # no dashboard worker thread here
    monkeypatch.setenv("CARLOS_DB", str(store_copy.path))
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/characterize.py")
    at.session_state["char_job"] = done.job_id
    at.run()
    assert not at.exception
    assert [s.value for s in at.success if s.value.startswith("stopped after")] == [stopped]
    assert _rounds_drawn(at) == [list(range(6, rep.n_samples + 1, 6))] * 6  # band edges and estimate, two panels
    at.session_state["char_job"] = running.job_id
    at.run()
    assert not at.exception and started
    assert any(s.value.startswith(f"Job #{running.job_id}: running") for s in at.subheader)
    (info,) = [i.value for i in at.info if "waiting for" in i.value]
    assert info.startswith("12 of 4,480 pairs; waiting for: ") and not any(s.value.startswith("stopped after") for s in at.success)
    assert _rounds_drawn(at) == [[6, 12]] * 6
