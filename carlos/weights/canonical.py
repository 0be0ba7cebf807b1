"""Every accepted adapter format as canonical SDXL modules, read one module at a time.

A module is named ``<component>:<layer path>`` with the component ``unet``, ``te1`` or ``te2``
and the path in diffusers' layout, ``_``-separated: kohya's SGM names
(``input_blocks_4_1_transformer_blocks_0_attn1_to_q``) and diffusers/PEFT names
(``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``) of the same layer get the
same name. Its weight change is ΔW = scale · up · down (out x in, convolutions with the kernel
flattened into ``in``), scale = alpha / rank (kohya's ``alpha`` tensor, or diffusers'
``lora_adapter_metadata``; 1 without either). Plain LoRA modules stay factored: ``up_blocks``
streams scale · up in blocks of :data:`BLOCK` rows and ``down_blocks`` streams down in blocks
of :data:`BLOCK` columns, so memory stays far below one module. LyCORIS LoHa and LoKr modules
are materialized (``dense``), one at a time. :class:`AdapterFile` reads a validated file;
:class:`ArrayAdapter` holds modules in memory (tests, the benchmark).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from carlos.errors import InvalidInputError, InvalidLoRAFileError
from carlos.files.formats import Module, TensorInfo, analyse_keys, show
from carlos.files.header import parse_header, read_metadata, tensor_table
from carlos.files.validate import LoRAFileLimits, LoRAFileReport, validate_lora
from carlos.weights.tensors import TensorReader, widen

#: Rows (of up) or columns (of down) per block; fixed, so two files block alike.
BLOCK = 2048
COMPONENTS = ("unet", "te1", "te2")
FACTORED, DENSE = "lora", "dense"
#: Memory-friendly validation: NaN/inf scanned 1 MiB at a time.
READ_LIMITS = LoRAFileLimits(scan_chunk_bytes=1 << 20)


@dataclass(frozen=True)
class CanonicalModule:
    """One layer a file changes, under its canonical name."""

    name: str  # "unet:down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    component: str  # "unet" | "te1" | "te2"
    kind: str  # "lora" (factored: up, down) | "dense" (LoHa / LoKr, materialized)
    out_features: int
    in_features: int  # flattened: in_channels x kernel for convolutions
    rank: int | None  # the factors' rank (None: full-matrix LoKr)
    scale: float  # alpha / rank, applied to ΔW
    source: str = ""  # the module's name in the file
    adapter: str = "lora"  # "lora" | "loha" | "lokr"
    roles: Mapping[str, TensorInfo] = field(default_factory=dict, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def block(self) -> str:
        return block_of(self.name)


class ModuleSource(Protocol):
    """What sketches and exact comparisons read: canonical modules and their weights."""

    modules: Mapping[str, CanonicalModule]

    def up_blocks(self, name: str) -> Iterator[np.ndarray]: ...

    def down_blocks(self, name: str) -> Iterator[np.ndarray]: ...

    def dense(self, name: str) -> np.ndarray: ...


# ------------------------------------------------------------------------------ names
_UNET_TOP = {
    "input_blocks_0_0": "conv_in",
    "out_2": "conv_out",
    "time_embed_0": "time_embedding_linear_1",
    "time_embed_2": "time_embedding_linear_2",
    "label_emb_0_0": "add_embedding_linear_1",
    "label_emb_0_2": "add_embedding_linear_2",
}
_RESNET = {"in_layers_2": "conv1", "out_layers_3": "conv2", "emb_layers_1": "time_emb_proj", "skip_connection": "conv_shortcut"}


def _resnet(prefix: str, rest: str) -> str:
    return f"{prefix}_{_RESNET.get(rest, rest)}"


def unet_path(path: str, layers_per_block: int = 2) -> str:
    """A kohya/SGM UNet layer path in diffusers' layout (diffusers paths pass unchanged)."""
    if path in _UNET_TOP:
        return _UNET_TOP[path]
    step = layers_per_block + 1
    if m := re.match(r"input_blocks_(\d+)_(\d+)_(.+)$", path):
        b, j = divmod(int(m[1]) - 1, step)
        if j == layers_per_block:
            return f"down_blocks_{b}_downsamplers_0_conv"
        kind = "resnets" if m[2] == "0" else "attentions"
        return _resnet(f"down_blocks_{b}_resnets_{j}", m[3]) if kind == "resnets" else f"down_blocks_{b}_attentions_{j}_{m[3]}"
    if m := re.match(r"middle_block_(\d)_(.+)$", path):
        if m[1] == "1":
            return f"mid_block_attentions_0_{m[2]}"
        return _resnet(f"mid_block_resnets_{int(m[1]) // 2}", m[2])
    if m := re.match(r"output_blocks_(\d+)_(\d+)_(.+)$", path):
        b, j = divmod(int(m[1]), step)
        if m[2] == "0":
            return _resnet(f"up_blocks_{b}_resnets_{j}", m[3])
        if m[3] == "conv":
            return f"up_blocks_{b}_upsamplers_0_conv"
        return f"up_blocks_{b}_attentions_{j}_{m[3]}"
    return path


def canonical_name(component: str, path: str) -> str:
    """``component:path`` in one spelling for every format (see the module docstring)."""
    comp = "te1" if component == "te" else component
    if comp == "unet":
        path = unet_path(path)
    elif comp in ("te1", "te2"):
        path = path.removeprefix("text_model_")
    path = re.sub(r"(attn[12]_to_out)$", r"\1_0", path)  # attention-processor files name to_out.0 "to_out"
    return f"{comp}:{path}"


def block_of(name: str) -> str:
    """The block a module belongs to, for statistics: ``unet:down_blocks_1``, ``te2``, ..."""
    comp, _, path = name.partition(":")
    if comp != "unet":
        return comp
    m = re.match(r"(down_blocks_\d+|up_blocks_\d+|mid_block)", path)
    return f"unet:{m[1]}" if m else "unet:other"


# ------------------------------------------------------------------------------ scales
def _adapter_scales(raw_meta: Mapping[str, object], warnings: list[str]) -> dict[str, float]:
    """alpha / r per component from diffusers' ``lora_adapter_metadata`` (PEFT files carry no alpha tensor)."""
    text = raw_meta.get("lora_adapter_metadata")
    if not isinstance(text, str):
        return {}
    try:
        meta = json.loads(text)
    except ValueError:
        warnings.append("lora_adapter_metadata is not JSON; PEFT scales taken as 1")
        return {}
    if not isinstance(meta, dict):
        return {}
    scales = {}
    for prefix, comp in (("unet.", "unet"), ("text_encoder.", "te1"), ("text_encoder_2.", "te2"), ("", "*")):
        r, alpha = meta.get(prefix + "r"), meta.get(prefix + "lora_alpha")
        if isinstance(r, (int, float)) and isinstance(alpha, (int, float)) and r > 0:
            scales[comp] = float(alpha) / float(r)
        if meta.get(prefix + "rank_pattern") or meta.get(prefix + "alpha_pattern"):
            warnings.append(f"per-module rank/alpha patterns of {prefix or 'the adapter'} are not applied")
    return scales


def _scale(m: Module, rank: int | None, reader: TensorReader, adapter_scales: Mapping[str, float], component: str) -> float:
    if "alpha" in m.roles and rank:
        alpha = reader.scalar(m.roles["alpha"])
        return alpha / rank if alpha != 0 else 1.0  # kohya and LyCORIS take alpha 0 as "alpha = rank"
    if m.kind == "diffusers":
        return adapter_scales.get(component, adapter_scales.get("*", 1.0))
    return 1.0


def _dims(m: Module) -> tuple[str, int, int, int | None]:
    """(kind, out, flattened in, rank) from the tensor shapes; raises for shapes we cannot compose."""
    r = m.roles
    if m.kind in ("kohya", "diffusers"):
        up, down = r["up"].shape, r["down"].shape
        if len(up) == 4 and up[2:] != (1, 1):
            raise InvalidLoRAFileError(f"LoRA module {show(m.name)}: an up weight with a {up[2:]} kernel is not supported")
        inner = math.prod(down[1:]) if "mid" not in r else down[1] * math.prod(r["mid"].shape[2:])
        return FACTORED, up[0], inner, down[0]
    if m.kind == "loha":
        a, b = r["w1_a"].shape, r["w1_b"].shape
        tucker = "t1" in r
        out = a[1] if tucker else a[0]
        inner = b[1] * math.prod(r["t1"].shape[2:]) if tucker else b[1]
        return DENSE, out, inner, b[0]
    parts = []
    for w in ("w1", "w2"):
        if w in r:
            s = r[w].shape
            parts.append((s[0], math.prod(s[1:])))
        elif w == "w2" and "t2" in r:
            parts.append((r["w2_a"].shape[1], r["w2_b"].shape[1] * math.prod(r["t2"].shape[2:])))
        else:
            parts.append((r[f"{w}_a"].shape[0], math.prod(r[f"{w}_b"].shape[1:])))
    return DENSE, parts[0][0] * parts[1][0], parts[0][1] * parts[1][1], m.rank


def canonical_modules(
    found: tuple[Module, ...], reader: TensorReader, raw_meta: Mapping[str, object]
) -> tuple[dict[str, CanonicalModule], list[str]]:
    """Canonical modules of a file's analysed modules (:func:`carlos.files.formats.analyse_keys`)."""
    warnings: list[str] = []
    adapter_scales = _adapter_scales(raw_meta, warnings)
    out: dict[str, CanonicalModule] = {}
    for m in found:
        component = "te1" if m.component == "te" else m.component
        if component not in COMPONENTS:
            raise InvalidLoRAFileError(f"module {show(m.name)} patches {m.component}, not the SDXL UNet or its text encoders")
        if "aux" in m.roles:
            warnings.append(f"{show(m.name)}: DoRA magnitudes are not applied; its ΔW is the plain low-rank part")
        kind, n_out, n_in, rank = _dims(m)
        name = canonical_name(m.component, m.path)
        if name in out:
            raise InvalidLoRAFileError(f"modules {show(out[name].source)} and {show(m.name)} patch the same layer ({name})")
        adapter = {"kohya": "lora", "diffusers": "lora"}.get(m.kind, m.kind)
        scale = _scale(m, rank, reader, adapter_scales, component)
        if adapter == "lokr" and not any(k in m.roles for k in ("w1_a", "w2_a")):
            scale = 1.0  # LyCORIS ignores alpha when both Kronecker factors are full matrices
        out[name] = CanonicalModule(name, component, kind, n_out, n_in, rank, scale, m.name, adapter, dict(m.roles))
    return dict(sorted(out.items())), warnings


# ------------------------------------------------------------------------------ materializing
def _tucker(t: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """LyCORIS's Tucker rebuild: W[p, q, h, w] = Σ t[i, j, h, w] wa[i, p] wb[j, q], flattened to (p, q·h·w)."""
    w = np.einsum("ijhw,ip,jq->pqhw", t, wa, wb)
    return w.reshape(w.shape[0], -1)


def _lyco_dense(m: CanonicalModule, get: dict[str, np.ndarray]) -> np.ndarray:
    if m.adapter == "loha":
        halves = []
        for w in ("1", "2"):
            a, b = get[f"w{w}_a"], get[f"w{w}_b"]
            halves.append(_tucker(get[f"t{w}"], a, b) if f"t{w}" in get else a @ b.reshape(b.shape[0], -1))
        if halves[0].shape != halves[1].shape:
            raise InvalidLoRAFileError(
                f"LoHa module {show(m.source)}: its two products have shapes {halves[0].shape} and {halves[1].shape}"
            )
        delta = halves[0] * halves[1]
    else:
        w1 = get["w1"].reshape(get["w1"].shape[0], -1) if "w1" in get else get["w1_a"] @ get["w1_b"].reshape(get["w1_b"].shape[0], -1)
        if "w2" in get:
            w2 = get["w2"].reshape(get["w2"].shape[0], -1)
        elif "t2" in get:
            w2 = _tucker(get["t2"], get["w2_a"], get["w2_b"])
        else:
            w2 = get["w2_a"] @ get["w2_b"].reshape(get["w2_b"].shape[0], -1)
        delta = np.kron(w1, w2)
    delta *= np.float32(m.scale)
    if delta.shape != m.shape:
        raise InvalidLoRAFileError(f"module {show(m.source)}: ΔW has shape {delta.shape}, expected {m.shape}")
    return delta


def spans(n: int) -> Iterator[tuple[int, int]]:
    """The fixed block boundaries of an axis of length ``n``."""
    for a in range(0, n, BLOCK):
        yield a, min(n, a + BLOCK)


class AdapterFile:
    """A validated adapter file opened for reading its canonical modules (close it, or use ``with``)."""

    def __init__(
        self, path: Path, reader: TensorReader, modules: dict[str, CanonicalModule], fmt: str, warnings: list[str], sha256: str | None
    ) -> None:
        self.path, self.reader, self.modules = path, reader, modules
        self.format, self.warnings, self.sha256 = fmt, tuple(warnings), sha256
        self._mid_down: dict[str, np.ndarray] = {}

    @classmethod
    def open(
        cls,
        path: str | Path,
        limits: LoRAFileLimits | None = None,
        *,
        original_name: str | None = None,
        report: LoRAFileReport | None = None,
    ) -> AdapterFile:
        """Validate (unless ``report`` says it was, for this file) and open; raises InvalidLoRAFileError."""
        path = Path(path)
        limits = limits or READ_LIMITS
        if report is None:
            report = validate_lora(path, limits, original_name=original_name)
        elif not report.ok:
            raise InvalidLoRAFileError(report.error or "the file did not pass validation")
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header, data_start = parse_header(handle, size, limits.max_header_bytes)
        tensors = tensor_table(header, size - data_start, limits.max_tensors)
        raw_meta, _ = read_metadata(header)
        keys = analyse_keys(tensors)
        reader = TensorReader(path, data_start)
        try:
            modules, warnings = canonical_modules(keys.modules, reader, raw_meta)
        except BaseException:
            reader.close()
            raise
        return cls(path, reader, modules, keys.format, warnings, report.sha256)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> AdapterFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up_blocks(self, name: str) -> Iterator[np.ndarray]:
        m = self.modules[name]
        scale = np.float32(m.scale)
        for a, b in spans(m.out_features):
            block = self.reader.rows(m.roles["up"], a, b)
            block *= scale
            yield block

    def down_blocks(self, name: str) -> Iterator[np.ndarray]:
        m = self.modules[name]
        if "mid" in m.roles:  # Tucker (LoCon "cp"): down' = mid x down, small, built once
            if name not in self._mid_down:
                mid, down = self.reader.whole(m.roles["mid"]), self.reader.rows(m.roles["down"], 0, m.roles["down"].shape[0])
                # only the current module's is kept
                self._mid_down = {name: np.einsum("abhw,bi->aihw", mid, down).reshape(mid.shape[0], -1)}
            full = self._mid_down[name]
            for a, b in spans(m.in_features):
                yield full[:, a:b]
            return
        info = m.roles["down"]
        raw = self.reader.raw_rows(info, 0, info.shape[0])  # r x in as stored; widened a column block at a time
        for a, b in spans(m.in_features):
            yield widen(raw[:, a:b], info.dtype)

    def dense(self, name: str) -> np.ndarray:
        m = self.modules[name]
        if m.kind == FACTORED:
            return dense_from_blocks(self, name)
        return _lyco_dense(m, {role: self.reader.whole(info) for role, info in m.roles.items() if role != "alpha"})


def dense_from_blocks(source: ModuleSource, name: str) -> np.ndarray:
    """ΔW of a factored module, materialized (rare paths: comparing with a LoHa/LoKr module)."""
    down = np.concatenate(list(source.down_blocks(name)), axis=1)
    return np.concatenate([u @ down for u in source.up_blocks(name)], axis=0)


class ArrayAdapter:
    """Canonical modules held in memory: ``{name: (up, down)}`` factors or ``{name: ΔW}`` arrays."""

    def __init__(
        self, factors: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None, dense: Mapping[str, np.ndarray] | None = None
    ) -> None:
        self.factors = {k: (np.asarray(u, np.float32), np.asarray(d, np.float32)) for k, (u, d) in (factors or {}).items()}
        self.arrays = {k: np.asarray(v, np.float32) for k, v in (dense or {}).items()}
        self.format = "arrays"
        self.modules: dict[str, CanonicalModule] = {}
        for name, (u, d) in self.factors.items():
            if u.ndim != 2 or d.ndim != 2 or u.shape[1] != d.shape[0]:
                raise InvalidInputError(f"{name}: up {u.shape} and down {d.shape} do not compose")
            self.modules[name] = CanonicalModule(name, name.partition(":")[0], FACTORED, u.shape[0], d.shape[1], u.shape[1], 1.0, name)
        for name, w in self.arrays.items():
            if w.ndim != 2 or name in self.modules:
                raise InvalidInputError(f"{name}: a dense ΔW must be 2-D and not also given as factors")
            self.modules[name] = CanonicalModule(name, name.partition(":")[0], DENSE, w.shape[0], w.shape[1], None, 1.0, name, "dense")
        for name in self.modules:
            if name.partition(":")[0] not in COMPONENTS:
                raise InvalidInputError(f"module names are '<unet|te1|te2>:<path>', got {name!r}")
        self.modules = dict(sorted(self.modules.items()))

    def up_blocks(self, name: str) -> Iterator[np.ndarray]:
        u = self.factors[name][0]
        for a, b in spans(u.shape[0]):
            yield u[a:b]

    def down_blocks(self, name: str) -> Iterator[np.ndarray]:
        d = self.factors[name][1]
        for a, b in spans(d.shape[1]):
            yield d[:, a:b]

    def dense(self, name: str) -> np.ndarray:
        if name in self.arrays:
            return self.arrays[name]
        u, d = self.factors[name]
        return u @ d
