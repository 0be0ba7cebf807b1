"""``bench weights``: does weight-space matching see through what people do to LoRA files, and how fast is it.

Detection: a library of synthetic SDXL-shaped LoRAs (:mod:`carlos.bench.weight_variants`;
``originals`` per rank plus ``negatives`` unrelated ones) is fingerprinted; every original is
then transformed (format conversion and dtype casts through real files, rescaling, factor
re-balancing, SVD rank halving, pruning 30 % of its modules, a 50/50 merge with another
original, a small perturbation for continued training) and looked up with the matcher the
product runs (:func:`carlos.weights.match.find_matches`: index search, then exact re-ranking
against the in-memory "stored files"). A transformation is detected when its original comes
back with the expected relationship (for merges: both parents as partial matches); a false
positive is any unrelated LoRA reported with a relationship, counted over every (query,
unrelated LoRA) pair, the unrelated LoRAs themselves also queried. Speed: fingerprinting a
real-size rank-32 SDXL file (986 modules, ~228 MB in fp16) with its time and traced peak
memory against the file's largest module, and the search over ``library_size`` synthetic
search vectors. Rendering is :mod:`carlos.bench.weights_report`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carlos.bench import weight_variants as wv
from carlos.bench.common import MemoryProbe, machine_info, percentiles, stamp
from carlos.errors import InvalidInputError
from carlos.weights.canonical import READ_LIMITS, AdapterFile, ArrayAdapter, ModuleSource
from carlos.weights.match import FingerprintIndex, Match, find_matches
from carlos.weights.relate import IDENTICAL, MERGE, PARTIAL, RESCALED, SAME_LORA, SUBSET, UNRELATED, RelationThresholds, exact_relation
from carlos.weights.sketch import Fingerprint, fingerprint
from carlos.weights.tensors import to_bf16_words, widen

Progress = Callable[[int, int], None]
#: Targets of the issue: every copy-like transformation detected, merges ≥ 95 %, false positives ≤ 0.5 %.
MERGE_TARGET, FP_TARGET, FP_SECONDS_TARGET, P50_TARGET_MS = 0.95, 0.005, 2.0, 100.0
PERTURBATION = 0.1


@dataclass(frozen=True)
class WeightsBenchConfig:
    shapes: str = "sdxl"  # "sdxl": SDXL base 1.0's LoRA targets; "tiny": the tiny test model's
    ranks: tuple[int, ...] = (4, 8, 16)
    originals: int = 4  # per rank
    negatives: int = 200
    file_checks: int = 1  # originals per rank also converted through real files
    library_size: int = 1_000_000  # synthetic search vectors for the latency (0: skip)
    n_queries: int = 50
    speed_rank: int = 32  # rank of the real-size fingerprint file (0: skip)
    top_k: int = 10
    seed: int = 0
    workdir: str | None = None

    def __post_init__(self) -> None:
        if self.shapes not in ("sdxl", "tiny"):
            raise InvalidInputError(f"shapes must be 'sdxl' or 'tiny', got {self.shapes!r}")
        if not self.ranks or min(self.ranks) < 2 or self.originals < 2 or self.negatives < 1:
            raise InvalidInputError("need ranks >= 2, at least 2 originals per rank and 1 negative")


def _cast(lora: wv.Factors, dtype: str) -> wv.Factors:
    if dtype == "F16":
        return {k: (u.astype(np.float16).astype(np.float32), d.astype(np.float16).astype(np.float32)) for k, (u, d) in lora.items()}
    return {
        k: (widen(to_bf16_words(u), "BF16").reshape(u.shape), widen(to_bf16_words(d), "BF16").reshape(d.shape))
        for k, (u, d) in lora.items()
    }


#: name -> (make(original, partner) -> factors, expected label, expected kind, "same LoRA" or "partial").
TRANSFORMS: dict[str, tuple[Callable[[wv.Factors, wv.Factors], wv.Factors], str, str | None, str]] = {
    "fp32 → fp16 (values)": (lambda o, p: _cast(o, "F16"), IDENTICAL, None, "same"),
    "fp32 → bf16 (values)": (lambda o, p: _cast(o, "BF16"), IDENTICAL, None, "same"),
    "alpha ×2 (ΔW doubled)": (lambda o, p: wv.rescaled(o, 2.0), RESCALED, None, "same"),
    "up halved, down doubled": (lambda o, p: wv.up_halved_down_doubled(o), IDENTICAL, None, "same"),
    "SVD rank reduction to ½": (lambda o, p: wv.svd_rank(o, 0.5), "rank-reduced or re-quantized copy", None, "same"),
    f"continued training ({PERTURBATION:.0%} noise)": (
        lambda o, p: wv.perturbed(o, PERTURBATION, seed=5),
        "rank-reduced or re-quantized copy",
        None,
        "same",
    ),
    "30 % of modules pruned": (lambda o, p: wv.pruned(o, 0.3, seed=6), PARTIAL, SUBSET, "partial"),
    "50/50 merge with another LoRA": (lambda o, p: wv.merged(o, p), PARTIAL, MERGE, "both parents"),
}
FILE_TRANSFORMS = ("kohya → diffusers (file)", "fp32 → fp16 (kohya file)", "fp32 → bf16 (diffusers file)")


class Library:
    """The synthetic LoRAs by id: regenerated from their seed on demand (a few kept), fingerprints kept."""

    def __init__(self, targets: list[wv.Target], members: dict[str, tuple[int, int]], limits: Any = READ_LIMITS) -> None:
        self.targets, self.members, self.limits = targets, members, limits
        self.fingerprints: dict[str, Fingerprint] = {}
        self._cache: dict[str, wv.Factors] = {}

    def factors(self, lora_id: str) -> wv.Factors:
        if lora_id not in self._cache:
            if len(self._cache) >= 3:
                self._cache.pop(next(iter(self._cache)))
            rank, seed = self.members[lora_id]
            self._cache[lora_id] = wv.synthetic_lora(self.targets, rank=rank, seed=seed)
        return self._cache[lora_id]

    def known(self, ids: Any) -> dict[str, Fingerprint]:
        """The fingerprints of those of ``ids`` in the library (the matcher's batched lookup)."""
        return {i: self.fingerprints[i] for i in ids if i in self.fingerprints}

    @contextlib.contextmanager
    def source(self, lora_id: str) -> Iterator[ModuleSource | None]:
        yield ArrayAdapter(self.factors(lora_id)) if lora_id in self.members else None


def _lookup(
    lib: Library, index: FingerprintIndex, query: ModuleSource, top_k: int, exclude: tuple[str, ...] = ()
) -> tuple[Fingerprint, list[Match]]:
    fp = fingerprint(query)
    return fp, find_matches(fp, index, lib.known, query_source=query, open_source=lib.source, top_k=top_k, exclude=exclude)


def _file_queries(lib: Library, oid: str, workdir: Path) -> Iterator[tuple[str, AdapterFile]]:
    """The original through real files: kohya f32 → diffusers f32, kohya f16, diffusers bf16."""
    lora, targets = lib.factors(oid), lib.targets
    paths = [
        wv.write_lora_file(lora, targets, workdir / "diffusers.safetensors", layout="diffusers"),
        wv.write_lora_file(lora, targets, workdir / "kohya16.safetensors", dtype="F16", alpha=1.0),
        wv.write_lora_file(lora, targets, workdir / "diffusers-bf16.safetensors", layout="diffusers", dtype="BF16"),
    ]
    for name, path in zip(FILE_TRANSFORMS, paths):
        with AdapterFile.open(path, lib.limits) as f:
            yield name, f
        path.unlink()


def _tiny_limits() -> Any:
    from dataclasses import replace

    return replace(READ_LIMITS, sdxl_context_dims=(2048, 96))


def _detection(cfg: WeightsBenchConfig, workdir: Path, progress: Progress | None) -> tuple[dict[str, Any], Library, list[Fingerprint]]:
    from carlos.models.sdxl_arch import SDXL_BASE_1_0, TINY_SDXL

    targets = wv.sdxl_lora_targets(SDXL_BASE_1_0 if cfg.shapes == "sdxl" else TINY_SDXL)
    members: dict[str, tuple[int, int]] = {}
    originals: list[str] = []
    for rank in cfg.ranks:
        for i in range(cfg.originals):
            originals.append(f"original:r{rank}:{i}")
            members[originals[-1]] = (rank, cfg.seed * 100_000 + rank * 1000 + i)
    negatives = [f"negative:{j}" for j in range(cfg.negatives)]
    for j, nid in enumerate(negatives):
        members[nid] = (cfg.ranks[j % len(cfg.ranks)], cfg.seed * 100_000 + 50_000 + j)
    lib = Library(targets, members, READ_LIMITS if cfg.shapes == "sdxl" else _tiny_limits())
    lookups = (
        len(originals) * len(TRANSFORMS) + min(cfg.file_checks, cfg.originals) * len(cfg.ranks) * len(FILE_TRANSFORMS) + len(negatives)
    )
    total, done = len(members) + lookups, 0
    for lora_id in members:
        lib.fingerprints[lora_id] = fingerprint(ArrayAdapter(lib.factors(lora_id)))
        done += 1
        if progress:
            progress(done, total)
    ids = list(lib.fingerprints)
    index = FingerprintIndex(ids, np.stack([lib.fingerprints[i].vector for i in ids]))
    rows: dict[str, dict[str, Any]] = {}
    fp_pairs, fp_hits, neg_cos, query_fps = 0, [], [], []

    def record(name: str, expect: tuple[str, str | None, str], parents: list[str], matches: list[Match]) -> None:
        label, kind, group = expect
        row = rows.setdefault(
            name,
            {
                "transformation": name,
                "expected": label + (f" ({kind})" if kind else ""),
                "n": 0,
                "detected": 0,
                "as_labelled": 0,
                "cosines": [],
            },
        )
        found = {m.other_id: m for m in matches}
        hits = [found.get(p) for p in parents]
        ok = all(h is not None and (h.relation.label in SAME_LORA if group == "same" else h.relation.label == PARTIAL) for h in hits)
        row["n"] += 1
        row["detected"] += int(ok)
        row["as_labelled"] += int(all(h is not None and (h.relation.label, h.relation.kind) == (label, kind) for h in hits))
        row["cosines"] += [abs(h.relation.cosine) if h is not None else 0.0 for h in hits]

    def false_positives(matches: list[Match], exclude: tuple[str, ...] = ()) -> None:
        nonlocal fp_pairs
        fp_pairs += len([n for n in negatives if n not in exclude])
        for m in matches:
            if m.other_id.startswith("negative:") and m.other_id not in exclude:
                neg_cos.append(abs(m.relation.cosine))
                if m.relation.label != UNRELATED:
                    fp_hits.append(f"{m.other_id}: {m.relation.label}")

    for i, oid in enumerate(originals):
        partner = originals[i + 1] if (i + 1) < len(originals) and originals[i + 1].split(":")[1] == oid.split(":")[1] else originals[i - 1]
        for name, (make, label, kind, group) in TRANSFORMS.items():
            query = make(lib.factors(oid), lib.factors(partner))
            fp, matches = _lookup(lib, index, ArrayAdapter(query), cfg.top_k)
            query_fps.append(fp)
            record(name, (label, kind, group), [oid, partner] if group == "both parents" else [oid], matches)
            false_positives(matches)
            done += 1
            if progress:
                progress(done, total)
        if int(oid.rsplit(":", 1)[1]) < cfg.file_checks:
            for name, source in _file_queries(lib, oid, workdir):
                fp, matches = _lookup(lib, index, source, cfg.top_k)
                record(name, (IDENTICAL, None, "same"), [oid], matches)
                false_positives(matches)
                done += 1
                if progress:
                    progress(done, total)
    for nid in negatives:  # the unrelated LoRAs look each other up too
        with lib.source(nid) as src:
            assert src is not None
            _, matches = _lookup(lib, index, src, cfg.top_k, exclude=(nid,))
        false_positives(matches, exclude=(nid,))
        done += 1
        if progress:
            progress(done, total)
    table = []
    for row in rows.values():
        cos = row.pop("cosines")
        table.append({**row, "rate": row["detected"] / row["n"], "min_cosine": min(cos), "median_cosine": statistics.median(cos)})
    result = {
        "shapes": cfg.shapes,
        "modules": len(targets),
        "ranks": list(cfg.ranks),
        "originals": len(originals),
        "negatives": len(negatives),
        "rows": table,
        "false_positives": len(fp_hits),
        "false_positive_pairs": fp_pairs,
        "false_positive_rate": len(fp_hits) / fp_pairs if fp_pairs else 0.0,
        "false_positive_examples": fp_hits[:10],
        "max_unrelated_cosine": max(neg_cos) if neg_cos else 0.0,
        "p99_unrelated_cosine": float(np.percentile(neg_cos, 99)) if neg_cos else 0.0,
        "unrelated_candidates_seen": len(neg_cos),
    }
    return result, lib, query_fps


def _fingerprint_speed(rank: int, workdir: Path, shapes: str) -> dict[str, Any]:
    """A real-size SDXL LoRA file (``shapes`` "sdxl"): validation, fingerprint time and traced peak memory, exact re-rank."""
    from carlos.files.validate import validate_lora
    from carlos.models.sdxl_arch import SDXL_BASE_1_0, TINY_SDXL

    targets = wv.sdxl_lora_targets(SDXL_BASE_1_0 if shapes == "sdxl" else TINY_SDXL)
    limits = READ_LIMITS if shapes == "sdxl" else _tiny_limits()
    lora = wv.synthetic_lora(targets, rank=rank, seed=987_654)
    path = wv.write_lora_file(lora, targets, workdir / "real-size.safetensors", dtype="F16")
    copy = wv.write_lora_file(lora, targets, workdir / "real-size-bf16.safetensors", layout="diffusers", dtype="BF16")
    del lora
    t0 = time.perf_counter()
    report = validate_lora(path, limits)
    validate_s = time.perf_counter() - t0
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        with AdapterFile.open(path, report=report) as f:
            fp = fingerprint(f)
        runs.append(time.perf_counter() - t0)
    with AdapterFile.open(path, report=report) as f:
        largest = max(sum(i.end - i.begin for i in m.roles.values()) for m in f.modules.values())
        probe = MemoryProbe()
        rss0 = probe.start()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        fingerprint(f)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        rss_peak = probe.peak() - rss0
    t0 = time.perf_counter()
    with AdapterFile.open(path, report=report) as a, AdapterFile.open(copy, limits) as b:
        rel = exact_relation(b, a)
    exact_s = time.perf_counter() - t0
    out = {
        "file_bytes": path.stat().st_size,
        "modules": len(fp.names),
        "rank": rank,
        "validate_s": validate_s,
        "fingerprint_s": statistics.median(runs),
        "fingerprint_runs_s": runs,
        "largest_module_bytes": largest,
        "traced_peak_bytes": peak,
        "peak_over_largest_module": peak / largest,
        "rss_growth_bytes": rss_peak,
        "exact_rerank_s": exact_s,
        "bf16_diffusers_copy": {"label": rel.label, "cosine": rel.cosine, "scale": rel.scale},
    }
    path.unlink()
    copy.unlink()
    return out


def _search_speed(n: int, lib: Library, queries: list[Fingerprint], n_queries: int, top_k: int, seed: int) -> dict[str, Any]:
    """Index search plus re-ranking from fingerprints over ``n`` stored search vectors."""
    from carlos.core.index import same_top_k
    from carlos.models.int8 import FbgemmInt8, fbgemm_available

    ids = list(lib.fingerprints)
    dim = len(next(iter(lib.fingerprints.values())).vector)
    rng = np.random.default_rng([seed, 77])
    matrix = np.empty((max(n, len(ids)), dim), np.float32)
    for a in range(0, len(matrix), 65_536):
        matrix[a : a + 65_536] = rng.standard_normal((min(65_536, len(matrix) - a), dim), dtype=np.float32)
    rows = rng.choice(len(matrix), size=len(ids), replace=False)
    all_ids = [f"synthetic:{i}" for i in range(len(matrix))]
    for r, lora_id in zip(rows, ids):
        matrix[r], all_ids[r] = lib.fingerprints[lora_id].vector, lora_id
    t0 = time.perf_counter()
    index = FingerprintIndex(all_ids, matrix, int8=FbgemmInt8() if fbgemm_available() else None)
    build_s = time.perf_counter() - t0
    import torch

    qs = [queries[i % len(queries)] for i in range(n_queries)]
    times, search_times, default_times = [], [], []
    default_threads = torch.get_num_threads()
    for q in qs:  # one GEMV thread (as bench scale serves), and torch's default, interleaved per query
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        index.search(q.vector, 30)
        search_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        find_matches(q, index, lib.known, top_k=top_k)
        times.append(time.perf_counter() - t0)
        torch.set_num_threads(default_threads)
        t0 = time.perf_counter()
        find_matches(q, index, lib.known, top_k=top_k)
        default_times.append(time.perf_counter() - t0)
    exact = 0
    assert index.index is not None
    for q in qs[:10]:
        got = index.index.search(q.vector, top_k, _no_filter())
        ref = index.index.exact_search(q.vector, top_k, _no_filter())
        exact += int(same_top_k(got[0], got[1], ref[0], ref[1]))
    return {
        "n": len(matrix),
        "dim": dim,
        "kernel": index.index.kernel,
        "index_build_s": build_s,
        "search": percentiles(search_times),
        "similar": percentiles(times),
        "similar_default_threads": percentiles(default_times),
        "default_threads": default_threads,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "exact_agree": exact,
        "exact_checked": min(10, len(qs)),
    }


def _no_filter() -> Any:
    from carlos.config import Thresholds

    return Thresholds(strength_max=None, consistency_min=None)


def run_weights_bench(cfg: WeightsBenchConfig = WeightsBenchConfig(), progress: Progress | None = None) -> dict[str, Any]:
    """Detection rates, false positives, fingerprint speed and memory, search latency (JSON-ready)."""
    started = time.perf_counter()
    info = machine_info()
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as tmp:
        work = Path(tmp)
        detection, lib, query_fps = _detection(cfg, work, progress)
        speed = _fingerprint_speed(cfg.speed_rank, work, cfg.shapes) if cfg.speed_rank else None
    search = _search_speed(cfg.library_size, lib, query_fps, cfg.n_queries, cfg.top_k, cfg.seed) if cfg.library_size else None
    return {
        "when": stamp(),
        "machine": info,
        "config": asdict(cfg),
        "thresholds": asdict(RelationThresholds()),
        "detection": detection,
        "fingerprint_speed": speed,
        "search_speed": search,
        "targets": {
            "merge_rate": MERGE_TARGET,
            "false_positive_rate": FP_TARGET,
            "fingerprint_s": FP_SECONDS_TARGET,
            "similar_p50_ms": P50_TARGET_MS,
        },
        "total_s": time.perf_counter() - started,
    }
