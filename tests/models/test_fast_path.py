"""The fast path on the tiny backend (CPU): same images as the plain path, exact unfusing, no empty_cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carlos.errors import InvalidInputError
from carlos.files.testing import make_test_lora
from carlos.models.diffusion import DiffusionBackend
from carlos.models.fast_path import PLAIN, FastPath, attention_processors, auto_batch_size, count_empty_cache, prepare_pipeline

PROMPTS = ["a photo of a cat", "portrait of an old man, oil painting", "a red sports car", "a bowl of fruit"]
SEEDS = [0, 1, 2, 3]
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tok")


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_lora(tmp_path_factory.mktemp("loras") / "k.safetensors", seed=5, layout="kohya")


@pytest.fixture(scope="module")
def fast(tok: Path) -> DiffusionBackend:
    return DiffusionBackend("tiny", device="cpu", cache_dir=tok)


@pytest.fixture(scope="module")
def plain(tok: Path) -> DiffusionBackend:
    return DiffusionBackend("tiny", device="cpu", cache_dir=tok, fast_path=PLAIN)


def _weights(backend: DiffusionBackend) -> dict[str, object]:
    return {n: p.detach().clone() for c in COMPONENTS for n, p in getattr(backend.pipeline, c).named_parameters(prefix=c)}


def _levels(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[int, float]:
    d = [np.abs(x.astype(int) - y.astype(int)) for x, y in zip(a, b)]
    return max(int(x.max()) for x in d), float(np.mean([x.mean() for x in d]))


def test_fast_path_images_equal_the_plain_path(fast: DiffusionBackend, plain: DiffusionBackend, lora: Path) -> None:
    assert fast.settings_dict() == plain.settings_dict()  # the base-image cache key ignores the fast path
    base_fast, base_plain = fast.generate(PROMPTS, SEEDS, batch_size=2), plain.generate(PROMPTS, SEEDS, batch_size=2)
    assert _levels(base_fast, base_plain) == (0, 0.0)
    with fast.lora(lora), plain.lora(lora):
        assert fast.fused is not None and plain.fused is None and plain.pipeline.get_list_adapters()
        fused, adapter = fast.generate(PROMPTS, SEEDS, batch_size=2), plain.generate(PROMPTS, SEEDS, batch_size=2)
    worst, mean = _levels(fused, adapter)
    print(f"fp32 fused vs adapter: max {worst} levels, mean {mean:.5f}")
    assert worst <= 2 and mean < 0.05, (worst, mean)  # fp32 rounding of W + sBA against W and BA apart
    assert _levels(fused, base_fast)[1] > 5  # and the LoRA does change the images


def test_unfusing_restores_the_base_weights_exactly(fast: DiffusionBackend, lora: Path) -> None:
    before = _weights(fast)
    base = fast.generate(PROMPTS[:2], SEEDS[:2])
    fast.load_lora(lora)
    changed = _weights(fast)
    touched = [n for n in before if not np.array_equal(before[n].numpy(), changed[n].numpy())]
    assert touched and any(n.startswith("text_encoder") for n in touched) and any(n.startswith("unet") for n in touched)
    assert all(np.array_equal(x, y) for x, y in zip(fast.generate(PROMPTS[:2], SEEDS[:2], base=True), base))  # swapped in
    assert all(np.array_equal(changed[n].numpy(), p.detach().numpy()) for n, p in _named(fast))  # fused again after base=True
    fast.unload_lora()
    after = _weights(fast)
    assert set(after) == set(before) and all(np.array_equal(before[n].numpy(), after[n].numpy()) for n in before)
    assert all(np.array_equal(x, y) for x, y in zip(fast.generate(PROMPTS[:2], SEEDS[:2]), base))


def _named(backend: DiffusionBackend):
    for c in COMPONENTS:
        yield from getattr(backend.pipeline, c).named_parameters(prefix=c)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_diffusers_unfuse_is_only_close_and_the_snapshot_is_exact(tok: Path, lora: Path, dtype: str) -> None:
    """Why the fast path snapshots: subtracting the merged delta again is off by rounding."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    backend = DiffusionBackend("tiny", device="cpu", dtype=dtype, cache_dir=tok, fast_path=PLAIN)
    pipe = backend.pipeline
    backend.load_lora(lora)
    layers = [m.get_base_layer().weight for c in COMPONENTS for m in getattr(pipe, c).modules() if isinstance(m, BaseTunerLayer)]
    before = [w.detach().clone() for w in layers]
    pipe.fuse_lora(adapter_names=[backend.adapter_name])
    pipe.unfuse_lora()
    err = max(float((w.detach().float() - b.float()).abs().max()) for w, b in zip(layers, before))
    print(f"{dtype}: diffusers unfuse_lora leaves a max abs error of {err:.2e}")
    assert 0 < err < (1e-6 if dtype == "float32" else 2e-3), err
    backend.unload_lora()
    fast = DiffusionBackend("tiny", device="cpu", dtype=dtype, cache_dir=tok)
    before = _weights(fast)
    with fast.lora(lora):
        assert not all(torch.equal(before[n], p) for n, p in _named(fast))
    assert all(torch.equal(before[n], p) for n, p in _named(fast))


def test_fp16_fused_images_stay_within_rounding_of_the_adapter(tok: Path, lora: Path) -> None:
    fast = DiffusionBackend("tiny", device="cpu", dtype="float16", cache_dir=tok)
    plain = DiffusionBackend("tiny", device="cpu", dtype="float16", cache_dir=tok, fast_path=FastPath(fuse_lora=False))
    with fast.lora(lora), plain.lora(lora):
        worst, mean = _levels(fast.generate(PROMPTS, SEEDS), plain.generate(PROMPTS, SEEDS))
    print(f"fp16 fused vs adapter: max {worst} levels, mean {mean:.3f}")
    assert worst <= 8 and mean < 1.0, (worst, mean)  # measured 3 / 0.22; the LoRA's own effect is ~24 levels


def test_generation_and_lora_switching_never_empty_the_cuda_cache(fast: DiffusionBackend, lora: Path, tmp_path: Path) -> None:
    other = make_test_lora(tmp_path / "o.safetensors", seed=6, layout="diffusers")
    with count_empty_cache() as calls:
        fast.generate(PROMPTS, SEEDS, batch_size=2)
        fast.generate(PROMPTS, SEEDS, lora=lora, batch_size=2)
        fast.generate(PROMPTS, SEEDS, lora=other, base=False)
        fast.generate(PROMPTS, SEEDS, base=True)
        fast.unload_lora()
    assert calls == []


def test_attention_is_sdpa_and_the_fp16_vae_decodes_in_fp32(tok: Path) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    backend = DiffusionBackend("tiny", device="cpu", dtype="float16", cache_dir=tok, fast_path=PLAIN)
    pipe = backend.pipeline
    assert set(attention_processors(pipe)) == {"AttnProcessor2_0"}  # diffusers' default already
    pipe.unet.set_attn_processor(AttnProcessor())
    assert not pipe.vae.config.force_upcast  # the tiny config says no; SDXL's says yes
    report = prepare_pipeline(pipe, FastPath(), "cpu")
    assert report["attention_processors"] == attention_processors(pipe) and set(attention_processors(pipe)) == {"AttnProcessor2_0"}
    assert pipe.vae.config.force_upcast and report["vae_decode_dtype"] == "float32"
    assert not report["vae_slicing"]  # on a GPU only, by default


def test_compile_and_channels_last_are_behind_flags(tok: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    backend = DiffusionBackend("tiny", device="cpu", cache_dir=tok, fast_path=PLAIN)
    assert not backend.fast_report["unet_compiled"]
    calls: list[dict] = []
    monkeypatch.setattr(backend.pipeline.unet, "compile", lambda **kw: calls.append(kw))
    report = prepare_pipeline(backend.pipeline, FastPath(compile_unet=True, compile_mode="max-autotune", channels_last=True), "cpu")
    assert calls == [{"mode": "max-autotune"}] and report["unet_compiled"] and report["channels_last"]
    conv = backend.pipeline.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_batch_is_the_largest_that_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (30 * 2**30, 80 * 2**30))
    assert auto_batch_size(FastPath(), "cuda", 1024, 1024) == 14  # (30 - 8) / 1.5
    assert auto_batch_size(FastPath(reserve_gib=0), "cuda", 1024, 1024) == 16  # 20, capped at 16
    assert auto_batch_size(FastPath(max_batch=64, reserve_gib=0), "cuda", 1024, 1024) == 20
    assert auto_batch_size(FastPath(max_batch=64, reserve_gib=12), "cuda", 1024, 1024) == 12
    assert auto_batch_size(FastPath(gib_per_image=40), "cuda", 1024, 1024) == 1  # never below 1
    assert auto_batch_size(FastPath(batch_size=3), "cuda", 1024, 1024) == 3  # an explicit batch wins
    assert auto_batch_size(FastPath(), "cuda", 512, 512) == 16


@pytest.mark.parametrize(
    "kwargs", [{"snapshot": "disk"}, {"attention": "xformers"}, {"batch_size": 0}, {"max_batch": True}, {"gib_per_image": 0}]
)
def test_fast_path_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        FastPath(**kwargs)


def test_vae_slicing_decodes_image_by_image_to_the_same_pixels(tok: Path, fast: DiffusionBackend) -> None:
    sliced = DiffusionBackend("tiny", device="cpu", cache_dir=tok, fast_path=FastPath(vae_slicing=True))
    assert sliced.fast_report["vae_slicing"] and not fast.fast_report["vae_slicing"]
    worst, _ = _levels(sliced.generate(PROMPTS, SEEDS), fast.generate(PROMPTS, SEEDS))
    assert worst <= 1, worst
