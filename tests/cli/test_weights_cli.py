"""``python -m carlos fingerprint`` and ``similar-weights``: a re-saved copy is found by its weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from carlos.cli.main import main
from carlos.store.store import Store


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _resaved_copy(src: Path, dst: Path) -> Path:
    """fp16, metadata stripped, up-weights halved and down-weights doubled: the same ΔW, other bytes."""
    out = {}
    for key, value in load_file(str(src)).items():
        v = value.astype(np.float32)
        v = v * 0.5 if key.endswith("lora_up.weight") else v * 2.0 if key.endswith("lora_down.weight") else v
        out[key] = v.astype(np.float16)
    save_file(out, str(dst))
    return dst


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from carlos.files.testing import make_test_lora

    d = tmp_path_factory.mktemp("loras")
    orig, other = make_test_lora(d / "orig.safetensors", seed=3), make_test_lora(d / "other.safetensors", seed=4)
    return {"orig": orig, "other": other, "copy": _resaved_copy(orig, d / "copy.safetensors")}


@pytest.fixture
def stored(loras: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.delenv("CARLOS_REVIEWERS", raising=False)
    db = str(tmp_path / "s.duckdb")
    added = _json(capsys, "--db", db, "fingerprint", str(loras["orig"]), str(loras["other"]), "--add", "--json", "--quiet")
    return {"db": db, **loras, "ids": [a["lora_id"] for a in added], "added": added}


def test_a_resaved_copy_is_matched_to_its_original(stored: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's check: fp16, no metadata, up halved and down doubled -> cosine >= 0.99 to the original."""
    orig_id, other_id = stored["ids"]
    assert all(a["stored"] and a["n_modules"] == 168 for a in stored["added"]) and stored["added"][1]["matches"] == []
    copy = stored["copy"]
    assert copy.read_bytes() != stored["orig"].read_bytes()
    out = _json(capsys, "--db", stored["db"], "similar-weights", str(copy), "--top-k", "5", "--json")
    assert out["stored"] is False and [m["lora_id"] for m in out["matches"]] == [orig_id, other_id]
    best, unrelated = out["matches"]
    assert best["cosine"] >= 0.99 and best["label"] == "identical" and best["exact"] is True
    assert best["scale"] == pytest.approx(1.0, abs=0.01) and best["name"] == "orig.safetensors" and best["review_status"] is None
    assert best["summary"] == "same weights as orig.safetensors"
    assert best["relation"]["n_shared_modules"] == 168 and len(best["relation"]["modules"]) == 20
    assert abs(unrelated["cosine"]) < 0.3 and unrelated["label"] == "unrelated"
    by_id = _json(capsys, "--db", stored["db"], "similar-weights", orig_id.removeprefix("sha256:"), "--top-k", "3", "--json")
    assert by_id["lora_id"] == orig_id and [m["lora_id"] for m in by_id["matches"]] == [other_id]


def test_adding_the_copy_stores_the_match_from_both_sides(stored: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = stored["copy"]
    added = _json(capsys, "--db", stored["db"], "fingerprint", str(copy), "--add", "--json")
    assert [(m["lora_id"], m["label"]) for m in added[0]["matches"]] == [(stored["ids"][0], "identical")]
    store = Store.open(stored["db"])
    assert [r["other_id"] for r in store.fingerprints.matches(stored["ids"][0])] == [added[0]["lora_id"]]
    capsys.readouterr()
    assert main(["--db", stored["db"], "similar-weights", stored["ids"][0], "--top-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "same weights as copy.safetensors" in text and "identical" in text


def test_fingerprint_without_add_stores_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lora = tmp_path / "a.safetensors"
    assert main(["make-test-lora", str(lora), "--seed", "1", "--layout", "diffusers", "--json"]) == 0
    db = tmp_path / "never.duckdb"
    out = _json(capsys, "--db", str(db), "fingerprint", str(lora), "--json")
    assert not db.exists() and out[0]["stored"] is False and out[0]["format"] == "diffusers"
    assert len(out[0]["vector"]) == 256 and "not a prediction" in out[0]["stats"]["about"]


def test_refusals_are_clear_and_write_nothing(
    stored: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARLOS_REVIEWERS", "alice@example.org")
    copy = stored["copy"]
    capsys.readouterr()
    assert main(["--db", stored["db"], "fingerprint", str(copy), "--add", "--reviewer", "mallory@example.org"]) == 3
    assert "mallory@example.org may not store a weight fingerprint" in capsys.readouterr().err
    assert Store.open(stored["db"]).fingerprints.count() == 2
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    assert main(["--db", stored["db"], "fingerprint", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["--db", stored["db"], "similar-weights", "nothing-like-this"]) == 2
    assert "fingerprint FILE --add" in capsys.readouterr().err
