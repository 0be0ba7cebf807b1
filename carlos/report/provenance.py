"""Provenance of a case file: of each measurement (protocol, models and checkpoints, prompt set and
its hash, seeds and noise scheme) and of the report (store data version, code version, corpus
imports, registered prompt sets).

What a representation did not record is said so, never filled in: a corpus row carries the
authors' protocol name and backend only, so its noise is "as released" and its prompt hash is
the pinned sha256 of the authors' prompt file, labelled as such.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from carlos import __version__
from carlos.config import REPO_ROOT
from carlos.errors import CarlosError
from carlos.report.case import ReportProvenance
from carlos.report.integrity import plain

if TYPE_CHECKING:
    from carlos.store.store import Store

NOT_RECORDED = "not recorded"
AUTHORS_NOISE = (
    "the authors' release: 16 images per prompt as 4 calls of num_images_per_prompt=4 with "
    "torch.manual_seed(42, 46, 50, 54); not recorded per row"
)


def measurement_provenance(embedder: str, prov: dict[str, Any]) -> dict[str, Any]:
    """The provenance lines a reader needs, from a representation's stored provenance."""
    settings = prov.get("settings") or {}
    spec = prov.get("protocol_spec") or {}
    corpus_row = prov.get("source") not in (None, "characterized")
    adaptive = prov.get("adaptive") or {}
    out = {
        "protocol": prov.get("protocol") or NOT_RECORDED,
        "protocol_spec": spec or None,
        "diffusion_backend": prov.get("backend") or NOT_RECORDED,
        "diffusion_settings": {
            k: settings[k] for k in ("steps", "guidance_scale", "height", "width", "scheduler", "dtype", "device_type") if k in settings
        }
        or {k: prov[k] for k in ("steps", "scale") if prov.get(k) is not None},
        "clip_space": embedder,
        "clip_weights": prov.get("clip_weights") or ("as released by the authors" if corpus_row else NOT_RECORDED),
        "prompt_set": prov.get("prompt_set") or NOT_RECORDED,
        "prompt_hash": prov.get("prompt_hash")
        or (f"{NOT_RECORDED} (corpus row; see the prompt sets of the report)" if corpus_row else NOT_RECORDED),
        "seeds": prov.get("seeds") or NOT_RECORDED,
        "noise": settings.get("noise") or spec.get("noise") or (AUTHORS_NOISE if corpus_row else NOT_RECORDED),
        "noise_scheme": settings.get("noise_scheme") or (AUTHORS_NOISE if corpus_row else NOT_RECORDED),
        "trigger_words": list(prov.get("trigger_words") or []),
        "source": prov.get("source") or NOT_RECORDED,
        "source_hash": prov.get("source_hash"),
        "code_version": prov.get("code_version") or NOT_RECORDED,
        "job_id": prov.get("job_id"),
        "computed_at": prov.get("created_at"),
        "adaptive": adaptive.get("message")
        or (f"stopped after {adaptive.get('pairs_used')} pairs: {adaptive.get('reason')}" if adaptive else None),
    }
    return plain(out)


def report_provenance(store: Store, recorded_prompt_sets: Iterable[str]) -> ReportProvenance:
    """The store's state and the code's version at the moment the report is made."""
    from carlos.data.corpus import import_history

    imports = [{k: v for k, v in imp.items() if k in ("source", "file_sha256", "rows", "imported_at")} for imp in import_history(store)]
    return ReportProvenance(
        store_file=store.path.name,
        data_version=int(store.data_version()),
        schema_version=int(store.schema_version()),
        code_version=f"carlos-dashboard {__version__}",
        git_commit=git_commit(),
        corpus_imports=plain(imports),
        prompt_sets=prompt_sets(recorded_prompt_sets),
    )


def prompt_sets(recorded: Iterable[str]) -> dict[str, Any]:
    """The registered prompt sets the measurements name (a recorded ``carlos-authors/index/…``
    or ``carlos-authors-280`` is the set ``carlos-authors``): source file sha256 and content hash."""
    from carlos.data.prompts import describe_prompt_set, list_prompt_sets

    recorded = list(recorded)
    out: dict[str, Any] = {}
    for name in list_prompt_sets():
        if not any(r == name or r.startswith((f"{name}/", f"{name}-")) for r in recorded):
            continue
        try:
            d = describe_prompt_set(name)
        except CarlosError as e:  # absent on this machine: say so with the pinned hash
            out[name] = {"available": False, "why": str(e)}
            continue
        src = d.get("source") or {}
        out[name] = {
            "available": bool(d.get("available", True)),
            "source": src.get("wheel") or src.get("kind"),
            "source_sha256": src.get("sha256"),
            "content_hash": d.get("content_hash"),
            "counts": d.get("counts"),
        }
    return plain(out)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit (with a note when files differ from it), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit + (" with uncommitted changes" if dirty.returncode == 0 and dirty.stdout.strip() else "")
