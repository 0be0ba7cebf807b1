"""Tests for carlos.files (validate, header, formats, base_model, metadata): synthetic LoRA files, good and hostile."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from carlos.config import REPO_ROOT
from carlos.errors import (
    InvalidInputError,
    InvalidLoRAFileError,
    UnsupportedBaseModelError,
)
from carlos.files.validate import (
    LoRAFileLimits,
    LoRAFileReport,
    inspect_lora,
    safe_filename,
    sha256_file,
    validate_lora,
)

RANK = 4
SDXL_META = {
    "ss_base_model_version": "sdxl_base_v1-0",
    "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
    "ss_output_name": "papercut_style",
    "ss_resolution": "(1024, 1024)",
    "ss_network_dim": "4",
    "ss_network_alpha": "2.0",
    "ss_network_module": "networks.lora",
    "ss_num_train_images": "47",
    "ss_tag_frequency": json.dumps({"10_papercut": {"papercut": 40, "paper art": 12, "1girl": 5}, "5_bg": {"papercut": 3, "landscape": 9}}),
    "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
    "modelspec.title": "Papercut XL",
}


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _kohya(modules: dict[str, tuple[int, int]], dtype=np.float16, rank: int = RANK) -> dict[str, np.ndarray]:
    """kohya tensors: name -> (in_features, out_features) for linear layers."""
    rng, out = _rng(), {}
    for name, (fan_in, fan_out) in modules.items():
        out[f"{name}.lora_down.weight"] = (rng.standard_normal((rank, fan_in)) * 0.01).astype(dtype)
        out[f"{name}.lora_up.weight"] = (rng.standard_normal((fan_out, rank)) * 0.01).astype(dtype)
        out[f"{name}.alpha"] = np.array(rank / 2, dtype=dtype)
    return out


SDXL_KOHYA = {
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (2048, 640),
    "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q": (640, 640),
    "lora_unet_input_blocks_4_1_proj_in": (640, 640),
    "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v": (2048, 1280),
    "lora_unet_output_blocks_1_1_transformer_blocks_9_ff_net_2": (5120, 1280),
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
    "lora_te2_text_model_encoder_layers_11_mlp_fc1": (1280, 5120),
}
SD15_KOHYA = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (768, 320),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (320, 320),
    "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_v": (768, 320),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
}


def _save(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def _craft(path: Path, entries: dict, data: bytes, metadata=None, header: bytes | None = None, length=None) -> Path:
    """Hand-written safetensors bytes, for what the library refuses to write."""
    obj = dict(entries)
    if metadata is not None:
        obj["__metadata__"] = metadata
    raw = header if header is not None else json.dumps(obj).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)
    return path


def _craft_bf16(path: Path, arrays: dict[str, np.ndarray], metadata=None) -> Path:
    entries, data = {}, b""
    for name, arr in arrays.items():
        raw = (np.asarray(arr, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        entries[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return _craft(path, entries, data, metadata)


def _two_f16(offsets=((0, 8), (8, 16)), shapes=([4], [4]), dtype="F16") -> dict:
    return {
        f"lora_unet_t{i}.lora_down.weight": {"dtype": dtype, "shape": s, "data_offsets": list(o)}
        for i, (o, s) in enumerate(zip(offsets, shapes))
    }


@pytest.fixture
def sdxl_file(tmp_path: Path) -> Path:
    return _save(tmp_path / "papercut_xl.safetensors", _kohya(SDXL_KOHYA), SDXL_META)


# --- accepted files ------------------------------------------------------------------------


def test_sdxl_kohya_is_accepted_with_metadata(sdxl_file: Path) -> None:
    report = validate_lora(sdxl_file)
    assert report.ok and report.error is None
    assert (report.format, report.base_family) == ("kohya", "sdxl")
    assert report.base_family_reason == "cross-attention dim 2048"
    assert report.n_modules == len(SDXL_KOHYA) and report.n_tensors == 3 * len(SDXL_KOHYA)
    assert report.rank == RANK and report.ranks == (RANK,)
    assert report.components == ("te1", "te2", "unet")
    assert report.dtypes == ("F16",)
    assert report.sha256 == hashlib.sha256(sdxl_file.read_bytes()).hexdigest()
    assert report.size_bytes == sdxl_file.stat().st_size
    meta = report.metadata
    assert meta["ss_network_dim"] == 4 and meta["ss_network_alpha"] == 2.0
    assert meta["ss_resolution"] == [1024, 1024] and meta["ss_num_train_images"] == 47
    assert meta["ss_output_name"] == "papercut_style" and meta["modelspec.title"] == "Papercut XL"
    assert meta["top_tags"][:3] == [["papercut", 43], ["paper art", 12], ["landscape", 9]]
    assert report.raw_metadata == SDXL_META
    assert report.declared_base == "sdxl" and report.contradictions == ()
    assert report.trigger_words == ("papercut", "paper art", "landscape", "1girl")
    assert report.warnings == ()
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ranks"] == [RANK] and as_dict["ok"] is True


def test_trigger_phrase_wins_over_tags(tmp_path: Path) -> None:
    meta = {**SDXL_META, "modelspec.trigger_phrase": "pcut style, paper art, pcut style"}
    report = validate_lora(_save(tmp_path / "a.safetensors", _kohya(SDXL_KOHYA), meta))
    assert report.trigger_words == ("pcut style", "paper art")


@pytest.mark.parametrize(
    "tensors",
    [
        {  # PEFT keys, as diffusers saves them today
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (RANK, 2048),
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (640, RANK),
            "unet.up_blocks.0.attentions.2.transformer_blocks.9.attn1.to_out.0.lora_A.weight": (RANK, 1280),
            "unet.up_blocks.0.attentions.2.transformer_blocks.9.attn1.to_out.0.lora_B.weight": (1280, RANK),
            "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_A.weight": (RANK, 768),
            "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_B.weight": (768, RANK),
            "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.lora_A.weight": (RANK, 1280),
            "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.lora_B.weight": (1280, RANK),
        },
        {  # older attention-processor keys
            "down_blocks.2.attentions.1.transformer_blocks.3.attn2.processor.to_v_lora.down.weight": (RANK, 2048),
            "down_blocks.2.attentions.1.transformer_blocks.3.attn2.processor.to_v_lora.up.weight": (1280, RANK),
        },
        {  # diffusers LoRA-layer keys
            "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight": (RANK, 2048),
            "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight": (1280, RANK),
        },
    ],
    ids=["peft", "attn-processor", "lora-layer"],
)
def test_sdxl_diffusers_is_accepted(tmp_path: Path, tensors: dict) -> None:
    arrays = {k: np.full(shape, 0.01, np.float32) for k, shape in tensors.items()}
    report = validate_lora(_save(tmp_path / "d.safetensors", arrays))
    assert (report.format, report.base_family, report.rank) == ("diffusers", "sdxl", RANK)
    assert report.n_modules == len(tensors) // 2
    assert report.declared_base is None and report.trigger_words == ()
    assert report.components in (("te1", "te2", "unet"), ("unet",))


def test_sdxl_loha_is_accepted(tmp_path: Path) -> None:
    rng, arrays = _rng(), {}
    for name, (fan_in, fan_out) in {
        "lora_unet_input_blocks_7_1_transformer_blocks_0_attn2_to_k": (2048, 1280),
        "lora_unet_output_blocks_3_1_transformer_blocks_1_attn1_to_q": (640, 640),
    }.items():
        for w in ("w1", "w2"):
            arrays[f"{name}.hada_{w}_a"] = rng.standard_normal((fan_out, RANK)).astype(np.float32)
            arrays[f"{name}.hada_{w}_b"] = rng.standard_normal((RANK, fan_in)).astype(np.float32)
        arrays[f"{name}.alpha"] = np.array(1.0, np.float32)
    report = validate_lora(_save(tmp_path / "loha.safetensors", arrays, {"ss_network_module": "lycoris.kohya"}))
    assert (report.format, report.base_family, report.ranks, report.n_modules) == ("loha", "sdxl", (RANK,), 2)


def test_sdxl_lokr_is_accepted(tmp_path: Path) -> None:
    name = "lora_unet_input_blocks_8_1_transformer_blocks_0_attn2_to_v"  # 2048 -> 1280 = (4x8) kron (320x256)
    arrays = {
        f"{name}.lokr_w1": np.ones((4, 8), np.float16),
        f"{name}.lokr_w2_a": np.ones((320, RANK), np.float16),
        f"{name}.lokr_w2_b": np.ones((RANK, 256), np.float16),
    }
    report = validate_lora(_save(tmp_path / "lokr.safetensors", arrays))
    assert (report.format, report.base_family, report.rank) == ("lokr", "sdxl", RANK)
    assert report.base_family_reason == "cross-attention dim 2048"


def test_bf16_file_is_scanned_and_accepted(tmp_path: Path) -> None:
    arrays = {k: v.astype(np.float32) for k, v in _kohya(SDXL_KOHYA).items()}
    seen: list[tuple[int, int]] = []
    report = validate_lora(
        _craft_bf16(tmp_path / "bf16.safetensors", arrays),
        LoRAFileLimits(scan_chunk_bytes=1024),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.ok and report.dtypes == ("BF16",)
    total = sum(a.size * 2 for a in arrays.values())
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_tiny_test_model_needs_its_context_width_allowed(tmp_path: Path) -> None:
    tiny = {  # the tiny SDXL test model: 64-channel attention, text encoders 32 + 64 = 96 wide
        "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k": (96, 64),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (32, 32),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (64, 64),
    }
    path = _save(tmp_path / "tiny.safetensors", _kohya(tiny))
    with pytest.raises(UnsupportedBaseModelError, match=r"could not recognise .*\(cross-attention dim 96\)"):
        validate_lora(path)
    report = validate_lora(path, LoRAFileLimits(sdxl_context_dims=(2048, 96)))
    assert report.base_family == "sdxl" and report.base_family_reason == "cross-attention dim 96"


# --- refused: not SDXL ---------------------------------------------------------------------


def test_sd15_is_refused_by_name(tmp_path: Path) -> None:
    path = _save(tmp_path / "sd15.safetensors", _kohya(SD15_KOHYA))
    with pytest.raises(UnsupportedBaseModelError) as info:
        validate_lora(path)
    message = str(info.value)
    assert "trained for SD 1.5 (cross-attention dim 768)" in message and "SDXL LoRAs only" in message
    report = inspect_lora(path)
    assert not report.ok and report.base_family == "sd15" and report.error == message
    assert report.error_type == "UnsupportedBaseModelError" and report.format == "kohya"


def test_sd2_is_refused_by_name(tmp_path: Path) -> None:
    modules = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (1024, 640),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (1024, 1024),
    }
    with pytest.raises(UnsupportedBaseModelError, match=r"SD 2\.x \(cross-attention dim 1024\)"):
        validate_lora(_save(tmp_path / "sd2.safetensors", _kohya(modules)))


def test_sd15_text_encoder_only_is_refused(tmp_path: Path) -> None:
    modules = {"lora_te_text_model_encoder_layers_3_mlp_fc1": (768, 3072)}
    with pytest.raises(UnsupportedBaseModelError, match=r"SD 1\.5 \(text-encoder width 768\)"):
        validate_lora(_save(tmp_path / "te.safetensors", _kohya(modules)))


@pytest.mark.parametrize(
    "modules",
    [
        {"transformer.single_transformer_blocks.0.attn.to_q": (3072, 3072)},
        {"lora_unet_double_blocks_0_img_attn_qkv": (3072, 9216)},
        {"lora_transformer_transformer_blocks_0_attn_add_k_proj": (3072, 3072)},
    ],
    ids=["diffusers", "kohya-double-blocks", "lora-transformer"],
)
def test_flux_is_refused(tmp_path: Path, modules: dict) -> None:
    rng, arrays = _rng(), {}
    for name, (fan_in, fan_out) in modules.items():
        peft = name.startswith("transformer.")
        arrays[name + (".lora_A.weight" if peft else ".lora_down.weight")] = rng.random((RANK, fan_in), np.float32)
        arrays[name + (".lora_B.weight" if peft else ".lora_up.weight")] = rng.random((fan_out, RANK), np.float32)
    with pytest.raises(UnsupportedBaseModelError, match=r"trained for Flux .*SDXL LoRAs only"):
        validate_lora(_save(tmp_path / "flux.safetensors", arrays, {"modelspec.architecture": "flux-1-dev/lora"}))


def test_unrecognisable_base_is_refused_and_metadata_claim_noted(tmp_path: Path) -> None:
    conv = "lora_unet_input_blocks_1_0_in_layers_2"  # a 320-channel resnet conv exists in SDXL and SD 1.5
    arrays = {
        f"{conv}.lora_down.weight": np.ones((RANK, 320, 3, 3), np.float16),
        f"{conv}.lora_up.weight": np.ones((320, RANK, 1, 1), np.float16),
    }
    path = _save(tmp_path / "conv.safetensors", arrays, {"ss_base_model_version": "sdxl_base_v1-0"})
    expected = "could not recognise.*claims SDXL but the tensors do not match"
    with pytest.raises(UnsupportedBaseModelError, match=expected):
        validate_lora(path)
    report = inspect_lora(path)
    assert report.base_family == "unknown" and report.declared_base == "sdxl"
    assert "not recognisable" in report.contradictions[0]


def test_metadata_contradiction_is_flagged_and_tensors_win(tmp_path: Path) -> None:
    path = _save(tmp_path / "liar.safetensors", _kohya(SD15_KOHYA), {**SDXL_META, "ss_network_dim": "32"})
    report = inspect_lora(path)
    assert not report.ok and report.base_family == "sd15" and report.declared_base == "sdxl"
    assert any(
        "metadata declares SDXL (modelspec.architecture='stable-diffusion-xl-v1-base/lora')" in c
        and "tensors are SD 1.5 (cross-attention dim 768)" in c
        for c in report.contradictions
    )
    assert any("network dim 32" in c and "rank(s) 4" in c for c in report.contradictions)
    with pytest.raises(UnsupportedBaseModelError, match=r"SD 1\.5"):
        validate_lora(path)


def test_rank_contradiction_does_not_refuse_sdxl(tmp_path: Path) -> None:
    report = validate_lora(_save(tmp_path / "a.safetensors", _kohya(SDXL_KOHYA), {**SDXL_META, "ss_network_dim": "32"}))
    assert report.ok and report.contradictions == ("metadata declares network dim 32 but the tensors have rank(s) 4",)


# --- refused: pickles ----------------------------------------------------------------------


class _Boom:
    """Unpickling this creates ``marker``: proof that nothing was ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".pkl"])
def test_pickle_extensions_are_refused_unopened(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(InvalidLoRAFileError) as info:
        validate_lora(path)
    assert f"is a {suffix} file" in str(info.value) and "pickle can execute arbitrary code" in str(info.value)
    assert "ask the uploader for a .safetensors export" in str(info.value).lower()
    assert not marker.exists()


def test_original_name_decides_the_extension(tmp_path: Path, sdxl_file: Path) -> None:
    with pytest.raises(InvalidLoRAFileError, match=r"'evil\.ckpt' is a \.ckpt file"):
        validate_lora(sdxl_file, original_name="evil.ckpt")
    with pytest.raises(InvalidLoRAFileError, match=r"only \.safetensors LoRA files are accepted, got 'notes\.txt'"):
        validate_lora(sdxl_file, original_name="notes.txt")
    assert validate_lora(sdxl_file, original_name="My LoRA.SAFETENSORS").original_name == "My LoRA.SAFETENSORS"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickle_disguised_as_safetensors_is_refused_unopened(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "innocent.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": _Boom(marker), "pad": "x" * 64}, protocol=protocol))
    report = inspect_lora(path)
    assert not report.ok and "Python pickle stream" in report.error and "named .safetensors" in report.error
    assert report.sha256 == sha256_file(path)  # identified even when refused
    assert not marker.exists()


def test_zip_disguised_as_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "torchsave.safetensors"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    with pytest.raises(InvalidLoRAFileError, match="zip archive, the format torch.save writes"):
        validate_lora(path)


# --- refused: malformed --------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(InvalidLoRAFileError, match=r"the file is empty \(0 bytes\)"):
        validate_lora(tmp_path / "e.safetensors")


@pytest.mark.parametrize("keep", [5, 40, -100])
def test_truncated_file(tmp_path: Path, sdxl_file: Path, keep: int) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(sdxl_file.read_bytes()[:keep])
    report = inspect_lora(cut)
    assert not report.ok and "truncated" in report.error and report.error_type == "InvalidLoRAFileError"


def test_header_length_beyond_file(tmp_path: Path) -> None:
    path = _craft(tmp_path / "h.safetensors", {}, b"", length=10_000)
    with pytest.raises(InvalidLoRAFileError, match=r"header length field says 10000 bytes, beyond the end"):
        validate_lora(path)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b'{"t": {"dtype": "F16", ', "the header is not valid JSON"),
        (b'{"t": NaN}', "the header is not valid JSON"),
        (b'{"t": 1, "t": 2}', "the header names 't' more than once"),
        (b"[1, 2]", "does not start with '{'"),
        (b"\xff\xfe{}", "does not start with '{'"),
        (b'{"t": "\xff"}', "not valid JSON"),
    ],
)
def test_malformed_header(tmp_path: Path, header: bytes, expected: str) -> None:
    with pytest.raises(InvalidLoRAFileError, match=expected):
        validate_lora(_craft(tmp_path / "m.safetensors", {}, b"", header=header))


@pytest.mark.parametrize(
    ("entries", "data_len", "expected"),
    [
        (_two_f16(dtype="F17"), 16, "has an unknown dtype 'F17'"),
        (_two_f16(offsets=((0, 8), (4, 12))), 12, "overlap in the data"),
        (_two_f16(offsets=((0, 8), (8, 24))), 16, "ends at byte 24 of the data section, which has only 16"),
        (_two_f16(shapes=([4], [3])), 16, r"shape \[3\] of F16 needs 6 bytes but its data_offsets span 8"),
        (_two_f16(shapes=([4], [-4])), 16, "invalid shape"),
        (_two_f16(offsets=((0, 8), (16, 24))), 24, "bytes 8-16 of the data section belong to no tensor"),
        (_two_f16(), 24, "8 bytes at the end of the data section belong to no tensor"),
        ({"t": {"dtype": "F16", "shape": [1]}}, 0, "needs dtype, shape and data_offsets"),
        ({"t": {"dtype": "F16", "shape": [1], "data_offsets": [2, 0]}}, 2, "invalid data_offsets"),
    ],
)
def test_inconsistent_tensor_table(tmp_path: Path, entries: dict, data_len: int, expected: str) -> None:
    with pytest.raises(InvalidLoRAFileError, match=expected):
        validate_lora(_craft(tmp_path / "t.safetensors", entries, b"\0" * data_len))


def test_limits_are_enforced(sdxl_file: Path) -> None:
    with pytest.raises(InvalidLoRAFileError, match=r"MiB, larger than the 0\.0 MiB limit"):
        validate_lora(sdxl_file, LoRAFileLimits(max_file_bytes=1000))
    with pytest.raises(InvalidLoRAFileError, match="more than the 64-byte limit"):
        validate_lora(sdxl_file, LoRAFileLimits(max_header_bytes=64))
    with pytest.raises(InvalidLoRAFileError, match="has 24 tensors, more than the limit of 3"):
        validate_lora(sdxl_file, LoRAFileLimits(max_tensors=3))
    report = inspect_lora(sdxl_file, LoRAFileLimits(max_file_bytes=1000))
    assert report.sha256 is None and report.size_bytes == sdxl_file.stat().st_size  # too big to hash


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_limits_reject_nonsense(bad) -> None:
    with pytest.raises(InvalidInputError, match="max_tensors must hold positive integers"):
        LoRAFileLimits(max_tensors=bad)


@pytest.mark.parametrize(("value", "kind", "dtype"), [(np.nan, "NaN", np.float16), (np.inf, "inf", np.float32)])
def test_non_finite_values_are_refused(tmp_path: Path, value: float, kind: str, dtype) -> None:
    tensors = _kohya(SDXL_KOHYA, dtype=dtype)
    key = "lora_te2_text_model_encoder_layers_11_mlp_fc1.lora_up.weight"
    tensors[key][-1, -1] = value
    with pytest.raises(InvalidLoRAFileError) as info:
        validate_lora(_save(tmp_path / "nan.safetensors", tensors), LoRAFileLimits(scan_chunk_bytes=256))
    assert f"tensor '{key}' ({kind}) contains non-finite values" in str(info.value)


def test_bf16_nan_is_refused_with_tensor_name(tmp_path: Path) -> None:
    arrays = {k: v.astype(np.float32) for k, v in _kohya(SDXL_KOHYA).items()}
    key = "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v.lora_down.weight"
    arrays[key][2, 1000] = np.nan
    report = inspect_lora(_craft_bf16(tmp_path / "b.safetensors", arrays))
    assert not report.ok and f"'{key}' (NaN)" in report.error
    assert report.base_family == "sdxl"  # what was learned before the refusal is kept


def test_value_scan_can_be_disabled(tmp_path: Path) -> None:
    tensors = _kohya(SDXL_KOHYA)
    tensors["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"][0, 0] = np.inf
    assert validate_lora(_save(tmp_path / "i.safetensors", tensors), LoRAFileLimits(scan_values=False)).ok


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"foo.bar": np.ones(2, np.float32)}, "unrecognised LoRA format: expected kohya"),
        (
            {
                "model.diffusion_model.input_blocks.0.0.weight": np.ones((4, 4), np.float32),
                "model.diffusion_model.input_blocks.0.0.bias": np.ones(4, np.float32),
            },
            "look like a full model or another kind of weights, not a LoRA adapter",
        ),
        (
            {"lora_unet_middle_block_1_attn2_to_k.lora_down.weight": np.ones((4, 2048), np.float16)},
            r"has a down \(A\) weight but no up \(B\) weight",
        ),
        (
            {
                "lora_unet_a_attn2_to_k.lora_down.weight": np.ones((4, 2048), np.float16),
                "lora_unet_a_attn2_to_k.lora_up.weight": np.ones((640, 8), np.float16),
            },
            "does not take the down weight's rank 4",
        ),
        (
            {"lora_unet_a.hada_w1_a": np.ones((640, 4), np.float16), "lora_unet_a.hada_w1_b": np.ones((4, 640), np.float16)},
            "missing w2_a, w2_b",
        ),
    ],
    ids=["unknown", "full-model", "missing-up", "rank-mismatch", "loha-incomplete"],
)
def test_broken_or_unknown_lora_structure(tmp_path: Path, arrays: dict, expected: str) -> None:
    with pytest.raises(InvalidLoRAFileError, match=expected):
        validate_lora(_save(tmp_path / "x.safetensors", arrays))


def test_malformed_metadata_is_kept_raw_with_warnings(tmp_path: Path) -> None:
    meta = {**SDXL_META, "ss_tag_frequency": "{not json", "ss_network_dim": "abc", "ss_resolution": "huge"}
    report = validate_lora(_save(tmp_path / "a.safetensors", _kohya(SDXL_KOHYA), meta))
    assert report.ok and report.raw_metadata == meta
    assert report.metadata["ss_network_dim"] == "abc" and report.metadata["ss_resolution"] == "huge"
    assert "top_tags" not in report.metadata and report.trigger_words == ()
    text = " | ".join(report.warnings)
    assert "ss_tag_frequency is not valid JSON" in text and "ss_network_dim='abc' could not be parsed" in text
    assert "ss_resolution='huge'" in text


def test_non_string_metadata_values_are_refused_since_safetensors_cannot_open_them(tmp_path: Path) -> None:
    """Found by the fuzzer: these were accepted with a warning, then failed in the loader."""
    arrays = {k: v.astype(np.float32) for k, v in _kohya(SDXL_KOHYA).items()}
    path = _craft_bf16(tmp_path / "m.safetensors", arrays, metadata={"ss_network_dim": 4, "ss_output_name": "x"})
    report = inspect_lora(path)
    assert not report.ok and report.error_type == "InvalidLoRAFileError"
    assert report.error == (
        "metadata 'ss_network_dim' is a number, not text: safetensors stores metadata as text only, so it cannot open this file"
    )
    path = _craft_bf16(tmp_path / "n.safetensors", arrays, metadata=None)
    assert validate_lora(path).raw_metadata == {}  # no __metadata__ at all is fine


# --- identity and names --------------------------------------------------------------------


def test_same_bytes_same_sha256(tmp_path: Path, sdxl_file: Path) -> None:
    copy = tmp_path / "renamed upload.safetensors"
    copy.write_bytes(sdxl_file.read_bytes())
    assert validate_lora(copy).sha256 == validate_lora(sdxl_file).sha256 == sha256_file(sdxl_file)
    flipped = bytearray(sdxl_file.read_bytes())
    flipped[-1] ^= 1
    copy.write_bytes(bytes(flipped))
    assert sha256_file(copy) != sha256_file(sdxl_file)
    assert sha256_file(copy) == hashlib.sha256(bytes(flipped)).hexdigest()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("papercut_xl.safetensors", "papercut_xl.safetensors"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\lora.safetensors", "lora.safetensors"),
        ("..／..／etc／passwd", "passwd"),  # fullwidth solidus becomes "/" under NFKC
        ("..", "upload"),
        ("", "upload"),
        ("  /  ", "upload"),
        (".hidden.safetensors", "hidden.safetensors"),
        ("evil\u202egpj.safetensors", "evilgpj.safetensors"),
        ("a\x00b\nc\x7f.safetensors", "abc.safetensors"),
        ("ｆｕｌｌ ﬁle.safetensors", "full file.safetensors"),
        ('a<b>:c?"|*.safetensors', "a_b__c____.safetensors"),
        ("CON.safetensors", "_CON.safetensors"),
        ("héllo wörld.safetensors", "héllo wörld.safetensors"),
    ],
)
def test_safe_filename(given: str, expected: str) -> None:
    assert safe_filename(given) == expected


@pytest.mark.parametrize("stem", ["x" * 500, "漢" * 200])
def test_safe_filename_caps_length_in_bytes_and_keeps_extension(stem: str) -> None:
    name = safe_filename(stem + ".safetensors", max_length=120)
    assert len(name.encode("utf-8")) <= 120 and name.endswith(".safetensors") and name.startswith(stem[:10])


def test_safe_filename_rejects_non_strings() -> None:
    with pytest.raises(InvalidInputError, match="file name must be a string"):
        safe_filename(b"a.safetensors")  # type: ignore[arg-type]


def test_inspect_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no LoRA file at"):
        inspect_lora(tmp_path / "missing.safetensors")


def test_report_is_frozen(sdxl_file: Path) -> None:
    report = inspect_lora(sdxl_file)
    assert isinstance(report, LoRAFileReport)
    with pytest.raises(AttributeError):
        report.ok = False  # type: ignore[misc]


def test_import_is_cheap() -> None:
    code = "import sys, carlos.files.validate; assert 'torch' not in sys.modules and 'safetensors' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
