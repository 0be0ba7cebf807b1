"""The CLIP checkpoint in transformers format (``openai/clip-vit-base-patch32``): found, converted
to open_clip, and checked against transformers' own ``CLIPModel`` and image processor.

One random ViT-B/32 (perturbed so no LayerNorm or bias is trivial) is written in both formats
into a fake Hugging Face cache: the open_clip file as open_clip saves it, the transformers folder
from an independent reverse mapping, loaded back by ``CLIPModel.from_pretrained`` with no missing
or unexpected key. The open_clip file agreeing with ``CLIPModel`` proves that mapping; the
converted folder agreeing with both proves :mod:`carlos.models.clip_transformers`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from carlos.errors import WeightsUnavailableError
from carlos.models.clip import load_clip
from carlos.models.clip_registry import (
    CHECKPOINT_ENV,
    OPEN_CLIP,
    TRANSFORMERS,
    find_clip_weights,
    get_clip_spec,
    missing_weights_message,
    transformers_weights_file,
)
from carlos.models.clip_tokenizer import EOS_TOKEN, load_clip_tokenizer
from carlos.models.clip_transformers import (
    ProcessorPreprocess,
    check_config,
    processor_preprocess,
    read_state_dict,
)

OPENAI = get_clip_spec("ViT-B-32/openai")
TEXTS = ["a photo of a cat", "pixel art, a castle at night", "Ein Hund im Schnee", "a b c " * 40]
TOL = 1e-4  # relative: |a - b| / |b| over each whole matrix
# openai/clip-vit-base-patch32's preprocessor_config.json as published (legacy int sizes)
OPENAI_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _to_transformers(oc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip -> transformers keys, written independently of the module's forward mapping."""
    hf = {
        "logit_scale": oc["logit_scale"],
        "text_model.embeddings.token_embedding.weight": oc["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": oc["positional_embedding"],
        "text_model.final_layer_norm.weight": oc["ln_final.weight"],
        "text_model.final_layer_norm.bias": oc["ln_final.bias"],
        "text_projection.weight": oc["text_projection"].T,
        "vision_model.embeddings.class_embedding": oc["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": oc["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": oc["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": oc["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": oc["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": oc["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": oc["visual.ln_post.bias"],
        "visual_projection.weight": oc["visual.proj"].T,
    }
    for tower, src in (("text_model", "transformer"), ("vision_model", "visual.transformer")):
        for i in range(12):
            s, d = f"{src}.resblocks.{i}.", f"{tower}.encoder.layers.{i}."
            for kind in ("weight", "bias"):
                q, k, v = (t.clone() for t in oc[f"{s}attn.in_proj_{kind}"].chunk(3))
                hf[f"{d}self_attn.q_proj.{kind}"], hf[f"{d}self_attn.k_proj.{kind}"], hf[f"{d}self_attn.v_proj.{kind}"] = q, k, v
                hf[f"{d}self_attn.out_proj.{kind}"] = oc[f"{s}attn.out_proj.{kind}"]
                hf[f"{d}layer_norm1.{kind}"] = oc[f"{s}ln_1.{kind}"]
                hf[f"{d}layer_norm2.{kind}"] = oc[f"{s}ln_2.{kind}"]
                hf[f"{d}mlp.fc1.{kind}"] = oc[f"{s}mlp.c_fc.{kind}"]
                hf[f"{d}mlp.fc2.{kind}"] = oc[f"{s}mlp.c_proj.{kind}"]
    return {k: v.contiguous() for k, v in hf.items()}


def _snapshot(hub: Path, repo: str, rev: str = "0123abcd") -> Path:
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(rev)
    snap = repo_dir / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _env(monkeypatch, hub: Path) -> None:
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))


@pytest.fixture(scope="module")
def both_formats(tmp_path_factory):
    """One random ViT-B/32 in a fake HF cache twice: open_clip file and transformers folder."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    hub = tmp_path_factory.mktemp("hf") / "hub"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2024)
        source = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
        with torch.no_grad():
            for p in source.parameters():  # no LayerNorm at 1 or bias at 0: every mapping shows
                if p.ndim <= 1:
                    p.add_(torch.randn_like(p) * 0.02)
    oc_state = {k: v.contiguous() for k, v in source.state_dict().items()}
    oc_file = _snapshot(hub, OPENAI.hf_repo) / OPENAI.hf_filenames[0]
    save_file(oc_state, str(oc_file))
    snap = _snapshot(hub, OPENAI.hf_transformers_repo)
    CLIPConfig().save_pretrained(snap)  # transformers' defaults are ViT-B/32 with quick_gelu
    save_file(_to_transformers(oc_state), str(snap / "model.safetensors"), metadata={"format": "pt"})
    (snap / "preprocessor_config.json").write_text(json.dumps(OPENAI_PREPROCESSOR))
    load_clip_tokenizer(EOS_TOKEN, hub.parent / "tok").save_pretrained(snap)
    reference, info = CLIPModel.from_pretrained(snap, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    del source
    return {"hub": hub, "oc_file": oc_file, "snap": snap, "reference": reference.eval()}


@pytest.fixture(scope="module")
def loaded(both_formats):
    mp = pytest.MonkeyPatch()
    _env(mp, both_formats["hub"])
    try:
        via_cache = load_clip("ViT-B-32/openai", device="cpu")  # both cached: transformers wins
        via_file = load_clip("ViT-B-32/openai", checkpoint=both_formats["oc_file"], device="cpu")
    finally:
        mp.undo()
    return via_cache, via_file


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    grad = np.linspace(0, 255, 640)[None, :, None]
    # (h, w); the last two leave an odd margin to crop: 299 - 224 = 75 and 359 - 224 = 135
    sizes = {"square": (224, 224), "landscape": (480, 640), "odd-margin": (224, 299), "portrait": (401, 250)}
    return {name: np.clip(rng.normal(0, 40, (h, w, 3)) + grad[:, :w], 0, 255).astype(np.uint8) for name, (h, w) in sizes.items()}


def _ref_text(reference, tokenizer, texts):
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")  # the authors' call
    with torch.no_grad():
        out = reference.get_text_features(**enc)
    return getattr(out, "pooler_output", out).numpy()


# ---------------------------------------------------------------- the heavy comparison


def test_transformers_folder_is_found_first_and_says_so(both_formats, loaded):
    via_cache, via_file = loaded
    assert via_cache.weights_source == f"transformers:{both_formats['snap']}"
    assert via_file.weights_source == f"open_clip:{both_formats['oc_file']}"
    assert via_cache.embedder_id == via_file.embedder_id == "ViT-B-32/openai"
    assert isinstance(via_cache._preprocess, ProcessorPreprocess)


def test_text_features_agree_with_clipmodel_and_open_clip(both_formats, loaded):
    from transformers import CLIPTokenizer

    via_cache, via_file = loaded
    tokenizer = CLIPTokenizer.from_pretrained(both_formats["snap"])
    for text in TEXTS:  # the folder's tokenizer and open_clip's read the same ids
        ids, _ = via_cache.token_ids(text)
        assert tokenizer(text, truncation=True)["input_ids"] == ids
    ours, other = via_cache.text_features(TEXTS), via_file.text_features(TEXTS)
    ref = _ref_text(both_formats["reference"], tokenizer, TEXTS)
    assert rel(ours, ref) < TOL and rel(other, ref) < TOL and rel(ours, other) < TOL
    assert not np.allclose(np.linalg.norm(ours, axis=1), 1.0)  # unnormalized, like get_text_features


def test_image_features_agree_with_clipmodel_and_its_processor(both_formats, loaded):
    from transformers import CLIPImageProcessorPil

    via_cache, via_file = loaded
    images = _images()
    processor = CLIPImageProcessorPil.from_pretrained(both_formats["snap"])
    pixels = processor(images=[Image.fromarray(a) for a in images.values()], return_tensors="pt")["pixel_values"]
    for i, (name, arr) in enumerate(images.items()):  # the same pixels as the processor, exactly
        torch.testing.assert_close(via_cache._preprocess(Image.fromarray(arr)), pixels[i], rtol=0, atol=1e-6, msg=name)
    with torch.no_grad():
        out = both_formats["reference"].get_image_features(pixel_values=pixels)
    ref = getattr(out, "pooler_output", out).numpy()
    ours = via_cache.image_features(list(images.values()), batch_size=2)
    assert rel(ours, ref) < TOL
    with torch.no_grad():  # the open_clip file on the processor's pixels: same weights, same tower
        assert rel(via_file.model.encode_image(pixels).numpy(), ref) < TOL
    # open_clip's own preprocessing agrees wherever its crop does; with an odd margin torchvision
    # rounds the offset half-up-to-even (75 / 2 -> 38) where the processor floors it (37)
    assert rel(via_file.image_features([images["square"], images["landscape"]]), ours[:2]) < TOL
    for name in ("odd-margin", "portrait"):
        odd = Image.fromarray(images[name])
        assert not torch.allclose(via_file._preprocess(odd), via_cache._preprocess(odd)), name


def test_prefix_cache_serves_the_converted_model_like_the_authors_query(both_formats, loaded):
    """The KV cache runs open_clip's blocks itself: on the converted checkpoint it gives the
    direction the shipped procedure computes with CLIPModel (pad-to-longest, two batches)."""
    from transformers import CLIPTokenizer

    from carlos.models.prefix_cache import build_prefix_cache, query_direction_cached

    via_cache, _ = loaded
    prompts = ["a portrait of an old man", "a red sports car on a coastal road", "a bowl of ramen, studio light"]
    query = "pixel art"
    direction = query_direction_cached(build_prefix_cache(via_cache, prompts), query).direction
    tokenizer = CLIPTokenizer.from_pretrained(both_formats["snap"])
    ref_base = _ref_text(both_formats["reference"], tokenizer, prompts)
    ref_with = _ref_text(both_formats["reference"], tokenizer, [p + " " + query for p in prompts])
    assert rel(direction, (ref_with - ref_base).mean(axis=0)) < TOL


def test_a_config_of_another_architecture_is_refused(tmp_path, loaded):
    via_cache, _ = loaded
    for override, word in ((("hidden_act", "gelu"), "hidden_act"), (("num_attention_heads", 16), "num_attention_heads")):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip", "text_config": dict([override])}))
        with pytest.raises(WeightsUnavailableError, match=word):
            check_config(tmp_path, via_cache.model, OPENAI)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    with pytest.raises(WeightsUnavailableError, match="siglip"):
        check_config(tmp_path, via_cache.model, OPENAI)


# ---------------------------------------------------------------- resolution and files (cheap)


def _folder(path: Path, *files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_bytes(b"{}" if name.endswith(".json") else b"x")
    return path


def test_resolution_order_covers_both_formats(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    _env(monkeypatch, hub)
    assert find_clip_weights(OPENAI) is None
    oc = _folder(_snapshot(hub, OPENAI.hf_repo), "open_clip_model.safetensors") / "open_clip_model.safetensors"
    found = find_clip_weights(OPENAI)
    assert (found.format, found.path, found.weights_file) == (OPEN_CLIP, oc, oc)
    snap = _folder(_snapshot(hub, OPENAI.hf_transformers_repo), "config.json")
    assert find_clip_weights(OPENAI).format == OPEN_CLIP  # a config without weights is not a checkpoint
    _folder(snap, "pytorch_model.bin")
    found = find_clip_weights(OPENAI)
    assert (found.format, found.path, found.weights_file.name) == (TRANSFORMERS, snap, "pytorch_model.bin")
    assert "Hugging Face cache" in found.found_by and found.source == f"transformers:{snap}"
    _folder(snap, "model.safetensors")
    assert find_clip_weights(OPENAI).weights_file.name == "model.safetensors"  # safetensors preferred
    # explicit: a transformers folder, its weights file, an open_clip file, a folder holding one
    local = _folder(tmp_path / "local", "config.json", "pytorch_model.bin")
    monkeypatch.setenv(CHECKPOINT_ENV, str(local))
    assert (find_clip_weights(OPENAI).path, find_clip_weights(OPENAI).found_by) == (local, CHECKPOINT_ENV)
    explicit = find_clip_weights(OPENAI, local / "pytorch_model.bin")
    assert (explicit.format, explicit.path, explicit.weights_file.name, explicit.found_by) == (
        TRANSFORMERS,
        local,
        "pytorch_model.bin",
        "--clip-checkpoint",
    )
    assert find_clip_weights(OPENAI, oc).format == OPEN_CLIP
    assert find_clip_weights(OPENAI, oc.parent).weights_file == oc
    with pytest.raises(WeightsUnavailableError, match="neither format") as err:
        find_clip_weights(OPENAI, _folder(tmp_path / "empty"))
    assert "config.json" in str(err.value) and "open_clip_model.safetensors" in str(err.value)


def test_missing_message_names_every_place_and_both_formats(tmp_path, monkeypatch):
    _env(monkeypatch, tmp_path / "hub")
    msg = missing_weights_message(OPENAI)
    for needle in (
        "--clip-checkpoint",
        f"${CHECKPOINT_ENV}: not set",
        str(tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots"),
        str(tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots"),
        "transformers format",
        "open_clip format",
        "hf download openai/clip-vit-base-patch32 config.json preprocessor_config.json model.safetensors",
        "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors",
    ):
        assert needle in msg, needle
    assert msg.index("models--openai--") < msg.index("models--timm--")  # the order of preference


def test_pytorch_model_bin_is_read_without_unpickling_objects(tmp_path):
    state = {"a": torch.arange(3.0), "b": torch.ones(2, 2)}
    folder = _folder(tmp_path / "m", "config.json")
    torch.save(state, folder / "pytorch_model.bin")
    got = read_state_dict(transformers_weights_file(folder))
    assert set(got) == {"a", "b"} and torch.equal(got["a"], state["a"])

    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"a": Boom()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(tmp_path / "evil.bin")
    torch.save({"a": [1, 2]}, tmp_path / "lists.bin")
    with pytest.raises(WeightsUnavailableError, match="not a state dict of tensors"):
        read_state_dict(tmp_path / "lists.bin")


def test_processor_config_formats(tmp_path):
    legacy = _folder(tmp_path / "legacy")
    (legacy / "preprocessor_config.json").write_text(json.dumps(OPENAI_PREPROCESSOR))
    assert processor_preprocess(legacy) == ProcessorPreprocess() == processor_preprocess(_folder(tmp_path / "none"))
    nested = _folder(tmp_path / "nested")
    image_cfg = {"size": {"height": 256, "width": 256}, "crop_size": {"height": 224, "width": 224}, "resample": 2}
    (nested / "processor_config.json").write_text(json.dumps({"image_processor": image_cfg}))
    pre = processor_preprocess(nested)
    assert (pre.resize_hw, pre.crop_hw, pre.resample, pre.shortest_edge) == ((256, 256), (224, 224), 2, None)
    assert pre(Image.new("RGB", (300, 200))).shape == (3, 224, 224)
    assert ProcessorPreprocess().size_for(299, 224) == (299, 224) and ProcessorPreprocess().size_for(250, 401) == (224, 359)
    assert ProcessorPreprocess()(Image.new("RGB", (100, 50))).shape == (3, 224, 224)  # upscaled, never padded
