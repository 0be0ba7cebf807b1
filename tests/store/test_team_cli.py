"""Issue 21's check, as a moderator would type it: ``corpus import``, ``stats``, a behaviour search and
``review claim/decide/log`` give the same answers on a PostgreSQL store (``CARLOS_STORE``) as on a
DuckDB file."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carlos.cli.main import main
from carlos.config import REPO_ROOT
from carlos.search import service

CACHE = str(REPO_ROOT / "data" / "cache")  # where the corpus_parquet fixture verified the release


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


class WordHashEmbedder:
    """Stands in for the sentence model (~20 s of CPU per store for 740 texts, which is not what this
    compares; tests/search covers the real one): words hashed into 64 dimensions, unit rows."""

    model_id = "word-hash-test"

    def embed(self, texts: list[str], progress: Any = None) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode()) % 64] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def _session(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, target: str) -> dict[str, Any]:
    monkeypatch.setattr(service, "_default_text_embedder", lambda model: WordHashEmbedder())
    monkeypatch.setenv("CARLOS_STORE", target)
    monkeypatch.setenv("CARLOS_REVIEWERS", "alice@example.org,bob@example.org")

    def run(*argv: str) -> Any:
        capsys.readouterr()
        assert main(list(argv)) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    out: dict[str, Any] = {}
    imported = run("corpus", "import", "--no-map", "--cache-dir", CACHE, "--json")
    out["import"] = {k: imported[k] for k in ("rows", "added_loras", "file_sha256", "already_imported", "text_index")}
    out["stats"] = _rounded(run("stats", "--json"))  # (a correlation's last digits follow the row order)
    search = run("search", "pixel art", "--retriever", "behaviour", "--json")
    out["search"] = [(h["lora_id"], round(h["score"], 6)) for h in search["hits"]]
    run("review", "claim", "civitai:130580", "--reviewer", "alice@example.org", "--json")
    capsys.readouterr()
    assert main(["review", "claim", "civitai:130580", "--reviewer", "bob@example.org"]) != 0  # alice holds it
    out["refused"] = capsys.readouterr().err.strip().splitlines()[-1]
    run("review", "decide", "civitai:130580", "--decision", "flag", "--note", "style copy", "--reviewer", "alice@example.org", "--json")
    out["log"] = [(e["lora_id"], e["reviewer"], e["action"], e.get("note")) for e in run("review", "log", "--json")]
    return out


def test_the_cli_answers_the_same_on_both_stores(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_url: str, corpus_parquet: Path
) -> None:
    duck = _session(capsys, monkeypatch, str(tmp_path / "carlos.duckdb"))
    team = _session(capsys, monkeypatch, pg_url)
    assert duck["import"]["rows"] == 740 and duck["import"]["text_index"]["embedded_now"] == 740
    assert duck["stats"]["loras"] == 740 and len(duck["search"]) == 10
    assert [a for _, _, a, _ in duck["log"]].count("flag") == 1 and "alice@example.org" in duck["refused"]
    assert team == duck
