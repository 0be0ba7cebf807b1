"""Diversity metrics against hand-computed values, the query set, the harness on the real corpus,
the top-3 relevance protocol and the tiny-model judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from carlos.cli.main import main
from carlos.errors import InvalidInputError
from carlos.evaluate.diversity import diversity, effective_lora_count, normalized_entropy, span_counts
from carlos.evaluate.harness import (
    RetrieverRun,
    diversity_figure,
    evaluation_frame,
    load_queries,
    relevance_frame,
)
from carlos.evaluate.relevance import ClipImageJudge, default_judge_status, relevance_top_k


# -- metrics ------------------------------------------------------------------------------------
def test_metrics_match_hand_computed_values() -> None:
    lists = [["a", "b"], ["a", "c"]]
    # k=1: 'a' twice -> p = [1], H = 0
    assert normalized_entropy(lists, 1, pool_size=10) == 0.0
    assert effective_lora_count(lists, 1) == 1.0
    # k=2: a:2, b:1, c:1 of N=4 -> H = 1.5 ln 2; NE = 1.5 ln2 / ln 4 = 0.75; ELC = 2 sqrt(2)
    d = diversity(lists, 2, pool_size=10)
    assert d.normalized_entropy == pytest.approx(0.75, abs=1e-12)
    assert d.effective_lora_count == pytest.approx(2 * math.sqrt(2), abs=1e-12)
    assert (d.distinct_loras, d.filled_slots, d.slots, d.n_lists) == (3, 4, 4, 2)
    # a pool smaller than the slots caps the maximum entropy: ln 3
    assert normalized_entropy(lists, 2, pool_size=3) == pytest.approx(1.5 * math.log(2) / math.log(3))
    # every slot a different LoRA: maximal
    assert normalized_entropy([["a"], ["b"], ["c"]], 1, pool_size=100) == pytest.approx(1.0)
    assert effective_lora_count([["a"], ["b"], ["c"]], 1) == pytest.approx(3.0)


def test_short_and_empty_lists_and_degenerate_cases() -> None:
    d = diversity([["a", "b"], []], 2, pool_size=50)  # N = 2 filled slots of 4
    assert (d.filled_slots, d.slots) == (2, 4)
    assert d.normalized_entropy == pytest.approx(1.0) and d.effective_lora_count == pytest.approx(2.0)
    assert math.isnan(normalized_entropy([["a"]], 1, pool_size=5))  # one slot: no spread possible
    empty = diversity([[], []], 3, pool_size=5)
    assert empty.effective_lora_count == 0.0 and math.isnan(empty.normalized_entropy)
    assert span_counts([["a", "b", "c"]], 2) == {"a": 1, "b": 1}
    with pytest.raises(InvalidInputError):
        span_counts([["a", "a"]], 2)
    with pytest.raises(InvalidInputError):
        diversity([["a"]], 0, pool_size=3)


# -- queries ------------------------------------------------------------------------------------
def test_query_set_has_enough_balanced_unique_queries() -> None:
    qs = load_queries()
    cats = qs.categories()
    assert len(qs.queries) >= 100
    assert set(cats) == {"style", "atmosphere", "subject", "technique", "artist-style"}
    assert min(cats.values()) >= 20
    assert len({q.text.lower() for q in qs.queries}) == len(qs.queries)
    sub = load_queries(limit=2, categories=["style", "technique"])
    assert [q.category for q in sub.queries] == ["style", "style", "technique", "technique"]
    assert sub.content_hash != qs.content_hash
    with pytest.raises(InvalidInputError, match="unknown query categories"):
        load_queries(categories=["nope"])


def test_query_file_errors_say_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps({"id": "x", "categories": {"a": ["pixel art", "Pixel art"]}}))
    with pytest.raises(InvalidInputError, match="duplicate query"):
        load_queries(bad)
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_queries(bad)


# -- the harness on the real corpus ------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_report(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("eval") / "report.json"
    rc = main(
        [
            "--db",
            str(real_store_path),
            "evaluate",
            "--retrievers",
            "bm25,behaviour",
            "--limit",
            "3",
            "--no-text-model",
            "--rankings",
            "--quiet",
            "--save",
            str(out),
        ]
    )
    assert rc == 0
    return json.loads(out.read_text())


def test_evaluate_command_reports_every_span_per_retriever(cli_report: dict) -> None:
    r = cli_report
    assert r["query_set"]["n"] == 15 and r["spans"] == [1, 3, 5, 10, 20]
    assert set(r["retrievers"]) == {"bm25", "behaviour", "carlos"}
    for name in ("bm25", "behaviour"):
        run = r["retrievers"][name]
        assert run["available"] and run["pool_size"] == 515  # the paper's thresholds leave 515
        assert list(run["metrics"]) == ["1", "3", "5", "10", "20"]
        for m in run["metrics"].values():
            assert 0.0 <= m["normalized_entropy"] <= 1.0 + 1e-12
            assert 1.0 <= m["effective_lora_count"] <= m["distinct_loras"] + 1e-9
        # the reported numbers are the pure metric over the reported rankings
        lists = list(run["rankings"].values())
        d = diversity(lists, 10, run["pool_size"])
        assert run["metrics"]["10"]["normalized_entropy"] == pytest.approx(d.normalized_entropy)
        assert set(run["by_category"]) == {"style", "atmosphere", "subject", "technique", "artist-style"}
    assert any("BM25 only" in n for n in r["retrievers"]["behaviour"]["notes"])


def test_unavailable_parts_are_reported_not_faked(cli_report: dict) -> None:
    from carlos.search.capabilities import clip_weights

    carlos = cli_report["retrievers"]["carlos"]
    assert carlos["available"] == clip_weights().available
    if not carlos["available"]:
        assert carlos["reason"] and carlos["metrics"] == {}
    rel = cli_report["relevance"]
    assert not rel["available"] and rel["per_retriever"] == {}  # corpus LoRAs have no files to generate with
    assert "judge" in rel["reason"] or ".safetensors" in rel["reason"]
    assert default_judge_status()[0] or "no relevance judge" in rel["reason"]


def test_bm25_rankings_hold_only_matching_loras(cli_report: dict, real_store) -> None:
    from carlos.search.retrievers import SearchConfig
    from carlos.search.service import SearchService

    query, ranked = next(iter(cli_report["retrievers"]["bm25"]["rankings"].items()))
    res = SearchService(real_store).search(query, SearchConfig(retriever="bm25", top_k=20))
    assert ranked == [h.lora_id for h in res.hits if h.score > 0]


def test_frame_and_figures_for_the_dashboard(cli_report: dict) -> None:
    frame = evaluation_frame(cli_report)
    assert list(frame.columns[:6]) == ["retriever", "label", "category", "span", "metric", "value"]
    assert set(frame["retriever"]) == {"bm25", "behaviour"}  # unavailable retrievers have no rows
    assert len(frame) == 2 * 6 * 5 * 3  # retrievers x (all + 5 categories) x spans x metrics
    fig = diversity_figure(frame, "effective_lora_count")
    assert len(fig.data) == 2 and list(fig.data[0].x) == [1, 3, 5, 10, 20]
    assert relevance_frame(cli_report).empty
    with pytest.raises(InvalidInputError):
        diversity_figure(frame, "accuracy")


# -- relevance protocol --------------------------------------------------------------------------
class _Judge:
    name, meaningful = "stub", False

    def __init__(self, scores: dict[str, float | None]) -> None:
        self.scores = scores

    def score(self, query: str, lora: dict) -> float | None:
        return self.scores[lora["lora_id"]]


class _Loras:
    def get(self, lid: str) -> dict:
        return {"lora_id": lid}


class _Store:
    loras = _Loras()


def test_top3_protocol_normalizes_over_all_queries_and_retrievers() -> None:
    runs = [
        RetrieverRun("x", "X", True, "", rankings={"q1": ["a", "b", "c", "d"], "q2": ["b"]}),
        RetrieverRun("y", "Y", True, "", rankings={"q1": ["d"], "q2": ["e", "a"]}),
        RetrieverRun("z", "Z", False, "no weights"),
    ]
    judge = _Judge({"a": 0.2, "b": 0.4, "c": 0.6, "d": 1.0, "e": None})  # d is outside x's top 3
    rel = relevance_top_k(_Store(), runs, judge, top=3)
    # min 0.2, max 1.0: a->0, b->0.25, c->0.5, d->1
    assert rel.available and rel.per_retriever["x"]["score"] == pytest.approx(np.mean([0.25, 0.25]))
    assert rel.per_retriever["y"]["score"] == pytest.approx(np.mean([1.0, 0.0]))
    assert rel.per_retriever["y"]["hits_scored"] == 2 and rel.per_retriever["y"]["hits"] == 3
    assert "z" not in rel.per_retriever
    none = relevance_top_k(_Store(), runs, _Judge(dict.fromkeys("abcde")), top=3)
    assert not none.available and "could score none" in none.reason


def test_clip_image_judge_on_tiny_models(tmp_path: Path) -> None:
    from carlos.files.testing import make_test_lora
    from carlos.models.clip import load_clip
    from carlos.models.diffusion import DiffusionBackend

    path = make_test_lora(tmp_path / "j.safetensors", seed=3)
    backend = DiffusionBackend("tiny")
    judge = ClipImageJudge(backend, load_clip("tiny"), ["a photo of a cat"], seeds=[0], meaningful=False)
    lora = {"lora_id": "t", "file_path": str(path), "trigger_words": ["zzz"]}
    s1 = judge.score("pixel art", lora)
    s2 = judge.score("snowy winter scene", lora)
    assert -1.0 <= s1 <= 1.0 and -1.0 <= s2 <= 1.0 and s1 != s2
    assert backend.lora_loads == 1  # images are made once per LoRA, then scored per query
    assert judge.score("pixel art", {"lora_id": "u", "file_path": None}) is None
