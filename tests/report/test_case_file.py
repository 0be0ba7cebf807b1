"""The case file's data: the numbers ``show`` prints, identification and hashes, thresholds and
who saved them, neighbours, audit entries, blurred images, and the sha256 that catches edits."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carlos.cli.main import main
from carlos.config import Thresholds
from carlos.report.build import ReportConfig, build_case_file
from carlos.report.export import case_file, verify
from carlos.report.integrity import canonical_json, digest
from carlos.store.store import Store

from .conftest import HOSTILE, PIXEL, Upload

SHOWN = ("strength", "consistency", "strength_pct", "consistency_pct", "strength_text", "consistency_text", "risk_confidence")


def show_json(db: Path, key: str, capsys: pytest.CaptureFixture[str], thresholds: Thresholds) -> dict:
    capsys.readouterr()
    opts = ["--strength-max", str(thresholds.strength_max), "--consistency-min", str(thresholds.consistency_min)]
    assert main(["--db", str(db), "show", key, "--json", *opts]) == 0
    return json.loads(capsys.readouterr().out)


def json_case(store: Store, key: str) -> dict:
    """The case file as its JSON rendering, read back (so the JSON renderer is what is compared)."""
    doc = json.loads(case_file(store, [key], "json").content)
    return doc["data"]["loras"][0]


@pytest.mark.parametrize("which", ["corpus", "upload"])
def test_the_numbers_are_the_ones_show_prints(which: str, upload: Upload, real_store_path: Path, capsys) -> None:
    db, key = (real_store_path, "130580") if which == "corpus" else (upload.store.path, upload.lora_id)
    case = json_case(Store.open(db), key)
    in_force = build_case_file(Store.open(db), [key]).thresholds  # the saved ones in the upload's store
    shown = show_json(db, key, capsys, Thresholds(in_force.strength_max, in_force.consistency_min))
    ident = case["identification"]
    assert (ident["lora_id"], ident["name"], ident["version_id"]) == (shown["lora_id"], shown["name"], shown["version_id"])
    by_rep = {m["rep_id"]: m for m in case["measurements"]}
    assert set(by_rep) == {r["rep_id"] for r in shown["representations"]}
    for r in shown["representations"]:
        m = by_rep[r["rep_id"]]
        assert {k: m[k] for k in SHOWN} == {k: r[k] for k in SHOWN}
        assert (m["excluded_because"], m["flags"], m["embedder"], m["n_samples"]) == (
            r["excluded_because"],
            r["flags"],
            r["embedder"],
            r["n_samples"],
        )
        u = r["uncertainty"] or {}
        assert m["strength_interval"] == u.get("strength_interval") and m["consistency_interval"] == u.get("consistency_interval")
        assert m["risk_probabilities"] == r["risk_probabilities"]
    if which == "corpus":
        assert ident["name"] == "Pixel Art XL" and case["measurements"][0]["strength"] == pytest.approx(4.7416, abs=1e-4)
        assert case["measurements"][0]["strength_interval"] is None and "no interval" in case["measurements"][0]["risk_confidence"]
    else:  # a local characterization has intervals and a confident risk class
        m = case["measurements"][0]
        lo, hi = m["strength_interval"]
        assert lo < m["strength"] < hi and m["consistency_interval"] is not None and m["expected_cosine"] > 0.9


def test_identification_hashes_and_file_check(upload: Upload) -> None:
    case = build_case_file(upload.store, [upload.sha256]).loras[0]  # a sha256 names the LoRA too
    ident = case.identification
    assert ident.lora_id == upload.lora_id and ident.sha256 == upload.sha256
    assert ident.autov2 == upload.sha256[:10].upper() and len(ident.autov2) == 10
    assert ident.file_check.endswith("matches") and ident.file_size_bytes == upload.path.stat().st_size
    assert ident.name == HOSTILE[0] and ident.trigger_words == [HOSTILE[1]]
    assert ident.declared["metadata"]["ss_output_name"] == HOSTILE[0] and ident.declared["contradictions"] == [HOSTILE[0]]
    assert "<p>" not in ident.description and HOSTILE[1] in ident.description  # cleaned to plain text, kept as text
    corpus = build_case_file(upload.store, ["130580"]).loras[0].identification
    assert corpus.sha256 is None and corpus.autov2 is None and corpus.file_check.startswith("no file")
    assert corpus.civitai_url == "https://civitai.com/models/120096?modelVersionId=130580"


def test_a_changed_stored_file_is_reported(upload: Upload, tmp_path: Path) -> None:
    original = upload.path.read_bytes()
    try:
        upload.path.write_bytes(original + b"!")
        check = build_case_file(upload.store, [upload.lora_id]).loras[0].identification.file_check
        assert "DIFFERS" in check
    finally:
        upload.path.write_bytes(original)


def test_thresholds_in_force_say_who_saved_them(upload: Upload) -> None:
    case = build_case_file(upload.store, [upload.lora_id])
    t = case.thresholds
    assert (t.strength_max, t.consistency_min) == (9.5, 0.05)
    assert t.origin.startswith("saved by bob@example.org at ") and HOSTILE[1] in t.origin
    assert [(h.reviewer, h.strength_max) for h in t.history] == [("bob@example.org", 9.5)]
    other = build_case_file(upload.store, [upload.lora_id], ReportConfig(thresholds=Thresholds(5.0, 0.041)))
    assert other.thresholds.origin.startswith("chosen for this report")
    assert other.loras[0].neighbours[0].hits and all(h.strength <= 5.0 for h in other.loras[0].neighbours[0].hits)


def test_neighbours_audit_categories_and_provenance(upload: Upload) -> None:
    case = build_case_file(upload.store, [upload.lora_id, "130580", upload.lora_id])  # duplicates kept once
    assert [c.identification.lora_id for c in case.loras] == [upload.lora_id, PIXEL]
    mine = case.loras[0]
    behaviour, weights = mine.neighbours
    assert behaviour.kind == "behaviour" and behaviour.hits[0].lora_id == PIXEL  # its direction is Pixel Art XL's plus noise
    assert [h.rank for h in behaviour.hits] == list(range(1, 11)) and behaviour.n_excluded > 0
    assert weights.kind == "weights" and weights.available and weights.space == "weights-test/d4"
    assert [(h.lora_id, h.flags) for h in weights.hits] == [  # a named relation first, then by |cosine|
        (PIXEL, ["same weights as Pixel Art XL, scaled ×2 (exact)"]),
        ("civitai:160844", [f"unrelated to {weights.hits[1].name} (cosine 0.310) (from the fingerprints)"]),
    ]
    corpus_weights = case.loras[1].neighbours[1]
    assert not corpus_weights.available and corpus_weights.message.startswith("weight fingerprint not available")
    assert [(a.event, a.action, a.reviewer) for a in mine.audit] == [("decision", "flag", "ada"), ("claim", "claim", "ada")]
    assert mine.audit[0].note == HOSTILE[2] and mine.review_status == "flagged"
    assert {c.category: c.pairs for c in mine.category_strength} == {"Food": 4, "Logos": 4, "Animals": 4}
    assert mine.category_overall == pytest.approx(mine.measurements[0].strength, rel=1e-5)
    prov = mine.measurements[0].provenance
    assert prov["prompt_hash"] == "ab" * 32 and prov["noise_scheme"] == "as released" and prov["clip_weights"] == "random(seed=0)"
    corpus_prov = case.loras[1].measurements[0].provenance
    assert corpus_prov["protocol"] == "paper" and "authors' release" in corpus_prov["noise"]
    p = case.provenance
    assert p.data_version >= 1 and p.code_version.startswith("carlos-dashboard") and p.corpus_imports[0]["rows"] == 740
    assert "carlos-authors" in p.prompt_sets


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.float64)


def test_image_pairs_are_blurred_in_the_file_unless_revealed(upload: Upload) -> None:
    blurred = build_case_file(upload.store, [upload.lora_id]).loras[0]
    revealed = build_case_file(upload.store, [upload.lora_id], ReportConfig(reveal=True)).loras[0]
    assert [p.pair_index for p in blurred.image_pairs] == [0, 1] and blurred.image_pairs[1].lora_png is None
    assert base64.b64decode(revealed.image_pairs[0].base_png) == upload.base_png
    raw, soft = _pixels(revealed.image_pairs[0].base_png), _pixels(blurred.image_pairs[0].base_png)
    assert raw.shape == soft.shape and np.abs(np.diff(soft, axis=0)).mean() < 0.2 * np.abs(np.diff(raw, axis=0)).mean()
    assert "blurred" in blurred.image_note and "unblurred" in revealed.image_note
    corpus = build_case_file(upload.store, ["130580"]).loras[0]
    assert corpus.image_pairs == [] and corpus.category_strength == [] and "No per-pair data" in corpus.category_note


def test_the_hash_covers_the_data_and_catches_edits(upload: Upload) -> None:
    when = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    case = build_case_file(upload.store, ["130580"], ReportConfig(now=when, generated_by="ada"))
    again = build_case_file(upload.store, ["130580"], ReportConfig(now=when, generated_by="ada"))
    assert case.sha256 == again.sha256 == digest(json.loads(canonical_json(case.to_dict())))
    assert case.to_dict()["generated_at"] == "2026-12-01T12:00:00+00:00"
    doc = json.loads(case_file(upload.store, ["130580"], "json", ReportConfig(now=when)).content)
    assert verify(json.dumps(doc).encode()).ok
    doc["data"]["loras"][0]["measurements"][0]["strength"] += 0.001
    tampered = verify(json.dumps(doc).encode())
    assert not tampered.ok and tampered.message.startswith("TAMPERED") and tampered.computed_sha256 != tampered.stated_sha256


def test_cli_writes_the_issue_s_html_and_verifies_it(real_store_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "X.html"
    assert main(["--db", str(real_store_path), "report", "130580", "--format", "html", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    page = out.read_text(encoding="utf-8")
    assert info["path"] == str(out) and info["lora_ids"] == [PIXEL] and info["format"] == "html"
    assert "Pixel Art XL" in page and PIXEL in page and "4.742" in page and info["sha256"] in page
    assert main(["--db", str(real_store_path), "report", "--verify", str(out)]) == 0
    assert "verified" in capsys.readouterr().out
    out.write_text(page.replace("<b>4.742</b>", "<b>1.000</b>", 1), encoding="utf-8")  # the visible number only
    assert main(["--db", str(real_store_path), "report", "--verify", str(out), "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["data_ok"] and res["rendering_ok"] is False and not res["ok"]


def test_cli_explains_bad_requests(real_store_path: Path, tmp_path: Path, capsys) -> None:
    db = ["--db", str(real_store_path)]
    assert main([*db, "report", "424242424", "-o", str(tmp_path / "x.html")]) == 2
    assert "no LoRA with id" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
    assert main([*db, "report"]) == 2 and "name at least one LoRA" in capsys.readouterr().err
    assert main([*db, "report", "130580", "--verify", "x.html"]) == 2 and "not both" in capsys.readouterr().err
    assert main([*db, "report", "--verify", str(tmp_path / "missing.html")]) == 2
    (tmp_path / "junk.html").write_text("<html>not a case file</html>")
    assert main([*db, "report", "--verify", str(tmp_path / "junk.html")]) == 2
    assert "not a CARLoS HTML case file" in capsys.readouterr().err
    assert main([*db, "report", "130580", "-o", str(tmp_path / "c.json")]) == 0  # the format follows the suffix
    assert json.loads((tmp_path / "c.json").read_text())["data"]["loras"][0]["identification"]["lora_id"] == PIXEL
