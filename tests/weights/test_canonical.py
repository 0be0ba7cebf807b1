"""carlos.weights.canonical and .tensors: every accepted format read into canonical SDXL modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import carlos.weights.canonical as canonical
from carlos.errors import InvalidLoRAFileError
from carlos.files.testing import make_test_lora
from carlos.files.validate import LoRAFileLimits
from carlos.weights.canonical import AdapterFile, ArrayAdapter, block_of, canonical_name, unet_path
from carlos.weights.tensors import TensorReader, to_bf16_words, widen, write_safetensors

TINY = LoRAFileLimits(sdxl_context_dims=(2048, 96))
TE = "text_model_encoder_layers_0_self_attn_q_proj"


def _dense(source, name: str) -> np.ndarray:
    return np.asarray(source.dense(name), dtype=np.float64)


def test_sgm_and_diffusers_names_meet() -> None:
    assert unet_path("input_blocks_4_1_transformer_blocks_0_attn1_to_q") == "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert unet_path("input_blocks_8_1_proj_in") == "down_blocks_2_attentions_1_proj_in"
    assert unet_path("input_blocks_3_0_op") == "down_blocks_0_downsamplers_0_conv"
    assert unet_path("input_blocks_2_0_in_layers_2") == "down_blocks_0_resnets_1_conv1"
    assert unet_path("middle_block_1_transformer_blocks_9_ff_net_2") == "mid_block_attentions_0_transformer_blocks_9_ff_net_2"
    assert unet_path("middle_block_2_emb_layers_1") == "mid_block_resnets_1_time_emb_proj"
    assert unet_path("output_blocks_5_1_proj_out") == "up_blocks_1_attentions_2_proj_out"
    assert unet_path("output_blocks_2_2_conv") == "up_blocks_0_upsamplers_0_conv"
    assert unet_path("output_blocks_6_0_skip_connection") == "up_blocks_2_resnets_0_conv_shortcut"
    assert unet_path("down_blocks_1_attentions_0_proj_in") == "down_blocks_1_attentions_0_proj_in"  # diffusers: unchanged
    assert canonical_name("te", "text_model_encoder_layers_3_mlp_fc1") == "te1:encoder_layers_3_mlp_fc1"
    assert canonical_name("unet", "up_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out") == (
        "unet:up_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0"
    )
    assert block_of("unet:mid_block_attentions_0_proj_in") == "unet:mid_block" and block_of("te2:encoder_layers_0_mlp_fc1") == "te2"


def test_kohya_and_diffusers_test_loras_are_the_same_modules_and_weights(tmp_path: Path) -> None:
    with (
        AdapterFile.open(make_test_lora(tmp_path / "k.safetensors", seed=5, layout="kohya", alpha=2.0), TINY) as k,
        AdapterFile.open(make_test_lora(tmp_path / "d.safetensors", seed=5, layout="diffusers", alpha=2.0), TINY) as d,
    ):
        assert k.format == "kohya" and d.format == "diffusers"
        assert list(k.modules) == list(d.modules) and len(k.modules) == 168
        assert {m.component for m in k.modules.values()} == {"unet", "te1", "te2"}
        assert all(m.scale == 0.5 for m in k.modules.values())  # alpha 2 / rank 4
        for name in list(k.modules)[::17]:
            np.testing.assert_allclose(_dense(k, name), _dense(d, name), rtol=2e-3, atol=1e-4)  # fp16 files


def test_blocks_stream_the_factors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canonical, "BLOCK", 5)  # many blocks even on tiny modules
    path = make_test_lora(tmp_path / "k.safetensors", seed=1, rank=3, alpha=6.0, dtype="float32")
    from safetensors.numpy import load_file

    raw = load_file(str(path))
    with AdapterFile.open(path, TINY) as f:
        name = "unet:down_blocks_1_attentions_0_transformer_blocks_1_ff_net_0_proj"
        m = f.modules[name]
        key = f"lora_unet_{m.source.removeprefix('lora_unet_')}"
        ups, downs = list(f.up_blocks(name)), list(f.down_blocks(name))
        assert len(ups) == -(-m.out_features // 5) and len(downs) == -(-m.in_features // 5)
        np.testing.assert_array_equal(np.concatenate(ups), raw[f"{key}.lora_up.weight"] * 2.0)
        np.testing.assert_array_equal(np.concatenate(downs, axis=1), raw[f"{key}.lora_down.weight"])


def test_bf16_and_f16_are_widened_exactly(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.0e-5, 65504.0], dtype=np.float32)
    words = to_bf16_words(values)
    assert words.tolist()[:4] == [0x3F80, 0xC020, 0x3F80, 0x3F82]  # ties go to even
    path = write_safetensors(tmp_path / "t.safetensors", {"a": values.reshape(2, 3)}, dtype="BF16")
    from carlos.files.header import parse_header, tensor_table

    with open(path, "rb") as h:
        header, start = parse_header(h, path.stat().st_size, 1 << 20)
    info = tensor_table(header, path.stat().st_size - start, 10)["a"]
    with TensorReader(path, start) as reader:
        got = reader.whole(info)
        assert got.dtype == np.float32 and got.shape == (2, 3)
        np.testing.assert_array_equal(got.ravel(), widen(words, "BF16"))
        np.testing.assert_allclose(got.ravel(), values, rtol=2**-8)
        np.testing.assert_array_equal(reader.rows(info, 1, 2), got[1:])
    np.testing.assert_array_equal(widen(values.astype("<f2"), "F16"), values.astype(np.float16).astype(np.float32))


def _lyco_file(tmp_path: Path, tensors: dict[str, np.ndarray], name: str = "l.safetensors") -> Path:
    """A LyCORIS-keyed file that validates as SDXL (both text encoders present)."""
    rng = np.random.default_rng(9)
    for comp in ("te1", "te2"):
        base = f"lora_{comp}_text_model_encoder_layers_1_mlp_fc2"
        tensors.setdefault(f"{base}.lora_down.weight", rng.standard_normal((2, 8)).astype(np.float32))
        tensors.setdefault(f"{base}.lora_up.weight", rng.standard_normal((4, 2)).astype(np.float32))
    return write_safetensors(tmp_path / name, tensors, metadata={"ss_base_model_version": "sdxl_base_v1-0"})


def test_loha_linear_and_tucker_conv_materialize_as_lycoris_defines(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    r, out, inp, kh = 3, 6, 5, 3
    lin = {f"w{i}_{ab}": rng.standard_normal(s).astype(np.float32) for i in (1, 2) for ab, s in (("a", (out, r)), ("b", (r, inp)))}
    conv = {f"w{i}_{ab}": rng.standard_normal((r, n)).astype(np.float32) for i in (1, 2) for ab, n in (("a", out), ("b", inp))}
    conv |= {f"t{i}": rng.standard_normal((r, r, kh, kh)).astype(np.float32) for i in (1, 2)}
    tensors = {f"lora_te1_{TE}.hada_{k}": v for k, v in lin.items()} | {f"lora_te1_{TE}.alpha": np.array(6.0, np.float32)}
    tensors |= {f"lora_unet_input_blocks_1_0_in_layers_2.hada_{k}": v for k, v in conv.items()}
    with AdapterFile.open(_lyco_file(tmp_path, tensors)) as f:
        assert f.format == "loha"
        m = f.modules[f"te1:{TE.removeprefix('text_model_')}"]
        assert (m.kind, m.adapter, m.shape, m.scale) == ("dense", "loha", (out, inp), 2.0)
        ref = (lin["w1_a"] @ lin["w1_b"]) * (lin["w2_a"] @ lin["w2_b"]) * 2.0
        np.testing.assert_allclose(_dense(f, m.name), ref, rtol=1e-5)
        c = f.modules["unet:down_blocks_0_resnets_0_conv1"]
        assert c.shape == (out, inp * kh * kh)
        halves = []
        for i in (1, 2):  # W[:, :, h, w] = w_aᵀ · t[:, :, h, w] · w_b, written out per kernel position
            w = np.zeros((out, inp, kh, kh))
            for h in range(kh):
                for x in range(kh):
                    w[:, :, h, x] = conv[f"w{i}_a"].T @ conv[f"t{i}"][:, :, h, x] @ conv[f"w{i}_b"]
            halves.append(w)
        np.testing.assert_allclose(_dense(f, c.name), (halves[0] * halves[1]).reshape(out, -1), rtol=1e-4, atol=1e-5)


def test_lokr_full_decomposed_and_tucker_materialize_as_kronecker_products(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((2, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 5)).astype(np.float32)
    w2a, w2b = rng.standard_normal((4, 2)).astype(np.float32), rng.standard_normal((2, 5)).astype(np.float32)
    t2 = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    ta, tb = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 5)).astype(np.float32)
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_"
    tensors = {f"{te2}q_proj.lokr_w1": w1, f"{te2}q_proj.lokr_w2": w2, f"{te2}q_proj.alpha": np.array(7.0, np.float32)}
    tensors |= {
        f"{te2}k_proj.lokr_w1": w1,
        f"{te2}k_proj.lokr_w2_a": w2a,
        f"{te2}k_proj.lokr_w2_b": w2b,
        f"{te2}k_proj.alpha": np.array(1.0, np.float32),
    }
    conv = "lora_unet_input_blocks_2_0_out_layers_3"
    tensors |= {f"{conv}.lokr_w1": w1, f"{conv}.lokr_t2": t2, f"{conv}.lokr_w2_a": ta, f"{conv}.lokr_w2_b": tb}

    def kron(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # block by block, not np.kron
        out = np.zeros((a.shape[0] * b.shape[0], a.shape[1] * b.shape[1]))
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                out[i * b.shape[0] : (i + 1) * b.shape[0], j * b.shape[1] : (j + 1) * b.shape[1]] = a[i, j] * b
        return out

    with AdapterFile.open(_lyco_file(tmp_path, tensors)) as f:
        assert f.format == "lokr"
        full = f.modules["te2:encoder_layers_0_self_attn_q_proj"]
        assert full.scale == 1.0  # both factors full: alpha is ignored, as in LyCORIS
        np.testing.assert_allclose(_dense(f, full.name), kron(w1, w2), rtol=1e-5)
        dec = f.modules["te2:encoder_layers_0_self_attn_k_proj"]
        assert dec.scale == 0.5  # alpha 1 / rank 2
        np.testing.assert_allclose(_dense(f, dec.name), kron(w1, w2a @ w2b) * 0.5, rtol=1e-5)
        tuck = f.modules["unet:down_blocks_0_resnets_1_conv2"]
        w2t = np.einsum("ijhw,ip,jq->pqhw", t2, ta, tb)  # (4, 5, 3, 3)
        ref = np.zeros((8, 15, 3, 3))
        for h in range(3):
            for x in range(3):
                ref[:, :, h, x] = kron(w1, w2t[:, :, h, x])
        assert tuck.shape == (8, 15 * 9)
        np.testing.assert_allclose(_dense(f, tuck.name), ref.reshape(8, -1), rtol=1e-4, atol=1e-5)


def test_kohya_conv_with_a_tucker_mid_and_peft_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    up, mid, down = rng.standard_normal((6, 2, 1, 1)), rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 4, 1, 1))
    key = "lora_unet_input_blocks_1_0_in_layers_2"
    tensors = {f"{key}.lora_up.weight": up, f"{key}.lora_mid.weight": mid, f"{key}.lora_down.weight": down}
    with AdapterFile.open(_lyco_file(tmp_path, {k: v.astype(np.float32) for k, v in tensors.items()})) as f:
        m = f.modules["unet:down_blocks_0_resnets_0_conv1"]
        ref = np.einsum("oa,abhw,bi->oihw", up[:, :, 0, 0], mid, down[:, :, 0, 0])
        np.testing.assert_allclose(_dense(f, m.name), ref.reshape(6, -1), rtol=1e-5, atol=1e-5)
    peft = {
        "unet.down_blocks.1.attentions.0.proj_in.lora_A.weight": rng.standard_normal((2, 8)).astype(np.float32),
        "unet.down_blocks.1.attentions.0.proj_in.lora_B.weight": rng.standard_normal((8, 2)).astype(np.float32),
        "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": rng.standard_normal((2, 8)).astype(np.float32),
        "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_B.weight": rng.standard_normal((4, 2)).astype(np.float32),
    }
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": 2, "unet.lora_alpha": 8, "text_encoder_2.r": 2, "text_encoder_2.lora_alpha": 2})}
    path = write_safetensors(tmp_path / "peft.safetensors", peft, metadata=meta)
    with AdapterFile.open(path) as f:
        assert f.modules["unet:down_blocks_1_attentions_0_proj_in"].scale == 4.0
        assert f.modules["te2:encoder_layers_0_mlp_fc1"].scale == 1.0


def test_untrusted_files_are_validated_first(tmp_path: Path) -> None:
    bad = tmp_path / "nan.safetensors"
    tensors = {
        f"lora_te1_{TE}.lora_down.weight": np.full((2, 8), np.nan, np.float32),
        f"lora_te1_{TE}.lora_up.weight": np.ones((4, 2), np.float32),
    }
    _lyco_file(tmp_path, tensors, bad.name)
    with pytest.raises(InvalidLoRAFileError, match="non-finite"):
        AdapterFile.open(bad)
    pickle_named = tmp_path / "x.pt"
    pickle_named.write_bytes(b"\x80\x04.")
    with pytest.raises(InvalidLoRAFileError, match="pickle"):
        AdapterFile.open(pickle_named)


def test_array_adapter_checks_its_input() -> None:
    rng = np.random.default_rng(3)
    a = ArrayAdapter({"unet:x": (rng.standard_normal((4, 2)), rng.standard_normal((2, 3)))}, {"te1:y": rng.standard_normal((2, 2))})
    assert [m.kind for m in a.modules.values()] == ["dense", "lora"]
    from carlos.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        ArrayAdapter({"unet:x": (np.ones((4, 2)), np.ones((3, 3)))})
    with pytest.raises(InvalidInputError):
        ArrayAdapter({"vae:x": (np.ones((4, 2)), np.ones((2, 3)))})
