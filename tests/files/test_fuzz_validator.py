"""Fuzzing the upload validator (carlos.files) with hypothesis: mutations of valid tiny SDXL LoRA files.

Valid files (kohya and diffusers layouts, several seeds, ranks and dtypes, with metadata) are
made once per module by ``make_test_lora``; every example mutates their bytes in memory and
validates the result from a scratch file. :func:`check` holds the properties every file must
meet, whatever its bytes: ``inspect_lora`` returns its report and raises nothing (no
traceback, MemoryError or RecursionError) within a hang guard; a refusal names a printable,
bounded reason and an InvalidLoRAFileError type; ``report.to_dict()`` is strict JSON a store
can hold; an accepted file loads with safetensors, with the tensors, dtypes and metadata the
report names, and its float tensors are finite. Mutations known to corrupt a file must be
refused; metadata bombs on a valid file must be accepted.

Example counts scale with the hypothesis profile (tests/conftest.py): ``ci`` runs the weights
below (2,000+ examples in all), ``make fuzz`` runs the ``fuzz`` profile.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carlos.files.header import DTYPE_BITS
from carlos.files.testing import make_test_lora
from carlos.files.validate import LoRAFileLimits, LoRAFileReport, inspect_lora

LIMITS = LoRAFileLimits(sdxl_context_dims=(2048, 96), scan_chunk_bytes=1 << 16)  # the tiny backend's
HANG_S = 30.0  # a hang guard, not a speed target: one file takes ~10 ms
TAGS = json.dumps({"10_pcut": {"papercut": 40, "paper art": 12}, "5_bg": {"landscape": 9}})
# (make_test_lora arguments, tensors kept): two whole files, and four that adapt fewer layers
# (real LoRAs often do), so that most examples are cheap
SPECS: list[tuple[dict[str, Any], str | None]] = [
    ({"layout": "kohya", "seed": 0, "rank": 4, "metadata": {"ss_tag_frequency": TAGS, "modelspec.trigger_phrase": "pcut"}}, None),
    ({"layout": "diffusers", "seed": 2, "rank": 4, "metadata": {"ss_network_args": '{"conv_dim": "4"}'}}, None),
    ({"layout": "kohya", "seed": 1, "rank": 2, "dtype": "float32", "text_encoders": False, "alpha": 1.0}, r"attn2"),
    ({"layout": "kohya", "seed": 4, "rank": 8, "metadata": {"ss_tag_frequency": TAGS}}, r"attn2[._]to_k|layers[._]0[._]self_attn[._]q"),
    ({"layout": "diffusers", "seed": 3, "rank": 1, "dtype": "float32", "text_encoders": False}, r"attn2[._]to_[kv]"),
    ({"layout": "diffusers", "seed": 5, "rank": 4}, r"attn2[._]to_k|layers[._]0[._]self_attn[._]q"),
]
BASE = st.integers(0, len(SPECS) - 1)
NP_FLOATS = {"F16": "<f2", "F32": "<f4"}  # the dtypes make_test_lora writes


def examples(weight: int) -> int:
    """This test's share of the profile: ``weight`` examples in ``ci`` (100 a test), scaled in ``fuzz``."""
    return max(1, weight * settings.default.max_examples // 100)


def fuzz(weight: int, **overrides: Any) -> settings:
    checks = [HealthCheck.too_slow, HealthCheck.data_too_large]
    return settings(max_examples=examples(weight), suppress_health_check=checks, **overrides)


@dataclass(frozen=True)
class Base:
    """A valid LoRA file, split into its parts."""

    raw: bytes
    header: dict[str, Any]
    data_start: int

    def __repr__(self) -> str:  # failure reports name the base, not its 300 KB
        return f"Base({len(self.raw)} bytes, {len(self.header) - 1} tensors)"

    @property
    def data(self) -> bytes:
        return self.raw[self.data_start :]

    def names(self) -> list[str]:
        """Tensor names in data order."""
        return sorted((k for k in self.header if k != "__metadata__"), key=lambda k: self.header[k]["data_offsets"])

    def copy_header(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.header))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Loading small tensors gains nothing from intra-op threads; on 2 busy cores they spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[Base]:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = []
    for i, (spec, keep) in enumerate(SPECS):
        path = make_test_lora(tmp_path_factory.mktemp("bases") / f"base{i}.safetensors", **spec)
        if keep is not None:  # the same file adapting fewer layers, written by safetensors itself
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata()
            save_file({k: v for k, v in load_file(str(path)).items() if re.search(keep, k)}, str(path), metadata=meta)
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        base = Base(raw, json.loads(raw[8 : 8 + n]), 8 + n)
        assert check(raw, path.with_name("check.safetensors")).ok  # the fuzzer starts from valid files
        out.append(base)
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "upload.safetensors"


def encode(header: dict[str, Any] | bytes, data: bytes, raw_tokens: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes; ``raw_tokens`` put JSON text json.dumps cannot write (``-0``, ``1e400``)."""
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    for marker, token in (raw_tokens or {}).items():
        text = text.replace(json.dumps(marker).encode(), token.encode())
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


class Hang(BaseException):
    """inspect_lora ran past the hang guard (BaseException: no ``except Exception`` swallows it)."""


@contextmanager
def hang_guard(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"inspect_lora ran for more than {seconds} s: a time bomb")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(blob: bytes, path: Path) -> LoRAFileReport:
    """Validate ``blob``; assert what holds for any file. Returns the report."""
    path.write_bytes(blob)
    with hang_guard(HANG_S):
        report = inspect_lora(path, LIMITS)
    assert isinstance(report, LoRAFileReport) and report.ok == (report.error is None)
    json.dumps(report.to_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8")  # strict JSON, no lone surrogate
    if not report.ok:
        assert report.error_type in ("InvalidLoRAFileError", "UnsupportedBaseModelError")
        assert 10 <= len(report.error) <= 2000 and report.error.isprintable(), report.error
    else:
        assert report.sha256 == hashlib.sha256(blob).hexdigest()
        assert_loads(path, report)
    return report


def assert_loads(path: Path, report: LoRAFileReport) -> None:
    """An accepted file loads with safetensors (diffusers' loader) and is what the report says."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert (handle.metadata() or {}) == report.raw_metadata
        names = list(handle.keys())
        assert len(names) == report.n_tensors
        assert sorted({handle.get_slice(n).get_dtype() for n in names}) == list(report.dtypes)
        for name in names:
            tensor = handle.get_tensor(name)
            if tensor.is_floating_point() and tensor.dtype != torch.float4_e2m1fn_x2:  # F4 has no NaN/inf
                wide = tensor if tensor.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) else tensor.float()
                assert bool(torch.isfinite(wide).all()), f"accepted a non-finite {name}"


def all_finite(base: Base, data: bytes) -> bool:
    return all(
        np.isfinite(np.frombuffer(data[b:e], NP_FLOATS[entry["dtype"]])).all()
        for name, entry in base.header.items()
        if name != "__metadata__"
        for b, e in [entry["data_offsets"]]
    )


# --- byte-level mutations ------------------------------------------------------------------


@fuzz(150)
@given(i=BASE, data=st.data())
def test_truncated_files_are_refused(bases: list[Base], scratch: Path, i: int, data: st.DataObject) -> None:
    raw = bases[i].raw
    cut = data.draw(st.one_of(st.integers(0, len(raw) - 1), st.integers(0, 80), st.integers(len(raw) - 80, len(raw) - 1)))
    assert not check(raw[:cut], scratch).ok


@fuzz(150)
@given(i=BASE, data=st.data())
def test_header_length_lies_are_refused(bases: list[Base], scratch: Path, i: int, data: st.DataObject) -> None:
    base = bases[i]
    true, size = base.data_start - 8, len(base.raw)
    special = [0, 1, 7, 8, true - 8, true - 1, true + 1, true + 8, size - 8, size - 7, size, 2**32, 2**63, 2**64 - 1]
    lie = data.draw(st.one_of(st.sampled_from(special), st.integers(0, 2**64 - 1)).filter(lambda n: n != true))
    assert not check(lie.to_bytes(8, "little") + base.raw[8:], scratch).ok


JSON_BYTES = st.sampled_from(list(b'{}[]":,\\ 0123456789-.eE\x00\x7f\xff') + [0xC0, 0xED, 0x80])


@fuzz(250)
@given(i=BASE, data=st.data())
def test_header_bit_flips_and_byte_edits_never_crash(bases: list[Base], scratch: Path, i: int, data: st.DataObject) -> None:
    base = bases[i]
    blob = bytearray(base.raw)
    edits = data.draw(st.lists(st.tuples(st.integers(8, base.data_start - 1), st.integers(0, 7), st.booleans()), min_size=1, max_size=4))
    for pos, bit, flip in edits:
        blob[pos] = blob[pos] ^ (1 << bit) if flip else data.draw(JSON_BYTES)
    check(bytes(blob), scratch)


@fuzz(200)
@given(i=BASE, data=st.data())
def test_data_bit_flips_are_refused_exactly_when_a_value_is_not_finite(
    bases: list[Base], scratch: Path, i: int, data: st.DataObject
) -> None:
    base = bases[i]
    blob = bytearray(base.raw)
    flips = data.draw(st.lists(st.tuples(st.integers(base.data_start, len(blob) - 1), st.integers(0, 7)), min_size=1, max_size=8))
    for pos, bit in flips:
        blob[pos] ^= 1 << bit
    report = check(bytes(blob), scratch)
    assert report.ok == all_finite(base, bytes(blob[base.data_start :])), report.error


@fuzz(150)
@given(i=BASE, data=st.data(), value=st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -0.0, 0.0, 65504.0, 1e-8]))
def test_injected_nan_and_inf_are_refused(bases: list[Base], scratch: Path, i: int, data: st.DataObject, value: float) -> None:
    base = bases[i]
    name = data.draw(st.sampled_from(base.names()))
    dtype = NP_FLOATS[base.header[name]["dtype"]]
    begin, end = base.header[name]["data_offsets"]
    item = np.dtype(dtype).itemsize
    at = base.data_start + begin + item * data.draw(st.integers(0, (end - begin) // item - 1))
    with np.errstate(over="ignore"):
        cell = np.array([value], dtype)
    blob = base.raw[:at] + cell.tobytes() + base.raw[at + item :]
    assert check(blob, scratch).ok == bool(np.isfinite(cell).all())


# --- the tensor table ----------------------------------------------------------------------

NEG0, INF, HUGE = "@@-0@@", "@@1e400@@", "@@10**5000@@"
RAW = {NEG0: "-0", INF: "1e400", HUGE: "1" + "0" * 5000}  # numbers Python reads (as 0, inf, an int) and safetensors refuses
NOT_A_DTYPE = st.one_of(
    st.text(max_size=12).filter(lambda s: s not in DTYPE_BITS),
    st.sampled_from(["f16", "F16 ", "FP16", "float16", "F6", "Q4_0", "F32\u0000"]),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
#: Shapes no valid tensor has: beyond 64 bits (alone or as a running product), negative, not integers.
BAD_SHAPES = st.sampled_from(
    [[2**64], [2**64 + 1, 1], [2**63, 2], [2**32, 2**32], [2**62, 2**62, 0], [2**40, 2**40, 0], [2**33, 2**33, 0, 7], [2**70, 0]]
    + [[0, 2**64], [10**30], [10**4000], [HUGE], [-1], [4, -2], [1.5], ["4"], [True], [None], [NEG0], [NEG0, 4], [INF]]
    + ["4", 4, None, {}, [[2]]]
)
LAYOUT_FAULTS = ("duplicate", "overlap", "beyond", "gap", "trailing")
ENTRY_FAULTS = ("shape", "dtype_width", "unknown_dtype", "bad_shape", "bad_shape_empty", "bad_offsets", "missing", "not_object")


def bad_offsets(begin: int, end: int) -> list[Any]:
    """data_offsets that cannot be a tensor's (for a tensor at [begin, end), end > begin)."""
    return [[], [begin], [begin, end, end], [end, begin], [-1, end], [begin, end + 0.5], [str(begin), str(end)], None] + [
        f"{begin}-{end}",
        {},
        [True, end],
        [begin, 2**64],
        [begin, 2**70],
        [begin, 10**4000],
        [begin, INF],
        [NEG0, end],
    ]


def corrupt_table(base: Base, kind: str, draw: Any) -> bytes:
    """Break the tensor table one way; every result is a corrupt file."""
    header, data = base.copy_header(), base.data
    names = base.names()
    name = draw(st.sampled_from(names))
    entry = header[name]
    begin, end = entry["data_offsets"]
    if kind == "duplicate":  # two tensors on the same bytes
        other = draw(st.sampled_from([n for n in names if n != name]))
        header[other]["data_offsets"] = [begin, end]
    elif kind == "overlap":  # a tensor starts inside the one before it
        k = draw(st.integers(1, max(1, begin)))
        entry["data_offsets"] = [begin - k, end - draw(st.sampled_from([0, k]))] if begin else [0, end - 1]
    elif kind == "beyond":
        k = draw(st.one_of(st.integers(1, 64), st.integers(1, 2**64)))
        entry["data_offsets"] = draw(st.sampled_from([[begin, end + k], [begin + len(data), end + len(data) + k - 1]]))
    elif kind in ("gap", "trailing"):  # bytes that belong to no tensor
        k = draw(st.integers(1, 64))
        at = len(data) if kind == "trailing" else begin
        for e in (header[n] for n in names if header[n]["data_offsets"][0] >= at and kind == "gap"):
            e["data_offsets"] = [o + k for o in e["data_offsets"]]
        data = data[:at] + bytes(draw(st.binary(min_size=k, max_size=k))) + data[at:]
    elif kind == "shape":  # as many elements as the bytes hold no longer
        shape = list(entry["shape"])
        grown = draw(
            st.sampled_from([shape + [draw(st.integers(2, 9))], [*shape[:-1], shape[-1] * 2] if shape else [2], shape[1:], [0] + shape])
        )
        if grown == shape or np.prod(grown) == np.prod(shape):
            grown = shape + [2]
        entry["shape"] = grown
    elif kind == "dtype_width":
        entry["dtype"] = draw(st.sampled_from(sorted(d for d, b in DTYPE_BITS.items() if b != DTYPE_BITS[entry["dtype"]])))
    elif kind == "unknown_dtype":
        entry["dtype"] = draw(NOT_A_DTYPE)
    elif kind == "bad_shape":
        entry["shape"] = draw(BAD_SHAPES)
    elif kind == "bad_shape_empty":  # a new zero-byte tensor whose shape no tensor can have
        extra = draw(st.sampled_from(["extra", names[0].rsplit(".", 2)[0] + ".alpha", "bundle_emb.x"]))
        header[extra] = {"dtype": draw(st.sampled_from(["F16", "F32", "U8"])), "shape": draw(BAD_SHAPES), "data_offsets": [len(data)] * 2}
    elif kind == "bad_offsets":
        first = names[0]  # [-0, end] reads as [0, end]: only the first tensor's would pass as valid
        name = draw(st.sampled_from([name, first]))
        b, e = header[name]["data_offsets"]
        header[name]["data_offsets"] = draw(st.sampled_from(bad_offsets(b, e)))
    elif kind == "missing":
        del entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))]
    else:  # not_object
        header[name] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=3)))
    return encode(header, data, RAW)


@fuzz(350)
@given(i=BASE, kind=st.sampled_from(LAYOUT_FAULTS + ENTRY_FAULTS), data=st.data())
def test_tensor_table_corruptions_are_refused(bases: list[Base], scratch: Path, i: int, kind: str, data: st.DataObject) -> None:
    report = check(corrupt_table(bases[i], kind, data.draw), scratch)
    assert not report.ok and report.error_type == "InvalidLoRAFileError"


# --- the header's JSON text ----------------------------------------------------------------

NOT_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"]
)
CONTROL = st.sampled_from([bytes([c]) for c in [*range(0, 9), 11, 12, *range(14, 32)]])
NON_STRING = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)
TEXT_FAULTS = (
    "not_utf8",
    "control",
    "truncated",
    "trailing",
    "leading",
    "surrogate",
    "duplicate_key",
    "deep",
    "non_finite",
    "meta_value",
    "meta_object",
)


def nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def corrupt_text(base: Base, kind: str, draw: Any) -> bytes:
    """Break the header's JSON one way; every result is a corrupt file (the length field stays right)."""
    header = base.copy_header()
    meta = header.setdefault("__metadata__", {})
    name = draw(st.sampled_from(base.names()))
    text = json.dumps(header, separators=(",", ":")).encode()
    if kind == "not_utf8":
        at = draw(st.integers(1, len(text)))
        text = text[:at] + draw(NOT_UTF8) + text[at:]
    elif kind == "control":  # raw control characters are not JSON, in strings or between tokens
        at = draw(st.integers(1, len(text) - 1))
        text = text[:at] + draw(CONTROL) + text[at:]
    elif kind == "truncated":  # the closing brace goes, and maybe more
        text = text[: draw(st.integers(1, len(text) - 1))]
    elif kind == "trailing":
        text += draw(st.sampled_from([b"x", b"}", b",", b"{}", b'"', b"\x00", b"[]"]))
    elif kind == "leading":
        text = draw(st.sampled_from([b" ", b"\n", b"\xef\xbb\xbf", b"[", b"x"])) + text
    elif kind == "surrogate":  # a lone UTF-16 surrogate: JSON-escaped, but no text (safetensors refuses it)
        lone = draw(st.sampled_from(["\ud800", "\udfff", "\udc00x"]))
        if draw(st.booleans()):
            header[name + lone] = header.pop(name)
        else:
            meta[draw(st.sampled_from(["ss_output_name", "k" + lone]))] = lone
        text = json.dumps(header, separators=(",", ":")).encode()
    elif kind == "duplicate_key":
        key = draw(st.sampled_from([name, "__metadata__"]))
        text = text[:-1] + b"," + json.dumps(key).encode() + b":" + json.dumps(header[key]).encode() + b"}"
    elif kind == "deep":  # a recursion bomb; safetensors itself stops at 128 levels
        bomb = nested(draw(st.one_of(st.integers(130, 2000), st.integers(2000, 200_000))), draw(st.sampled_from(["list", "dict"])))
        where = draw(st.sampled_from(["field", "meta", "top"]))
        target = header[name] if where == "field" else (meta if where == "meta" else header)
        target["@@bomb@@"] = "@@bomb@@"
        text = json.dumps(header, separators=(",", ":")).encode().replace(b'"@@bomb@@":"@@bomb@@"', b'"bomb":' + bomb.encode())
    elif kind == "non_finite":  # numbers Python reads as NaN/inf; safetensors refuses them
        header[name]["x"] = "@@n@@"
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]))
        text = json.dumps(header, separators=(",", ":")).encode().replace(b'"@@n@@"', token.encode())
    elif kind == "meta_value":  # safetensors metadata is text -> text
        meta[draw(st.sampled_from(["ss_network_dim", "ss_tag_frequency", "modelspec.title", "k"]))] = draw(NON_STRING)
        text = json.dumps(header, separators=(",", ":")).encode()
    else:  # meta_object
        header["__metadata__"] = draw(
            st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2))
        )
        text = json.dumps(header, separators=(",", ":")).encode()
    return encode(text, base.data)


@fuzz(300)
@given(i=BASE, kind=st.sampled_from(TEXT_FAULTS), data=st.data())
def test_header_json_corruptions_are_refused(bases: list[Base], scratch: Path, i: int, kind: str, data: st.DataObject) -> None:
    report = check(corrupt_text(bases[i], kind, data.draw), scratch)
    assert not report.ok and report.error_type == "InvalidLoRAFileError"


# --- metadata bombs on a valid file --------------------------------------------------------

REVIEW_KEYS = ["ss_resolution", "ss_network_dim", "ss_network_alpha", "ss_learning_rate", "ss_num_epochs", "ss_v2"]
REVIEW_KEYS += [
    "ss_network_args",
    "ss_tag_frequency",
    "ss_datasets",
    "modelspec.trigger_phrase",
    "ss_output_name",
    "modelspec.architecture",
]
UNITS = [" ", "1", "1 ", "1,", "(", "[", "{", '"', "\\", "x", "9" * 20, "é", "\x00", "\t", "[[", '{"a":', "nan", "inf", "-", "1e9"]
LONG_TEXT = st.builds(
    lambda unit, n, tail: unit * n + tail, st.sampled_from(UNITS), st.integers(0, 20_000), st.sampled_from(["", "a", "]", ")", "1"])
)
COUNTS = st.sampled_from(
    ["Infinity", "-Infinity", "NaN", "1e400", "-5", "1" + "0" * 4000, "18446744073709551616", '"3"', "true", "null", "1.5", "7"]
)


@st.composite
def json_texts(draw: Any) -> str:
    """JSON (or almost-JSON) text of the kind kohya stores in string metadata: tag counts, network args."""
    kind = draw(st.sampled_from(["deep", "tags", "many_tags", "datasets", "garbage"]))
    if kind == "deep":
        return nested(draw(st.integers(1, 100_000)), draw(st.sampled_from(["list", "dict"])))
    if kind == "tags":
        tags = draw(st.lists(st.sampled_from(["a", " b ", "", "\\ud800", "\\udfff\\ud800", "\\ud83d\\ude00", "x" * 300, " "]), max_size=6))
        body = ",".join(f'"{t}":{draw(COUNTS)}' for t in tags)
        return '{"10_set":{' + body + "}}"
    if kind == "many_tags":
        return json.dumps({"1_set": {f"tag{k}": k for k in range(draw(st.integers(0, 30_000)))}})
    if kind == "datasets":
        return '[{"tag_frequency":{"1_x":{"t":' + draw(COUNTS) + "}}}, 5, null]"
    return draw(st.text(max_size=50))


@fuzz(250)
@given(i=BASE, bomb=st.sampled_from(["many_keys", "long_values", "json_values", "odd_keys"]), data=st.data())
def test_metadata_bombs_on_a_valid_file_are_accepted(bases: list[Base], scratch: Path, i: int, bomb: str, data: st.DataObject) -> None:
    base = bases[i]
    header = base.copy_header()
    meta = header["__metadata__"]
    if bomb == "many_keys":
        n, width = data.draw(st.integers(1, 20_000)), data.draw(st.integers(0, 40))
        meta.update({f"k{j}": "v" * width for j in range(n)})
    elif bomb == "long_values":
        meta.update(data.draw(st.dictionaries(st.sampled_from(REVIEW_KEYS), LONG_TEXT, min_size=1, max_size=4)))
    elif bomb == "json_values":
        meta.update(data.draw(st.dictionaries(st.sampled_from(REVIEW_KEYS), json_texts(), min_size=1, max_size=3)))
    else:
        meta.update(data.draw(st.dictionaries(st.one_of(st.text(max_size=20), LONG_TEXT), st.text(max_size=20), max_size=5)))
    report = check(encode(header, base.data), scratch)
    assert report.ok, report.error


# --- keys that look like our modules, with shapes and dtypes they should not have ----------

SUFFIXES = [".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight", ".lora_B.weight", ".lora_mid.weight"]
SUFFIXES += [".hada_w1_a", ".hada_w2_b", ".lokr_w1", ".lokr_w2_a", ".dora_scale", ".lora_magnitude_vector", ".weight"]
DIMS = st.one_of(st.integers(0, 70), st.sampled_from([96, 128, 2048, 2**32, 2**40, 2**63, 2**64 - 1]))


def layout(header: dict[str, Any], chunks: dict[str, bytes]) -> bytes:
    """The data section of ``chunks`` in order, with every header entry's offsets set to match."""
    data, at = [], 0
    for name, chunk in chunks.items():
        header[name]["data_offsets"] = [at, at + len(chunk)]
        data.append(chunk)
        at += len(chunk)
    return b"".join(data)


@fuzz(250)
@given(i=BASE, data=st.data())
def test_module_like_keys_with_wrong_shapes_never_crash(bases: list[Base], scratch: Path, i: int, data: st.DataObject) -> None:
    base = bases[i]
    header = base.copy_header()
    chunks = {n: base.data[slice(*header[n]["data_offsets"])] for n in base.names()}
    modules = sorted({n.rsplit(".", 2)[0] if ".lora_" in n else n.rsplit(".", 1)[0] for n in chunks})
    for _ in range(data.draw(st.integers(1, 4))):
        name = data.draw(
            st.one_of(st.sampled_from(sorted(chunks)), st.builds(str.__add__, st.sampled_from(modules), st.sampled_from(SUFFIXES)))
        )
        dtype = data.draw(st.sampled_from(sorted(DTYPE_BITS)))
        shape = data.draw(st.lists(DIMS, max_size=5))
        bits = int(np.prod(shape, dtype=object)) * DTYPE_BITS[dtype]
        size = bits // 8 if bits <= 8 * 4096 else data.draw(st.integers(0, 64))  # too big: a size that cannot match
        header[name] = {"dtype": dtype, "shape": shape}
        chunks[name] = np.random.default_rng(data.draw(st.integers(0, 2**32))).bytes(size)
    check(encode(header, layout(header, chunks)), scratch)


# --- the tiny backend's LoRA loading path (diffusers' load_lora_weights) -------------------

CONVERSIONS = ["F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "I8", "I32", "U8", "BOOL", "C64"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from carlos.models.diffusion import DiffusionBackend

    return DiffusionBackend("tiny", device="cpu", cache_dir=tmp_path_factory.mktemp("tokenizer"))


@fuzz(5, deadline=None)  # a load takes 0.5-7 s on 2 busy cores, after an 8 s build: 5 here, 500 under `make fuzz`
@given(i=st.sampled_from([0, 1, 2, 4, 5]), data=st.data())
def test_accepted_files_load_on_the_tiny_backend(bases: list[Base], scratch: Path, backend: Any, i: int, data: st.DataObject) -> None:
    """Files whose layers keep their shapes: what the validator accepts, the backend loads.

    Not base 3: diffusers cannot load a kohya file whose text-encoder part adapts only the q
    projections ("Could not automatically infer state dict type"); the backend refuses it with
    InvalidLoRAFileError, which no file-level check can foresee.
    """
    import torch
    from safetensors.torch import load, save

    tensors = load(bases[i].raw)
    meta = dict(bases[i].header["__metadata__"])
    for _ in range(data.draw(st.integers(1, 3))):
        change = data.draw(st.sampled_from(["convert", "scale", "metadata"]))
        names = data.draw(st.lists(st.sampled_from(sorted(tensors)), min_size=1, max_size=8, unique=True))
        if change == "convert":  # values converted, not reinterpreted: shapes stay
            dtype = data.draw(st.sampled_from(CONVERSIONS))
            with np.errstate(all="ignore"):
                tensors |= {n: tensors[n].to(getattr(torch, TORCH_DTYPES[dtype])) for n in names}
        elif change == "scale":
            factor = data.draw(st.sampled_from([0.0, -1.0, 1e-30, 1e4, 1e30]))
            tensors |= {n: tensors[n] * factor for n in names}
        else:
            meta |= data.draw(st.dictionaries(st.sampled_from(REVIEW_KEYS + ["k", ""]), st.text(max_size=30), max_size=4))
    report = check(save(tensors, metadata=meta), scratch)
    if report.ok:
        backend.load_lora(scratch)  # raises InvalidLoRAFileError if diffusers cannot use the file
        backend.unload_lora()


TORCH_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn"}
TORCH_DTYPES |= {"F8_E5M2": "float8_e5m2", "I8": "int8", "I32": "int32", "U8": "uint8", "BOOL": "bool", "C64": "complex64"}
