"""Regression tests for the bugs the validator fuzzer (test_fuzz_validator.py) found, one per bug.

Each file here is hand-made: a small valid SDXL kohya LoRA (one cross-attention module) with
the one thing changed that broke the validator. Before the fixes each raised (TypeError,
OverflowError, RecursionError), hung (a quadratic or catastrophic-backtracking path), was
accepted although safetensors or the diffusion backend cannot load it, or gave a report
that cannot be stored as JSON.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carlos.files.validate import LoRAFileReport, inspect_lora

MODULE = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"  # reads SDXL's 2048-wide text embedding
HANG_S = 60.0  # a hang guard, not a speed target: each file here takes milliseconds


def lora_bytes(
    edit: Callable[[dict[str, Any]], None] | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    dtype: str = "F16",
    raw: dict[str, str] | None = None,
) -> bytes:
    """Safetensors bytes of a valid SDXL LoRA, after ``edit`` changes its header dict.

    ``raw`` replaces JSON string markers with text json.dumps cannot write (``-0``, ``1e400``).
    """
    np_dtype = {"F16": "<f2", "F32": "<f4"}[dtype]
    arrays = {
        f"{MODULE}.lora_down.weight": np.full((4, 2048), 0.01, np_dtype),
        f"{MODULE}.lora_up.weight": np.full((640, 4), 0.01, np_dtype),
        f"{MODULE}.alpha": np.array(2.0, np_dtype),
    }
    header: dict[str, Any] = {"__metadata__": {"ss_base_model_version": "sdxl_base_v1-0", **(metadata or {})}}
    data = b""
    for name, arr in arrays.items():
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + arr.nbytes]}
        data += arr.tobytes()
    if edit is not None:
        edit(header)
    text = json.dumps(header).encode()
    for marker, token in (raw or {}).items():
        text = text.replace(json.dumps(marker).encode(), token.encode())
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


@contextmanager
def hang_guard() -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"inspect_lora ran for more than {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def inspect(tmp_path: Path, blob: bytes) -> LoRAFileReport:
    path = tmp_path / "upload.safetensors"
    path.write_bytes(blob)
    with hang_guard():
        report = inspect_lora(path)
    json.dumps(report.to_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8")  # storable as a JSON column
    return report


def refused(tmp_path: Path, blob: bytes, expected: str) -> LoRAFileReport:
    report = inspect(tmp_path, blob)
    assert not report.ok and report.error_type == "InvalidLoRAFileError", report.error
    assert expected in report.error, report.error
    return report


def with_tensor(name: str, entry: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """An edit adding a zero-byte tensor at the end of the data section."""

    def edit(header: dict[str, Any]) -> None:
        end = max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
        header[name] = {"data_offsets": [end, end], **entry}

    return edit


def test_the_base_file_is_valid(tmp_path: Path) -> None:
    report = inspect(tmp_path, lora_bytes())
    assert report.ok and report.base_family == "sdxl" and report.n_tensors == 3


# --- crashes -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [["F16"], {"F16": 1}])
def test_unhashable_dtype_is_refused_not_a_type_error(tmp_path: Path, dtype: Any) -> None:
    refused(tmp_path, lora_bytes(lambda h: h[f"{MODULE}.alpha"].update(dtype=dtype)), "has an unknown dtype")


def test_shape_of_ten_to_the_4000_is_refused_not_an_overflow_error(tmp_path: Path) -> None:
    blob = lora_bytes(lambda h: h[f"{MODULE}.alpha"].update(shape=[10**4000]))  # the message formatted bits / 8 as a float
    refused(tmp_path, blob, "not valid JSON (the number 100000000000000000000000… does not fit in 64 bits)")


def test_deep_json_in_network_args_keeps_the_report_serializable(tmp_path: Path) -> None:
    """json.loads read 900 levels; dataclasses.asdict (to_dict) then overflowed the stack."""
    report = inspect(tmp_path, lora_bytes(metadata={"ss_network_args": "[" * 900 + "]" * 900}))
    assert report.ok and report.metadata["ss_network_args"] == "[" * 900 + "]" * 900  # kept as text
    assert any("ss_network_args=" in w and "could not be parsed" in w for w in report.warnings)


@pytest.mark.parametrize("count", ["Infinity", "1e400", "NaN", "1" + "0" * 4000])
def test_impossible_tag_counts_make_the_tags_unreadable(tmp_path: Path, count: str) -> None:
    """int(inf) raised OverflowError; 4000-digit counts summed past what json.dumps writes."""
    tags = '{"1_set": {"cat": ' + count + ', "dog": 2}, "2_set": {"cat": ' + count + "}}"
    report = inspect(tmp_path, lora_bytes(metadata={"ss_tag_frequency": tags}))
    assert report.ok and "top_tags" not in report.metadata
    assert "metadata ss_tag_frequency is not valid JSON; kept as text" in report.warnings


def test_negative_and_fractional_tag_counts(tmp_path: Path) -> None:
    tags = '{"1_set": {"cat": -3, "dog": 2, "owl": 1.5, "bat": true}}'
    assert inspect(tmp_path, lora_bytes(metadata={"ss_tag_frequency": tags})).metadata["top_tags"] == [["dog", 2], ["owl", 1]]


# --- time bombs ----------------------------------------------------------------------------


def test_duplicate_key_search_is_linear(tmp_path: Path) -> None:
    """The duplicate was found with list.count per key: quadratic, 100k keys took minutes."""

    def edit(header: dict[str, Any]) -> None:
        header["__metadata__"].update({f"k{i}": "" for i in range(100_000)} | {"@@dup@@": ""})

    refused(tmp_path, lora_bytes(edit, raw={"@@dup@@": '"k99999"'}), "the header names 'k99999' more than once")


@pytest.mark.parametrize("value", ["1" + " " * 100_000 + "x", "(" + " " * 100_000, " " * 100_000 + "1 ,"])
def test_resolution_metadata_is_no_regex_time_bomb(tmp_path: Path, value: str) -> None:
    """The resolution regex backtracked cubically: 600 spaces took 0.5 s, 100k for ever."""
    report = inspect(tmp_path, lora_bytes(metadata={"ss_resolution": value}))
    assert report.ok and report.metadata["ss_resolution"] == value
    assert any("ss_resolution=" in w for w in report.warnings)


def test_resolution_metadata_still_parses(tmp_path: Path) -> None:
    for text, expected in [("(1024, 768)", [1024, 768]), (" 1024x1024 ", [1024, 1024]), ("[832,1216]", [832, 1216]), ("896", [896, 896])]:
        assert inspect(tmp_path, lora_bytes(metadata={"ss_resolution": text})).metadata["ss_resolution"] == expected


def test_trigger_phrase_bomb_is_capped(tmp_path: Path) -> None:
    phrase = ", ".join(f"w{i}" for i in range(100_000)) + ", " + "x" * 10_000
    report = inspect(tmp_path, lora_bytes(metadata={"modelspec.trigger_phrase": phrase}))
    assert report.trigger_words == tuple(f"w{i}" for i in range(20))


# --- accepted, but safetensors (so diffusers) cannot load it -------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ([2**40, 2**40, 0], "of 2**63 elements or more"),  # safetensors multiplies in 64 bits, left to right
        ([0, 2**32, 2**32], "of 2**63 elements or more"),  # torch's strides overflow ("Stride calculation overflowed")
        ([0, 2**63], "has an invalid shape"),  # torch sizes are int64
        ([2**70, 0], "not valid JSON (the number 1180591620717411303424 does not fit in 64 bits)"),
        ("@@-0@@", "not valid JSON (-0 is not an integer)"),  # Python reads 0, safetensors a float
    ],
)
def test_zero_element_shapes_safetensors_cannot_read_are_refused(tmp_path: Path, shape: Any, expected: str) -> None:
    blob = lora_bytes(with_tensor("extra", {"dtype": "F16", "shape": [shape] if isinstance(shape, str) else shape}), raw={"@@-0@@": "-0"})
    refused(tmp_path, blob, expected)


def test_negative_zero_offset_is_refused(tmp_path: Path) -> None:
    blob = lora_bytes(lambda h: h[f"{MODULE}.lora_down.weight"].update(data_offsets=["@@-0@@", 16384]), raw={"@@-0@@": "-0"})
    refused(tmp_path, blob, "-0 is not an integer")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda h: h["__metadata__"].update(ss_output_name="\ud800"), "lone UTF-16 surrogate ('\\ud800')"),
        (lambda h: h.update({"lone\udc00": h.pop(f"{MODULE}.alpha")}), "lone UTF-16 surrogate"),
        (lambda h: h[f"{MODULE}.alpha"].update(x="@@inf@@"), "the number 1e400 is too large for a float"),
        (lambda h: h[f"{MODULE}.alpha"].update(x="@@big@@"), "does not fit in 64 bits"),
        (lambda h: h[f"{MODULE}.alpha"].update(x="@@deep@@"), "nests arrays or objects more than 64 levels deep"),
        (lambda h: h.update(__metadata__=["x"]), "__metadata__ is a list, not an object of text values"),
        (lambda h: h["__metadata__"].update(ss_v2=None), "metadata 'ss_v2' is null, not text"),
    ],
    ids=["surrogate-value", "surrogate-name", "1e400", "2**70", "200-levels", "metadata-list", "metadata-null-value"],
)
def test_header_json_safetensors_refuses_is_refused(tmp_path: Path, edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    raw = {"@@inf@@": "1e400", "@@big@@": str(2**70), "@@deep@@": "[" * 200 + "]" * 200}
    refused(tmp_path, lora_bytes(edit, raw=raw), expected)


def test_dtypes_torch_cannot_load_are_refused(tmp_path: Path) -> None:
    refused(tmp_path, lora_bytes(with_tensor("extra", {"dtype": "F6_E2M3", "shape": [0]})), "which PyTorch cannot load")
    blob = lora_bytes(with_tensor("extra", {"dtype": "F4", "shape": [0, 3]}))
    refused(tmp_path, blob, "F4 packs two values a byte, so its last dimension must be even")


# --- accepted, but the backend cannot use it -----------------------------------------------


def retype(role: str, dtype: str, factor: float) -> Callable[[dict[str, Any]], None]:
    """An edit giving tensor ``role`` another dtype over the same bytes (its last dim scaled by ``factor``)."""

    def edit(header: dict[str, Any]) -> None:
        entry = header[f"{MODULE}.{role}"]
        entry["dtype"] = dtype
        entry["shape"] = [*entry["shape"][:-1], int(entry["shape"][-1] * factor)] if entry["shape"] else [int(factor)]

    return edit


@pytest.mark.parametrize(
    ("role", "dtype", "factor"),
    [("lora_down.weight", "I32", 1), ("lora_up.weight", "BOOL", 4), ("lora_down.weight", "U8", 4), ("lora_up.weight", "C64", 0.5)],
)
def test_integer_bool_and_complex_lora_weights_are_refused(tmp_path: Path, role: str, dtype: str, factor: float) -> None:
    """They were accepted; diffusers then failed (ints, bool) or made the layer complex."""
    blob = lora_bytes(retype(role, dtype, factor), dtype="F32")
    refused(tmp_path, blob, f"weight is {dtype}; LoRA weights must be one of F16, BF16, F32, F64, F8_E4M3, F8_E5M2")


def test_complex_alpha_is_refused_and_integer_alpha_accepted(tmp_path: Path) -> None:
    def complex_alpha(header: dict[str, Any]) -> None:  # the alpha is last in the data: 4 more bytes follow
        header[f"{MODULE}.alpha"].update(dtype="C64", data_offsets=[16384 * 2 + 10240, 16384 * 2 + 10240 + 8])

    refused(tmp_path, lora_bytes(complex_alpha, dtype="F32") + bytes(4), "its alpha is C64")

    def int_alpha(header: dict[str, Any]) -> None:
        header[f"{MODULE}.alpha"]["dtype"] = "I32"

    assert inspect(tmp_path, lora_bytes(int_alpha, dtype="F32")).ok  # LyCORIS writes integer alphas


def test_rank_zero_module_is_refused(tmp_path: Path) -> None:
    def rank_zero(header: dict[str, Any]) -> None:
        header[f"{MODULE}.lora_down.weight"].update(shape=[0, 2048], data_offsets=[0, 0])
        header[f"{MODULE}.lora_up.weight"].update(shape=[640, 0], data_offsets=[0, 0])
        header[f"{MODULE}.alpha"]["data_offsets"] = [0, 2]

    blob = lora_bytes(rank_zero)
    blob = blob[: len(blob) - 2 - 4 * 2048 * 2 - 640 * 4 * 2] + blob[-2:]  # only the alpha's bytes stay
    refused(tmp_path, blob, "weight is empty")


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0"])
def test_nan_and_inf_in_8_bit_floats_are_refused(tmp_path: Path, dtype: str) -> None:
    """F8 tensors were not scanned. Every byte pattern is read as torch reads it."""
    import torch

    torch_dtype = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "F8_E4M3FNUZ": torch.float8_e4m3fnuz}
    torch_dtype |= {"F8_E5M2FNUZ": torch.float8_e5m2fnuz, "F8_E8M0": torch.float8_e8m0fnu}
    values = torch.arange(256, dtype=torch.uint8).view(torch_dtype[dtype]).float().numpy()
    finite = bytes(b for b in range(256) if np.isfinite(values[b]))
    end = 16384 + 5120 + 2  # the end of the base file's data

    def extra(n: int) -> Callable[[dict[str, Any]], None]:
        return lambda h: h.update(extra={"dtype": dtype, "shape": [n], "data_offsets": [end, end + n]})

    assert inspect(tmp_path, lora_bytes(extra(len(finite))) + finite).ok
    for byte in sorted(set(range(256)) - set(finite)):
        kind = "NaN" if np.isnan(values[byte]) else "inf"
        refused(tmp_path, lora_bytes(extra(3)) + bytes([0, byte, 0]), f"tensor 'extra' ({kind}) contains non-finite values")
