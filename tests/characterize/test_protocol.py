"""Prompts as the authors send them (trigger words), the protocol spec as data, and the job's prompt set."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from carlos.characterize import jobs
from carlos.characterize.engine import PROTOCOLS, Protocol, get_protocol, lora_prompt, protocol_pairs, trigger_words
from carlos.core.access import CurrentUser
from carlos.data.prompts import get_prompt_set, prompts_for_profile
from carlos.errors import InvalidInputError
from carlos.files.testing import make_test_lora
from carlos.store.store import Store

USER = CurrentUser.local("test")  # local mode: anyone identified may write


def test_every_trigger_word_is_appended_in_order() -> None:
    p = "A hyper-realistic portrait of a smiling elderly woman"
    assert lora_prompt(p, ["pcut style", "paper art", "1girl"]) == p + ", pcut style, paper art, 1girl"
    assert lora_prompt(p, ("b", "a")) == p + ", b, a"  # order kept, not sorted
    assert lora_prompt(p, ["  two   spaces ", ""]) == p + ", two spaces"  # blanks dropped, whitespace collapsed
    assert lora_prompt(p, "old single string") == p + ", old single string"  # one word
    for none in (None, [], (), "", "   ", [""]):
        assert lora_prompt(p, none) == p  # no trigger words: the prompt unchanged
    with pytest.raises(InvalidInputError, match="trigger words must be text"):
        trigger_words(["ok", 3])  # type: ignore[list-item]


def test_the_protocols_are_data_with_the_released_settings() -> None:
    paper = get_protocol("paper")
    assert (paper.steps, paper.guidance, paper.size, paper.negative_prompt, paper.dtype) == (25, None, None, None, "fp16")
    assert {p.noise for p in PROTOCOLS.values()} == {"authors"}
    assert get_protocol("quick").steps == 25 and get_protocol("smoke").steps is None
    assert paper.spec() == dataclasses.asdict(paper) and paper.spec()["noise"] == "authors"
    with pytest.raises(InvalidInputError, match="dtype must be one of"):
        Protocol("x", "smoke", 1, "bad", dtype="fp8")
    # None means the pipeline's default: SDXL base 1.0 at 1024², guidance 5.0, 25 steps, fp16 on a GPU.
    settings, dtype = jobs.backend_settings("sdxl", "paper", gpu=True)
    assert (settings.steps, settings.guidance_scale, settings.height, settings.width, settings.lora_scale) == (25, 5.0, 1024, 1024, 1.0)
    assert dtype == "float16" and jobs.backend_settings("sdxl", "paper", gpu=False)[1] is None
    tiny, tiny_dtype = jobs.backend_settings("tiny", "paper", gpu=True)
    assert tiny.height == 64 and tiny_dtype is None  # the demo pipeline keeps its toy settings


def test_pairs_come_from_the_named_prompt_set() -> None:
    pairs, subset = protocol_pairs(get_protocol("smoke"))
    assert subset == prompts_for_profile("smoke", "carlos-authors") and subset.parent_id == "carlos-authors"
    assert [p.prompt for p in pairs[::2]] == list(subset.texts)
    team_pairs, team = protocol_pairs(get_protocol("smoke"), "carlos-prompts-v1")
    assert team.parent_id == "carlos-prompts-v1" and {p.prompt for p in team_pairs} <= {
        p.text for p in get_prompt_set("carlos-prompts-v1").index_prompts
    }


class _Recording:
    """The tiny backend, recording every generate call's prompts and whether they were base images."""

    def __init__(self, inner: Any, calls: list[tuple[bool, list[str]]]) -> None:
        self._inner, self._calls = inner, calls

    def generate(self, prompts: list[str], seeds: list[int], *, base: bool = False, **kw: Any) -> Any:
        self._calls.append((base, list(prompts)))
        return self._inner.generate(prompts, seeds, base=base, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("protocol")
    store = Store.open(root / "c.duckdb")
    calls: list[tuple[bool, list[str]]] = []
    worker = jobs.Worker(
        store,
        worker_id="protocol-test",
        chunk_pairs=4,
        backend_factory=lambda name, protocol: _Recording(jobs.default_backend_factory(name, protocol), calls),
    )
    return root, store, worker, calls


def _run(env, name: str, seed: int, **submit_kw: Any) -> tuple[Any, Any]:
    root, store, worker, _ = env
    path = make_test_lora(root / f"{name}.safetensors", seed=seed)
    sub = jobs.submit(store, path, backend="tiny", protocol="smoke", **submit_kw, user=USER)
    worker.run_one(job_id=sub.job_id)
    job = store.jobs.get(sub.job_id)
    assert job["status"] == "finished", job["error"]
    return sub, next(r for r in store.reps.of(sub.lora_id) if r.provenance["job_id"] == sub.job_id)


def test_a_characterization_records_the_spec_and_sends_the_triggers(env) -> None:
    _, store, _, calls = env
    sub, rep = _run(env, "triggers", 41, trigger=["pcut style", "paper art"])
    prov = rep.provenance
    assert prov["protocol_spec"] == dataclasses.asdict(PROTOCOLS["smoke"]) and prov["protocol_spec"]["noise"] == "authors"
    assert prov["trigger_words"] == ["pcut style", "paper art"] and prov["trigger"] == "pcut style, paper art"
    subset = prompts_for_profile("smoke")
    assert (prov["prompt_set"], prov["prompt_hash"]) == (subset.id, subset.content_hash)
    assert store.jobs.get(sub.job_id)["options"]["trigger"] == ["pcut style", "paper art"]
    base = [p for is_base, ps in calls if is_base for p in ps]
    lora = [p for is_base, ps in calls if not is_base for p in ps]
    assert set(base) == set(subset.texts)  # base images: the prompts alone, no LoRA loaded
    assert lora and all(p.endswith(", pcut style, paper art") and p[: -len(", pcut style, paper art")] in subset.texts for p in lora)


def test_no_triggers_and_the_team_set_by_name(env) -> None:
    _, store, _, calls = env
    calls.clear()
    _, rep = _run(env, "plain", 42, prompt_set="carlos-prompts-v1")
    team = prompts_for_profile("smoke", "carlos-prompts-v1")
    assert rep.provenance["prompt_set"] == team.id and rep.provenance["prompt_hash"] == team.content_hash
    assert rep.provenance["trigger_words"] == [] and rep.provenance["trigger"] is None
    lora = [p for is_base, ps in calls if not is_base for p in ps]
    assert sorted(set(lora)) == sorted(team.texts)  # prompt unchanged


def test_an_old_single_string_job_option_is_still_read(env) -> None:
    root, store, worker, calls = env
    calls.clear()
    path = make_test_lora(root / "old.safetensors", seed=43)
    sub = jobs.submit(store, path, backend="tiny", protocol="smoke", user=USER)  # registers the LoRA ...
    assert jobs.cancel(store, sub.job_id, USER)  # ... and its new-style job is not the one run here
    # a job queued by an earlier version: trigger a plain string, no prompt set (the team's set was the default then)
    options = {"trigger": "old style", "sha256": sub.report.sha256}
    job_id = store.jobs.enqueue(sub.lora_id, store.jobs.get(sub.job_id)["file_path"], "tiny", "smoke", 4, options, "test")
    worker.run_one(job_id=job_id)
    rep = next(r for r in store.reps.of(sub.lora_id) if r.provenance["job_id"] == job_id)
    assert rep.provenance["trigger_words"] == ["old style"]
    assert rep.provenance["prompt_set"] == prompts_for_profile("smoke", "carlos-prompts-v1").id
    assert all(p.endswith(", old style") for is_base, ps in calls if not is_base for p in ps)


def test_submit_keeps_one_job_per_triggers_and_prompt_set(env, tmp_path: Path) -> None:
    _, store, _, _ = env
    path = make_test_lora(tmp_path / "dedup.safetensors", seed=44)
    a = jobs.submit(store, path, backend="tiny", protocol="smoke", trigger=["x", "y"], user=USER)
    assert jobs.submit(store, path, backend="tiny", protocol="smoke", trigger=[" x", "y "], user=USER).job_id == a.job_id
    assert jobs.submit(store, path, backend="tiny", protocol="smoke", trigger=["y", "x"], user=USER).job_id != a.job_id
    assert (
        jobs.submit(store, path, backend="tiny", protocol="smoke", trigger=["x", "y"], prompt_set="carlos-prompts-v1", user=USER).job_id
        != a.job_id
    )
    with pytest.raises(InvalidInputError, match="unknown prompt set 'nope'"):
        jobs.submit(store, path, backend="tiny", protocol="smoke", prompt_set="nope", user=USER)
