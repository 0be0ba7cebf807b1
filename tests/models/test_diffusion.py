"""Diffusion backend: tiny SDXL pipeline, paired generation, LoRA adapters, SDXL configs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from carlos.errors import (
    InvalidInputError,
    InvalidLoRAFileError,
    WeightsUnavailableError,
)
from carlos.files.testing import TEST_LORA_MARKER, make_test_lora, sgm_unet_name
from carlos.models import clip_tokenizer, sdxl_arch, tiny_sdxl
from carlos.models.diffusion import (
    DiffusionBackend,
    DiffusionSettings,
    get_backend_spec,
    list_backends,
)
from carlos.models.fast_path import FastPath
from carlos.models.sdxl_loader import SDXL_REPO_ID

PROMPTS = ["a photo of a cat", "portrait of an old man, oil painting", "a red sports car", "a bowl of fruit"]
SEEDS = [0, 1, 2, 3]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _mean_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a, b)]))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny model's ops are too small for intra-op threads; on a busy 2-core machine
    OpenMP spin-waiting made them 10-50x slower. Restored afterwards for other modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tokenizer")


@pytest.fixture(scope="module")
def backend(tok_cache: Path) -> DiffusionBackend:
    return DiffusionBackend("tiny", device="cpu", cache_dir=tok_cache)


@pytest.fixture(scope="module")
def base_images(backend: DiffusionBackend) -> list[np.ndarray]:
    return backend.generate(PROMPTS, SEEDS, batch_size=2)


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("loras")
    return {
        "kohya": make_test_lora(d / "k.safetensors", seed=5, layout="kohya"),
        "diffusers": make_test_lora(d / "d.safetensors", seed=5, layout="diffusers"),
        "other": make_test_lora(d / "o.safetensors", seed=6, layout="kohya", text_encoders=False),
        "zero": make_test_lora(d / "z.safetensors", seed=7, zero=True),
    }


# --------------------------------------------------------------------------- registry / settings


def test_registry_lists_backends_and_names_them_on_error() -> None:
    assert list_backends() == ["sdxl", "sdxl-random", "tiny"]
    assert get_backend_spec("sdxl").default_settings == DiffusionSettings(25, 5.0, 1024, 1024, 1.0)
    with pytest.raises(InvalidInputError, match="sdxl, sdxl-random, tiny"):
        get_backend_spec("sd15")


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"height": 100}, {"width": -8}, {"guidance_scale": float("nan")}, {"lora_scale": "1"}])
def test_settings_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        DiffusionSettings(**kwargs)


def test_settings_are_recorded_for_provenance(backend: DiffusionBackend) -> None:
    d = backend.settings_dict()
    assert d["backend_id"] == "tiny-sdxl/seed0" and d["backend"] == "tiny"
    assert (d["steps"], d["guidance_scale"], d["height"], d["width"], d["lora_scale"]) == (4, 5.0, 64, 64, 1.0)
    assert d["dtype"] == "float32" and d["device_type"] == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        backend.settings.steps = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- generation


def test_tiny_images_are_deterministic_per_seed(backend: DiffusionBackend, base_images: list[np.ndarray]) -> None:
    calls: list[tuple[int, int]] = []
    again = backend.generate(PROMPTS, SEEDS, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 4), (4, 4)]
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in again)
    assert _same(again, base_images)
    assert all(im.std() > 10 for im in again)  # a picture, not a flat colour
    other_seeds = backend.generate(PROMPTS, [10, 11, 12, 13], batch_size=2)
    assert _mean_diff(other_seeds, base_images) > 5


def test_noise_belongs_to_the_seed_not_the_batch_position(backend: DiffusionBackend) -> None:
    fwd = backend.generate(PROMPTS[:3], [7, 8, 9], batch_size=1)
    rev = backend.generate(PROMPTS[:3][::-1], [9, 8, 7], batch_size=1)
    assert _same(fwd, rev[::-1])


def test_generate_checks_its_inputs(backend: DiffusionBackend, lora_files: dict[str, Path]) -> None:
    with pytest.raises(InvalidInputError, match="one seed per prompt"):
        backend.generate(PROMPTS, SEEDS[:2])
    with pytest.raises(InvalidInputError, match="seeds"):
        backend.generate(["a"], [-1])
    with pytest.raises(InvalidInputError, match="list of strings"):
        backend.generate("a cat", [0])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="either"):
        backend.generate(["a"], [0], lora=lora_files["kohya"], base=True)
    assert backend.generate([], []) == []


# --------------------------------------------------------------------------- LoRA adapters


@pytest.fixture(scope="module")
def adapter_backend(tok_cache: Path) -> DiffusionBackend:
    """The LoRA kept as a PEFT adapter (the fast path fuses it into the weights)."""
    return DiffusionBackend("tiny", device="cpu", cache_dir=tok_cache, fast_path=FastPath(fuse_lora=False))


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
@pytest.mark.parametrize("mode", ["fused", "adapter"])
def test_lora_changes_images_and_unloads_exactly_without_reload(
    request: pytest.FixtureRequest, base_images: list[np.ndarray], lora_files: dict[str, Path], layout: str, mode: str
) -> None:
    backend: DiffusionBackend = request.getfixturevalue("backend" if mode == "fused" else "adapter_backend")
    unet, loads, unloads = backend.pipeline.unet, backend.lora_loads, backend.lora_unloads
    backend.load_lora(lora_files[layout])
    if mode == "adapter":
        assert set(backend.pipeline.get_list_adapters()) == {"unet", "text_encoder", "text_encoder_2"}
    else:  # merged into the weights: no PEFT layer left, the touched base tensors snapshotted
        assert backend.pipeline.get_list_adapters() == {} and backend.fused is not None and backend.fused.n_tensors > 0
    with_lora = backend.generate(PROMPTS, SEEDS, batch_size=2)
    assert _mean_diff(with_lora, base_images) > 5
    assert _same(backend.generate(PROMPTS, SEEDS, batch_size=2, base=True), base_images)  # disabled / swapped, not removed
    assert _same(backend.generate(PROMPTS, SEEDS, batch_size=2), with_lora)  # re-enabled after base=True
    backend.unload_lora()
    assert backend.active_lora is None and backend.pipeline.get_list_adapters() == {}
    assert _same(backend.generate(PROMPTS, SEEDS, batch_size=2), base_images)
    assert (backend.lora_loads, backend.lora_unloads) == (loads + 1, unloads + 1)
    assert backend.pipeline_loads == 1 and backend.pipeline.unet is unet


def test_kohya_sgm_names_and_diffusers_names_hit_the_same_layers(backend: DiffusionBackend, lora_files: dict[str, Path]) -> None:
    with backend.lora(lora_files["kohya"]):
        kohya = backend.generate(PROMPTS, SEEDS, batch_size=2)
    with backend.lora(lora_files["diffusers"]):
        diffusers = backend.generate(PROMPTS, SEEDS, batch_size=2)
    assert _mean_diff(kohya, diffusers) < 0.5  # same seeded weights; fp16 file rounding only


def test_zero_lora_leaves_images_unchanged(backend: DiffusionBackend, base_images: list[np.ndarray], lora_files: dict[str, Path]) -> None:
    with backend.lora(lora_files["zero"]):
        assert backend.active_lora == lora_files["zero"].resolve()
        assert _same(backend.generate(PROMPTS, SEEDS, batch_size=2), base_images)
    assert backend.active_lora is None


def test_generate_with_lora_argument_loads_once_and_switches(
    backend: DiffusionBackend, base_images: list[np.ndarray], lora_files: dict[str, Path]
) -> None:
    loads = backend.lora_loads
    first = backend.generate(PROMPTS[:2], SEEDS[:2], lora=lora_files["kohya"], batch_size=2)
    backend.generate(PROMPTS[:2], SEEDS[:2], lora=lora_files["kohya"], batch_size=2)
    assert backend.lora_loads == loads + 1
    other = backend.generate(PROMPTS[:2], SEEDS[:2], lora=lora_files["other"], batch_size=2)
    assert backend.lora_loads == loads + 2 and backend.active_lora == lora_files["other"].resolve()
    assert _mean_diff(first, other) > 2
    backend.unload_lora()
    assert _same(backend.generate(PROMPTS[:2], SEEDS[:2], batch_size=2), base_images[:2])
    assert backend.pipeline_loads == 1


def test_bad_lora_files_raise_and_leave_the_pipeline_clean(
    backend: DiffusionBackend, base_images: list[np.ndarray], lora_files: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(lora_files["kohya"])
    key = next(k for k in sd if k.startswith("lora_unet_") and k.endswith("lora_down.weight"))
    sd[key] = torch.zeros(sd[key].shape[0], sd[key].shape[1] * 2, dtype=sd[key].dtype)  # e.g. real-SDXL width
    save_file(sd, str(tmp_path / "wrong_shape.safetensors"))
    save_file(
        {"lora_unet_nowhere_x.lora_down.weight": torch.zeros(4, 8), "lora_unet_nowhere_x.lora_up.weight": torch.zeros(8, 4)},
        str(tmp_path / "no_match.safetensors"),
    )
    for name in ("wrong_shape", "no_match"):
        with pytest.raises(InvalidLoRAFileError, match=name):
            backend.load_lora(tmp_path / f"{name}.safetensors")
        assert backend.active_lora is None and backend.pipeline.get_list_adapters() == {}
    with pytest.raises(InvalidInputError, match="not found"):
        backend.load_lora(tmp_path / "missing.safetensors")
    with pytest.raises(InvalidInputError, match="identifier"):
        backend.load_lora(lora_files["kohya"], adapter_name="bad.name")
    with pytest.raises(RuntimeError), backend.lora(lora_files["kohya"]):
        raise RuntimeError("caller failed mid-run")
    assert backend.active_lora is None
    assert _same(backend.generate(PROMPTS, SEEDS, batch_size=2), base_images)


def test_lora_scale_and_weight_seed_are_applied(tok_cache: Path, base_images: list[np.ndarray], lora_files: dict[str, Path]) -> None:
    settings = dataclasses.replace(get_backend_spec("tiny").default_settings, lora_scale=0.0)
    other = DiffusionBackend("tiny", seed=1, device="cpu", settings=settings, cache_dir=tok_cache)
    assert other.backend_id == "tiny-sdxl/seed1"
    base = other.generate(PROMPTS, SEEDS, batch_size=2)
    assert _mean_diff(base, base_images) > 5  # other random weights
    assert _same(other.generate(PROMPTS, SEEDS, lora=lora_files["kohya"], batch_size=2), base)  # scale 0


# --------------------------------------------------------------------------- test LoRA files


def test_test_lora_files_look_like_sdxl_loras(lora_files: dict[str, Path], tmp_path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(lora_files["kohya"]), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta[TEST_LORA_MARKER[0]] == TEST_LORA_MARKER[1]
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_network_dim"] == "4"
    assert meta["ss_output_name"] == "k"
    prefixes = {re.match(r"lora_(unet_[a-z]+_blocks?|te[12])_", k)[0] for k in keys}  # SGM names, as kohya-ss
    assert prefixes == {"lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_", "lora_te1_", "lora_te2_"}
    assert {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in keys if "weight" in k} == {"lora_down.weight", "lora_up.weight"}
    assert sum(k.endswith(".alpha") for k in keys) * 3 == len(keys)
    with safe_open(str(lora_files["diffusers"]), "pt") as f:
        dkeys = list(f.keys())
    assert {k.split(".")[0] for k in dkeys} == {"unet", "text_encoder", "text_encoder_2"}
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in dkeys)
    custom = make_test_lora(tmp_path / "c.safetensors", metadata={"ss_base_model_version": None, "x": 1})
    with safe_open(str(custom), "pt") as f:
        assert "ss_base_model_version" not in f.metadata() and f.metadata()["x"] == "1"
    with pytest.raises(InvalidInputError):
        make_test_lora(tmp_path / "x.safetensors", layout="lycoris")


def test_sgm_names_invert_diffusers_own_sdxl_conversion() -> None:
    """Our SGM names, run through diffusers' converter with SDXL's UNet config, come back."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    assert sgm_unet_name("down_blocks.1.attentions.0.proj_in") == "input_blocks.4.1.proj_in"
    assert sgm_unet_name("down_blocks.2.attentions.1.proj_out") == "input_blocks.8.1.proj_out"
    assert sgm_unet_name("mid_block.attentions.0.proj_in") == "middle_block.1.proj_in"
    assert sgm_unet_name("up_blocks.1.attentions.2.proj_in") == "output_blocks.5.1.proj_in"
    sdxl = [f"down_blocks.{b}.attentions.{j}" for b in (1, 2) for j in (0, 1)]
    sdxl += ["mid_block.attentions.0"] + [f"up_blocks.{b}.attentions.{j}" for b in (0, 1) for j in (0, 1, 2)]
    names = [f"{m}.transformer_blocks.0.attn2.to_k" for m in sdxl] + [f"{m}.proj_out" for m in sdxl]
    sd: dict = {}
    for n in names:
        k = "lora_unet_" + sgm_unet_name(n).replace(".", "_")
        sd.update({f"{k}.lora_down.weight": 0, f"{k}.lora_up.weight": 0})
    mapped = _maybe_map_sgm_blocks_to_diffusers(sd, SimpleNamespace(layers_per_block=2))
    converted, _ = _convert_non_diffusers_lora_to_diffusers(mapped)
    back = {k.removeprefix("unet.").split(".processor")[0].split(".to_k_lora")[0].split(".lora.")[0] for k in converted}
    assert back == {n.removesuffix(".to_k") for n in names}


# --------------------------------------------------------------------------- tokenizers


def test_tokenizers_give_open_clips_ids(backend: DiffusionBackend, tok_cache: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()
    texts = PROMPTS + ["A  cinematic still of Tokyo at night, neon lights, 35mm", "café crème brûlée 1999", "word " * 100]
    expected = reference(texts).tolist()  # 77 ids, padded with 0 ("!")
    tok1, tok2 = backend.pipeline.tokenizer, backend.pipeline.tokenizer_2
    kw = {"padding": "max_length", "max_length": 77, "truncation": True}
    assert [tok2(t, **kw).input_ids for t in texts] == expected
    for text, ids in zip(texts, expected):
        got = tok1(text, **kw).input_ids
        end = ids.index(49407) + 1
        assert got[:end] == ids[:end] and set(got[end:]) <= {49407}  # tokenizer 1 pads with the end token
    files = clip_tokenizer.clip_tokenizer_dir(tok_cache)
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407 and (files / "merges.txt").is_file()


# --------------------------------------------------------------------------- real / full-size SDXL


def test_missing_sdxl_weights_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "CARLOS_SDXL_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    small = get_backend_spec("tiny").default_settings
    with pytest.raises(WeightsUnavailableError) as err:
        DiffusionBackend("sdxl", device="cpu", settings=small)
    msg = str(err.value)
    assert f"hf download {SDXL_REPO_ID}" in msg and str(tmp_path / "empty-hub") in msg
    assert "HF_HUB_CACHE" in msg and "single-file" in msg and "allow_download=True" in msg
    with pytest.raises(WeightsUnavailableError, match="no such SDXL weights"):
        DiffusionBackend("sdxl", device="cpu", settings=small, weights=tmp_path / "nope.safetensors")
    with pytest.raises(InvalidInputError, match="builds its own weights"):
        DiffusionBackend("tiny", device="cpu", weights=tmp_path)


def test_local_diffusers_folder_loads_through_the_sdxl_path(
    backend: DiffusionBackend, base_images: list[np.ndarray], tok_cache: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "my-sdxl"
    backend.pipeline.save_pretrained(folder)
    loaded = DiffusionBackend("sdxl", device="cpu", weights=folder, settings=backend.settings)
    assert loaded.backend_id == "sdxl:my-sdxl" and loaded.pipeline_loads == 1
    assert _same(loaded.generate(PROMPTS, SEEDS, batch_size=2), base_images)


def test_architecture_configs_are_consistent_and_sized_like_sdxl(backend: DiffusionBackend) -> None:
    counts = tiny_sdxl.count_parameters(sdxl_arch.TINY_SDXL)  # meta-device count, checked on real modules
    for name, n in counts.items():
        assert n == sum(p.numel() for p in getattr(backend.pipeline, name).parameters())
    sdxl = tiny_sdxl.count_parameters(sdxl_arch.SDXL_BASE_1_0)
    assert abs(sdxl["unet"] / 2.6e9 - 1) < 0.02  # SDXL report: 2.6B-parameter UNet
    assert abs((sdxl["text_encoder"] + sdxl["text_encoder_2"]) / 817e6 - 1) < 0.01  # 817M in the encoders
    assert 80e6 < sdxl["vae"] < 90e6  # SD VAE: ~84M
    broken = dict(sdxl_arch.TINY_SDXL.unet, cross_attention_dim=2048)
    with pytest.raises(InvalidInputError, match="cross_attention_dim"):
        dataclasses.replace(sdxl_arch.TINY_SDXL, unet=broken)


def test_sdxl_config_folder_round_trips(tmp_path: Path, tok_cache: Path) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    folder = tiny_sdxl.write_diffusers_configs(sdxl_arch.SDXL_BASE_1_0, tmp_path / "cfg", tok_cache)
    unet_cfg = UNet2DConditionModel.load_config(folder / "unet")
    assert {k: unet_cfg[k] for k in sdxl_arch.SDXL_BASE_1_0.unet} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in sdxl_arch.SDXL_BASE_1_0.unet.items()
    }
    te2 = CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
    assert (te2.hidden_size, te2.num_hidden_layers, te2.projection_dim) == (1280, 32, 1280)
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer_2").pad_token == "!"


def test_flop_constants_behind_the_cpu_estimate() -> None:
    counted = tiny_sdxl.count_tflops(sdxl_arch.SDXL_BASE_1_0, 1024, 1024)
    assert counted["unet_eval"] == pytest.approx(tiny_sdxl.SDXL_UNET_TFLOP_PER_EVAL_1024, rel=0.01)
    assert counted["vae_decode"] == pytest.approx(tiny_sdxl.SDXL_VAE_DECODE_TFLOP_1024, rel=0.01)
    est = tiny_sdxl.estimate_sdxl_cpu_seconds
    assert est(25, 5.0, 1024, 1024, gflops=100) == pytest.approx(2 * est(25, 5.0, 1024, 1024, gflops=200))
    assert est(50, 5.0, 1024, 1024, gflops=100) > 1.9 * est(25, 5.0, 1024, 1024, gflops=100)
    assert est(25, 1.0, 1024, 1024, gflops=100) < 0.6 * est(25, 5.0, 1024, 1024, gflops=100)
