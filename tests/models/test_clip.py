"""CLIP embedders: registry, tokenization, features, and offline weight resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carlos.errors import InvalidInputError, WeightsUnavailableError
from carlos.models import clip as clip_mod
from carlos.models.clip import load_clip
from carlos.models.clip_registry import (
    CHECKPOINT_ENV,
    get_clip_spec,
    hf_hub_cache_dir,
    list_clip_models,
    resolve_clip_checkpoint,
)

OPENAI = get_clip_spec("ViT-B-32/openai")
TEXTS = ["a photo of a cat", "Ein Hund im Schnee", "东京的夜景 🌃", "a b c " * 40]


@pytest.fixture(scope="module")
def tiny():
    return load_clip("tiny", device="cpu")


@pytest.fixture
def no_weights_env(tmp_path, monkeypatch):
    """An empty Hugging Face cache and no checkpoint variable: nothing can be found."""
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    return tmp_path


def _fake_hf_snapshot(hub, repo, filename, payload: bytes | None = None, revision="abc123", main=True):
    """Lay a file out the way huggingface_hub caches it: blobs/ + snapshots/<rev>/ symlink + refs/main."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    blob = repo_dir / "blobs" / f"blob-{revision}"
    if payload is not None:
        blob.write_bytes(payload)
    snap = repo_dir / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).symlink_to(blob)
    if main:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(revision)
    return snap / filename


# ---------------------------------------------------------------- registry


def test_registry_lists_and_describes_models():
    names = list_clip_models()
    assert {"ViT-B-32/openai", "tiny", "ViT-B-32/random"} <= set(names)
    assert OPENAI.dim == 512 and OPENAI.context_length == 77 and OPENAI.architecture == "ViT-B-32"
    assert OPENAI.hf_repo == "timm/vit_base_patch32_clip_224.openai" and OPENAI.quick_gelu
    tiny_spec = get_clip_spec("tiny")
    assert tiny_spec.context_length == 77 and tiny_spec.dim == 32 and tiny_spec.weights == "random"


def test_unknown_model_lists_valid_names():
    with pytest.raises(InvalidInputError) as err:
        get_clip_spec("ViT-H-14")
    for name in list_clip_models():
        assert name in str(err.value)


def test_registry_matches_installed_open_clip_pretrained_config():
    """The hub repo we look for in the cache is the one open_clip itself downloads from."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg("ViT-B-32", "openai")
    assert cfg["hf_hub"].rstrip("/") == OPENAI.hf_repo
    assert cfg["quick_gelu"] is True


# ---------------------------------------------------------------- tokens


def test_tokenize_matches_open_clip_and_reports_truncation(tiny):
    import open_clip

    tokens, truncated = tiny.tokenize(TEXTS)
    expected = open_clip.tokenize(TEXTS).numpy()
    np.testing.assert_array_equal(tokens, expected)
    assert tokens.dtype == np.int64 and tokens.shape == (4, 77)
    assert truncated.tolist() == [False, False, False, True]
    assert tokens[3, -1] == tiny.eot_token_id  # open_clip puts EOT last when it cuts
    ids, cut = tiny.token_ids(TEXTS[0])
    assert ids[0] == tiny.sot_token_id and ids[-1] == tiny.eot_token_id and not cut


def test_tokenizer_is_the_packaged_bpe(tiny):
    """The real CLIP vocabulary ships in the open_clip wheel: no download needed."""
    assert (tiny.sot_token_id, tiny.eot_token_id) == (49406, 49407)
    assert tiny.bpe_ids("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tiny.bpe_ids("🐱") and tiny.bpe_ids("東京")  # bytes-level BPE: never unknown


# ---------------------------------------------------------------- features


def test_text_features_are_unnormalized_encode_text(tiny):
    feats = tiny.text_features(TEXTS)
    assert feats.dtype == np.float32 and feats.shape == (4, tiny.dim)
    with torch.no_grad():
        ref = tiny.model.encode_text(torch.from_numpy(tiny.tokenize(TEXTS)[0]), normalize=False)
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.linalg.norm(feats, axis=1), 1.0)


def test_text_features_batching_progress_and_determinism(tiny):
    calls = []
    one_by_one = tiny.text_features(TEXTS, batch_size=1, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_allclose(one_by_one, tiny.text_features(TEXTS, batch_size=3), rtol=1e-5, atol=1e-6)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    again = load_clip("tiny", device="cpu")  # seeded: same weights, same features
    np.testing.assert_array_equal(again.text_features(TEXTS[:2]), tiny.text_features(TEXTS[:2]))
    assert tiny.text_features("a photo of a cat").shape == (1, tiny.dim)
    assert tiny.text_features([]).shape == (0, tiny.dim)


def test_text_features_reject_bad_input(tiny):
    with pytest.raises(InvalidInputError, match="strings"):
        tiny.text_features(["ok", 3])
    with pytest.raises(InvalidInputError, match="batch_size"):
        tiny.text_features(["ok"], batch_size=0)


def test_image_features_accept_pil_and_uint8_arrays(tiny):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
    grey = Image.fromarray(arr[:, :, 0], "L")
    feats = tiny.image_features([arr, Image.fromarray(arr), grey], batch_size=2)
    assert feats.shape == (3, tiny.dim) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats[0], feats[1])
    assert not np.allclose(feats[0], feats[2])
    with torch.no_grad():
        ref = tiny.model.encode_image(tiny._preprocess(Image.fromarray(arr))[None], normalize=False)
    np.testing.assert_allclose(feats[0], ref[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), "x.png"],
)
def test_image_features_reject_bad_images(tiny, bad):
    with pytest.raises(InvalidInputError, match="image 0"):
        tiny.image_features([bad])


def test_device_and_checkpoint_arguments_are_checked(monkeypatch):
    with pytest.raises(InvalidInputError, match="random weights"):
        load_clip("tiny", checkpoint="/some/file.safetensors")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidInputError, match="CUDA is not available"):
        load_clip("tiny", device="cuda")
    assert load_clip("tiny").device == "cpu"  # default: CUDA only when there is one


# ---------------------------------------------------------------- weights


def test_missing_weights_message_says_how_to_get_them(no_weights_env):
    with pytest.raises(WeightsUnavailableError) as err:
        load_clip("ViT-B-32/openai")
    msg = str(err.value)
    assert "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors" in msg
    assert "--clip-checkpoint" in msg and CHECKPOINT_ENV in msg
    assert "tiny" in msg and "text-seeded" in msg
    assert str(no_weights_env / "empty-hub") in msg


def test_explicit_paths_that_do_not_exist_are_errors(no_weights_env, monkeypatch):
    missing = no_weights_env / "nope.safetensors"
    with pytest.raises(WeightsUnavailableError, match="nope.safetensors"):
        load_clip("ViT-B-32/openai", checkpoint=missing)
    monkeypatch.setenv(CHECKPOINT_ENV, str(missing))
    with pytest.raises(WeightsUnavailableError, match=CHECKPOINT_ENV):
        resolve_clip_checkpoint(OPENAI)


def test_resolution_order_and_hf_cache_layout(tmp_path, monkeypatch):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub = tmp_path / "hf" / "hub"
    assert hf_hub_cache_dir() == hub
    assert resolve_clip_checkpoint(OPENAI) is None
    # an older snapshot with the .bin, and refs/main pointing at one with the safetensors file
    _fake_hf_snapshot(hub, OPENAI.hf_repo, "open_clip_pytorch_model.bin", b"old", "old1", main=False)
    assert resolve_clip_checkpoint(OPENAI).name == "open_clip_pytorch_model.bin"
    main = _fake_hf_snapshot(hub, OPENAI.hf_repo, "open_clip_model.safetensors", b"new", "new2")
    assert resolve_clip_checkpoint(OPENAI) == main
    env_file = tmp_path / "env.safetensors"
    env_file.write_bytes(b"x")
    monkeypatch.setenv(CHECKPOINT_ENV, str(env_file))
    assert resolve_clip_checkpoint(OPENAI) == env_file
    explicit = tmp_path / "explicit.bin"
    explicit.write_bytes(b"x")
    assert resolve_clip_checkpoint(OPENAI, explicit) == explicit
    assert resolve_clip_checkpoint(get_clip_spec("tiny")) is None


def test_dangling_cache_symlink_is_not_a_checkpoint(no_weights_env):
    hub = no_weights_env / "empty-hub"
    _fake_hf_snapshot(hub, OPENAI.hf_repo, "open_clip_model.safetensors", payload=None)
    assert resolve_clip_checkpoint(OPENAI) is None


def test_real_loading_path_from_a_fake_hf_cache(no_weights_env):
    """A random ViT-B-32 state dict saved where huggingface_hub would cache the OpenAI weights
    goes through the same resolution and open_clip loading code as the real file."""
    import open_clip
    from open_clip.transformer import QuickGELU
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        source = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    hub = no_weights_env / "empty-hub"
    path = _fake_hf_snapshot(hub, OPENAI.hf_repo, "open_clip_model.safetensors", payload=b"")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path.resolve()))
    assert resolve_clip_checkpoint(OPENAI) == path

    emb = load_clip("ViT-B-32/openai", device="cpu")
    assert emb.embedder_id == "ViT-B-32/openai" and emb.dim == 512
    assert emb.weights_source == f"open_clip:{path}"
    assert isinstance(emb.model.transformer.resblocks[0].mlp.gelu, QuickGELU)  # OpenAI activation
    torch.testing.assert_close(emb.model.text_projection, source.text_projection)
    torch.testing.assert_close(emb.model.visual.conv1.weight, source.visual.conv1.weight)
    feats = emb.text_features(["a photo of a cat"])
    assert feats.shape == (1, 512)
    image = np.full((224, 224, 3), 127, np.uint8)
    assert emb.image_features([image]).shape == (1, 512)


def test_corrupt_checkpoint_is_reported_as_unavailable(tmp_path, monkeypatch):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsUnavailableError, match="broken.safetensors"):
        load_clip("ViT-B-32/openai", checkpoint=bad)


def test_module_import_is_cheap():
    """Importing the module must not pull torch/open_clip in (the dashboard imports it at start)."""
    import subprocess
    import sys

    code = "import sys, carlos.models.clip, carlos.core.query;print('open_clip' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(clip_mod.__file__).resolve().parents[2],
    )
    assert out.stdout.split() == ["False", "False"]
