"""A copy of the real store with one uploaded LoRA whose every creator field is hostile, with
a stored file, per-pair results, thumbnails, intervals, review events and saved thresholds."""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carlos.config import CORPUS_EMBEDDER
from carlos.core.representation import summarize
from carlos.core.uncertainty import estimate
from carlos.store.store import Store

HOSTILE = ("<script>alert(1)</script>", "[x](javascript:alert(1))", "<img src=http://127.0.0.1:9/x>")
PIXEL = "civitai:130580"


@dataclass(frozen=True)
class Upload:
    store: Store
    lora_id: str
    sha256: str
    path: Path
    base_png: bytes  # the stored thumbnail of pair 0, unblurred


def png(seed: int, size: int = 64) -> bytes:
    """A noisy image (blurring it visibly changes it)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")  # read-only after it is built (one test changes the file and restores it)
def upload(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Upload:
    root = tmp_path_factory.mktemp("report")
    shutil.copy(real_store_path, root / "carlos.duckdb")
    store = Store.open(root / "carlos.duckdb")
    lora_file = root / "hostile.safetensors"
    lora_file.write_bytes(b"not a real LoRA, only bytes with a sha256 " * 50)
    sha = hashlib.sha256(lora_file.read_bytes()).hexdigest()
    lora_id = f"sha256:{sha}"
    store.loras.upsert(
        [
            {
                "lora_id": lora_id,
                "source": "upload",
                "name": HOSTILE[0],
                "description": f"<p>{HOSTILE[1]}</p> {HOSTILE[2]}",
                "sha256": sha,
                "file_path": str(lora_file),
                "folder_name": HOSTILE[2],
                "trigger_words": [HOSTILE[1]],
                "file_report": {
                    "original_name": HOSTILE[2] + ".safetensors",
                    "size_bytes": lora_file.stat().st_size,
                    "format": "kohya",
                    "base_family": "sdxl",
                    "rank": 4,
                    "contradictions": [HOSTILE[0]],
                    "warnings": [],
                    "metadata": {"ss_output_name": HOSTILE[0], "modelspec.title": HOSTILE[1], "ss_tag_frequency": {HOSTILE[2]: 3}},
                },
            }
        ]
    )
    # a local characterization in the corpus's space: Pixel Art XL's direction plus per-prompt effects
    pixel = next(r for r in store.reps.of(PIXEL))
    rng = np.random.default_rng(7)
    prompts = [f"prompt {HOSTILE[0]} {k}" for k in range(6) for _ in range(2)]
    cats = [("Food", "Logos", "Animals")[k % 3] for k in range(6) for _ in range(2)]
    effects = rng.normal(size=(6, pixel.direction.shape[0]))
    diffs = np.stack([pixel.direction * 2 + effects[i // 2] * 0.08 + rng.normal(size=effects.shape[1]) * 0.05 for i in range(12)])
    rep = summarize(diffs)
    job = store.jobs.enqueue(lora_id, str(lora_file), "tiny", "quick", 12, {"sha256": sha}, "ada")
    store.jobs.add_pair_results(
        job, [{"pair_index": i, "prompt": prompts[i], "category": cats[i], "seed": i % 2, "diff": diffs[i]} for i in range(12)]
    )
    base0 = png(1)
    store.jobs.put_thumbnails(job, [(0, base0, png(2)), (1, png(3), None)])
    store.reps.put(
        lora_id,
        CORPUS_EMBEDDER,
        rep.direction,
        rep.strength,
        rep.consistency,
        rep.n,
        {
            "protocol": "quick",
            "prompt_set": "carlos-authors/index/k1/s1/test",
            "prompt_hash": "ab" * 32,
            "seeds": [0, 1],
            "backend": "tiny-sdxl/seed0",
            "source": "characterized",
            "source_hash": sha,
            "code_version": "carlos-dashboard test",
            "job_id": job,
            "trigger_words": [HOSTILE[1]],
            "settings": {"noise": "authors", "noise_scheme": "as released", "steps": 4},
            "clip_weights": "random(seed=0)",
            "uncertainty": estimate(diffs, prompts).to_dict(),
        },
    )
    # the weight space: its file's fingerprint and two recorded matches (carlos.weights writes these)
    store.fingerprints.put(
        {
            "lora_id": lora_id,
            "sha256": sha,
            "file_name": lora_file.name,
            "spec": "weights-test/d4",
            "vector": np.ones(4),
            "norm": 1.0,
            "module_names": ["unet.mid.attn1.to_q"],
            "module_norms": [1.0],
            "module_sketches": np.zeros((1, 16)),
        }
    )
    store.fingerprints.put_matches(
        [
            {"lora_id": lora_id, "other_id": "civitai:160844", "label": "unrelated", "cosine": 0.31, "scale": 1.0, "exact": False},
            {"lora_id": lora_id, "other_id": PIXEL, "label": "rescaled copy", "cosine": 0.2, "scale": 2.0, "exact": True},
        ]
    )
    store.review.append_decision(lora_id, "ada", "claim", "unreviewed", "unreviewed", None)
    store.review.append_decision(lora_id, "ada", "flag", "unreviewed", "flagged", HOSTILE[2])
    store.review.record_thresholds(9.5, 0.05, "bob@example.org", HOSTILE[1])
    return Upload(store, lora_id, sha, lora_file, base0)
