"""Synthetic SDXL-shaped LoRAs and what people do to LoRA files, for ``bench weights`` and its tests.

:func:`sdxl_lora_targets` lists the linear layers an SDXL LoRA trains (attention and
feed-forward of every UNet transformer block, the blocks' in/out projections, attention and MLP
of both text encoders) from an architecture of :mod:`carlos.models.sdxl_arch`: 722 UNet and 264
text-encoder modules for SDXL base 1.0, the module set of :func:`carlos.files.testing.make_test_lora`
for the tiny one. :func:`synthetic_lora` draws seeded factors whose ΔW has a decaying spectrum
(σ_i ∝ i^-decay; trained LoRAs concentrate their energy in a few directions) and per-module
magnitudes that vary. The transformations are the ones the matcher must see through: alpha
rescaling, up halved and down doubled, SVD rank reduction (as kohya's resize script does),
dropping modules, a weighted merge (ranks concatenated, as kohya's merge script does) and a
small perturbation standing in for continued training. :func:`write_lora_file` writes kohya
(SGM names, alpha tensors) or diffusers/PEFT files in F32, F16 or BF16.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carlos.files.testing import sgm_unet_name
from carlos.models.sdxl_arch import SDXL_BASE_1_0, SDXLArchitecture
from carlos.weights.canonical import canonical_name
from carlos.weights.tensors import write_safetensors

Factors = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Target:
    """One layer a LoRA trains: canonical name, component, diffusers module path, widths."""

    name: str
    component: str  # "unet" | "te1" | "te2"
    path: str  # dotted, inside the component: "down_blocks.1.attentions.0.proj_in"
    in_features: int
    out_features: int


def sdxl_lora_targets(arch: SDXLArchitecture = SDXL_BASE_1_0, *, text_encoders: bool = True) -> list[Target]:
    """The linear LoRA targets of an SDXL-architecture UNet and text encoders."""
    u = arch.unet
    chans, depth, per_block, ctx = (
        u["block_out_channels"],
        u["transformer_layers_per_block"],
        u["layers_per_block"],
        u["cross_attention_dim"],
    )
    found: list[tuple[str, str, int, int]] = []

    def attention(prefix: str, d: int, n: int) -> None:
        found.extend([("unet", f"{prefix}.proj_in", d, d), ("unet", f"{prefix}.proj_out", d, d)])
        for t in range(n):
            p = f"{prefix}.transformer_blocks.{t}"
            for attn, kv in (("attn1", d), ("attn2", ctx)):
                found.extend(
                    [("unet", f"{p}.{attn}.to_q", d, d), ("unet", f"{p}.{attn}.to_k", kv, d), ("unet", f"{p}.{attn}.to_v", kv, d)]
                    + [("unet", f"{p}.{attn}.to_out.0", d, d)]
                )
            found.extend([("unet", f"{p}.ff.net.0.proj", d, 8 * d), ("unet", f"{p}.ff.net.2", 4 * d, d)])

    for b, kind in enumerate(u["down_block_types"]):
        if kind.startswith("CrossAttn"):
            for j in range(per_block):
                attention(f"down_blocks.{b}.attentions.{j}", chans[b], depth[b])
    attention("mid_block.attentions.0", chans[-1], depth[-1])
    for b, kind in enumerate(u["up_block_types"]):
        if kind.startswith("CrossAttn"):
            for j in range(per_block + 1):
                attention(f"up_blocks.{b}.attentions.{j}", chans[::-1][b], depth[::-1][b])
    if text_encoders:
        for comp, cfg in (("te1", arch.text_encoder), ("te2", arch.text_encoder_2)):
            h, inner = cfg["hidden_size"], cfg["intermediate_size"]
            for i in range(cfg["num_hidden_layers"]):
                p = f"text_model.encoder.layers.{i}"
                found.extend((comp, f"{p}.self_attn.{x}", h, h) for x in ("q_proj", "k_proj", "v_proj", "out_proj"))
                found.extend([(comp, f"{p}.mlp.fc1", h, inner), (comp, f"{p}.mlp.fc2", inner, h)])
    return [Target(canonical_name(c, p.replace(".", "_")), c, p, i, o) for c, p, i, o in found]


def synthetic_lora(targets: list[Target], *, rank: int, seed: int, decay: float = 1.0, strength: float = 1.0) -> Factors:
    """Seeded factors (scale folded into up) with σ_i ∝ i^-decay and log-normal module magnitudes."""
    rng = np.random.default_rng([seed, rank, 7])
    spectrum = np.arange(1, rank + 1, dtype=np.float64) ** -decay
    spectrum /= np.linalg.norm(spectrum)
    out: Factors = {}
    for t in targets:
        r = min(rank, t.in_features, t.out_features)
        up = rng.standard_normal((t.out_features, r), dtype=np.float32) / np.float32(np.sqrt(t.out_features))
        down = rng.standard_normal((r, t.in_features), dtype=np.float32) / np.float32(np.sqrt(t.in_features))
        magnitude = strength * float(np.exp(0.5 * rng.standard_normal()))
        up *= (spectrum[:r] * magnitude / np.linalg.norm(spectrum[:r])).astype(np.float32)
        out[t.name] = (up, down)
    return out


def rescaled(lora: Factors, factor: float) -> Factors:
    """ΔW x factor (what changing alpha alone does)."""
    return {k: (u * np.float32(factor), d) for k, (u, d) in lora.items()}


def up_halved_down_doubled(lora: Factors) -> Factors:
    """The same ΔW, other factors."""
    return {k: (u * np.float32(0.5), d * np.float32(2.0)) for k, (u, d) in lora.items()}


def svd_rank(lora: Factors, fraction: float = 0.5) -> Factors:
    """Each module truncated to ``fraction`` of its rank by the SVD of ΔW, computed from the factors."""
    out: Factors = {}
    for k, (u, d) in lora.items():
        keep = max(1, int(round(u.shape[1] * fraction)))
        qu, ru = np.linalg.qr(u.astype(np.float64))
        qd, rd = np.linalg.qr(d.T.astype(np.float64))
        m_u, s, m_vt = np.linalg.svd(ru @ rd.T)
        out[k] = ((qu @ m_u[:, :keep] * s[:keep]).astype(np.float32), (m_vt[:keep] @ qd.T).astype(np.float32))
    return out


def pruned(lora: Factors, fraction: float, seed: int) -> Factors:
    """``fraction`` of the modules dropped at random."""
    names = sorted(lora)
    rng = np.random.default_rng([seed, 11])
    drop = set(rng.choice(len(names), size=int(round(fraction * len(names))), replace=False).tolist())
    return {n: lora[n] for i, n in enumerate(names) if i not in drop}


def merged(a: Factors, b: Factors, wa: float = 0.5, wb: float = 0.5) -> Factors:
    """wa·ΔW_a + wb·ΔW_b, ranks concatenated (modules only one side has are kept, weighted)."""
    out: Factors = {}
    for k in sorted(set(a) | set(b)):
        if k in a and k in b:
            out[k] = (
                np.concatenate([a[k][0] * np.float32(wa), b[k][0] * np.float32(wb)], axis=1),
                np.concatenate([a[k][1], b[k][1]], axis=0),
            )
        else:
            u, d = a[k] if k in a else b[k]
            out[k] = (u * np.float32(wa if k in a else wb), d)
    return out


def perturbed(lora: Factors, eps: float, seed: int) -> Factors:
    """Every factor moved by relative noise ``eps`` (a stand-in for continued training)."""
    rng = np.random.default_rng([seed, 13])
    out: Factors = {}
    for k, (u, d) in lora.items():
        nu = rng.standard_normal(u.shape, dtype=np.float32) * np.float32(eps * np.linalg.norm(u) / np.sqrt(u.size))
        nd = rng.standard_normal(d.shape, dtype=np.float32) * np.float32(eps * np.linalg.norm(d) / np.sqrt(d.size))
        out[k] = (u + nu, d + nd)
    return out


def write_lora_file(
    lora: Factors,
    targets: list[Target],
    path: str | Path,
    *,
    layout: str = "kohya",
    dtype: str = "F32",
    alpha: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A kohya (SGM names, ``alpha`` = ``alpha`` or the rank) or diffusers/PEFT file of ``lora``."""
    by_name = {t.name: t for t in targets}
    tensors: dict[str, np.ndarray] = {}
    for name, (up, down) in lora.items():
        t = by_name[name]
        r = up.shape[1]
        if layout == "kohya":
            module = sgm_unet_name(t.path) if t.component == "unet" else t.path
            key = f"lora_{t.component}_" + module.replace(".", "_")
            a = float(r if alpha is None else alpha)
            tensors[f"{key}.lora_up.weight"] = up / np.float32(a / r)  # ΔW = alpha / r · up · down
            tensors[f"{key}.lora_down.weight"] = down
            tensors[f"{key}.alpha"] = np.array(a, dtype=np.float32)
        else:
            prefix = {"unet": "unet", "te1": "text_encoder", "te2": "text_encoder_2"}[t.component]
            tensors[f"{prefix}.{t.path}.lora_A.weight"] = down
            tensors[f"{prefix}.{t.path}.lora_B.weight"] = up
    meta = {"ss_base_model_version": "sdxl_base_v1-0", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}
    meta.update(metadata or {})
    return write_safetensors(path, tensors, dtype=dtype, metadata=meta)
