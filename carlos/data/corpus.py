"""The authors' released corpus: fetch, verify, import (never install).

The CARLoS authors published representations of 740 SDXL LoRAs as
``carlos/data/metrics_database.parquet`` inside the PyPI wheel ``carlos==0.0.3``
(Apache-2.0). That package shares our name and needs Python 3.9, so we only
*download* its wheel with pip, check the wheel's and the parquet's pinned
sha256, and import the rows into our store with their provenance. The same wheel
holds the authors' prompt set (``carlos/generative_prompts.py``): set-up extracts
and verifies it next to the parquet, never imports it, and
:mod:`carlos.data.authors_prompts` reads it as data.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from carlos import __version__
from carlos.config import CORPUS_EMBEDDER
from carlos.errors import CorpusIntegrityError

if TYPE_CHECKING:  # the store is only passed in: importing this module stays cheap (no numpy, no DuckDB)
    from carlos.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusRelease:
    """A pinned corpus file inside a PyPI wheel."""

    package: str
    version: str
    wheel_sha256: str
    member: str
    member_sha256: str
    rows: int
    dim: int
    embedder: str
    licence: str
    prompts_member: str  # the authors' prompt set, extracted next to the parquet
    prompts_sha256: str

    @property
    def source(self) -> str:
        return f"pypi:{self.package}=={self.version}"


def release_dir(cache_dir: Path, release: CorpusRelease) -> Path:
    """Where a release's verified members are kept: ``<cache>/corpus/<package>-<version>/``."""
    return Path(cache_dir) / "corpus" / f"{release.package}-{release.version}"


AUTHORS_RELEASE = CorpusRelease(
    package="carlos",
    version="0.0.3",
    wheel_sha256="94d2f4bd246289bfc15c13d05ef1164dede3bbc812c632081645e54a677bb2a3",
    member="carlos/data/metrics_database.parquet",
    member_sha256="13e56fd13c3c87ceaab0a530e442f660e681c6ea7f17b145daf8f17417f383d9",
    rows=740,
    dim=512,
    embedder=CORPUS_EMBEDDER,
    licence="Apache-2.0",
    prompts_member="carlos/generative_prompts.py",
    prompts_sha256="5bc1b9fe90ae18f51dc2060cb4f2020b3b1a89bcd82cc20ec7928d9fa4349307",
)

#: What the paper's protocol was, recorded on every imported representation.
PAPER_PROTOCOL = {
    "protocol": "paper",
    "prompt_set": "carlos-authors-280",  # the authors' 280 indexing prompts (not ours)
    "prompt_hash": None,  # the release does not ship the prompt texts' hash
    "seeds": "16 per prompt, shared by base and LoRA images",
    "steps": 25,
    "scale": 1.0,
    "backend": "sdxl-base-1.0-fp16",
}

_COLUMNS = {
    "version_id",
    "model_id",
    "model_name",
    "model_description",
    "model_nsfw_level",
    "folder_name",
    "direction",
    "strength",
    "consistency",
    "model_download_count",
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check(path: Path, expected: str, what: str) -> None:
    got = sha256_of(path)
    if got != expected:
        raise CorpusIntegrityError(
            f"{what} {path} has sha256 {got}, expected {expected}: the file is corrupted or "
            "tampered with. Delete it and run `python -m carlos corpus import` again."
        )


def fetch_release(cache_dir: Path, release: CorpusRelease = AUTHORS_RELEASE) -> Path:
    """Path of the verified parquet, downloading the wheel with pip if needed.

    The authors' prompt file is extracted and verified next to it (from the same wheel)
    when it is not there yet, so every set-up path (``corpus import``, ``make store``,
    the test session) leaves both in the cache.
    """
    folder = release_dir(cache_dir, release)
    out = folder / Path(release.member).name
    prompts = folder / Path(release.prompts_member).name
    if out.exists() and prompts.exists():
        _check(out, release.member_sha256, "cached corpus file")
        _check(prompts, release.prompts_sha256, "cached prompt file")
        return out
    if out.exists():
        _check(out, release.member_sha256, "cached corpus file")
    wheel_dir = Path(cache_dir) / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheel_dir.glob(f"{release.package}-{release.version}-*.whl"))
    if not wheels:
        log.info("downloading %s==%s with pip (not installing it)", release.package, release.version)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--ignore-requires-python",
            "--only-binary",
            ":all:",
            "-d",
            str(wheel_dir),
            f"{release.package}=={release.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(wheel_dir.glob(f"{release.package}-{release.version}-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise CorpusIntegrityError(
                f"could not download {release.package}=={release.version} from PyPI "
                f"(pip said: {proc.stderr.strip()[-400:]}). Download the wheel on a machine with "
                f"access and pass it with `python -m carlos corpus import --wheel FILE`."
            )
    return extract_from_wheel(wheels[0], out, release)


def extract_from_wheel(wheel: Path, out: Path, release: CorpusRelease = AUTHORS_RELEASE) -> Path:
    """Verify ``wheel``, extract its corpus member to ``out`` and its prompt file next to it (atomically)."""
    _check(wheel, release.wheel_sha256, "wheel")
    _extract_member(wheel, release.member, release.member_sha256, out, "corpus file")
    _extract_member(wheel, release.prompts_member, release.prompts_sha256, out.parent / Path(release.prompts_member).name, "prompt file")
    return out


def _extract_member(wheel: Path, member: str, sha256: str, out: Path, what: str) -> None:
    """Copy one member of a verified wheel to ``out``; refused (and nothing left) unless its sha256 is ``sha256``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            with tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as tmp:
                shutil.copyfileobj(src, tmp)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CorpusIntegrityError(f"{wheel} is not a valid wheel holding {member}") from e
    tmp_path = Path(tmp.name)
    try:
        _check(tmp_path, sha256, what)
    except CorpusIntegrityError:
        tmp_path.unlink(missing_ok=True)
        raise
    tmp_path.replace(out)


def _load_rows(parquet: Path, release: CorpusRelease) -> list[dict]:
    """Read and validate every row before anything is written."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(parquet)
    except Exception as e:  # pyarrow raises several types for broken files
        raise CorpusIntegrityError(f"{parquet} is not a readable parquet file: {e}") from e
    missing = _COLUMNS - set(table.column_names)
    if missing:
        raise CorpusIntegrityError(f"{parquet} lacks columns {sorted(missing)}")
    rows = table.to_pylist()
    ids = set()
    for r in rows:
        vec = r["direction"]
        if vec is None or len(vec) != release.dim or not all(math.isfinite(x) for x in vec):
            raise CorpusIntegrityError(f"row {r['version_id']}: direction is not {release.dim} finite floats")
        if not (math.isfinite(r["strength"]) and math.isfinite(r["consistency"])):
            raise CorpusIntegrityError(f"row {r['version_id']}: strength/consistency not finite")
        if r["version_id"] in ids:
            raise CorpusIntegrityError(f"duplicate version_id {r['version_id']}")
        ids.add(r["version_id"])
    return rows


@dataclass(frozen=True)
class ImportResult:
    source: str
    file_sha256: str
    rows: int
    added_loras: int
    already_imported: bool


def import_parquet(store: Store, parquet: Path, release: CorpusRelease = AUTHORS_RELEASE, *, verify: bool = True) -> ImportResult:
    """Import the release into ``store`` in one transaction; importing twice changes nothing."""
    if verify:
        _check(parquet, release.member_sha256, "corpus file")
    digest = sha256_of(parquet)
    if store.loras.import_record(release.source, digest):
        return ImportResult(release.source, digest, release.rows, 0, True)
    rows = _load_rows(parquet, release)
    loras, reps = [], []
    for r in rows:
        lora_id = f"civitai:{r['version_id']}"
        loras.append(
            {
                "lora_id": lora_id,
                "source": release.source,
                "version_id": r["version_id"],
                "model_id": r["model_id"],
                "name": r["model_name"],
                "description": r["model_description"],
                "nsfw_level": r["model_nsfw_level"],
                "folder_name": r["folder_name"],
                "download_count": r["model_download_count"],
            }
        )
        reps.append(
            {
                "lora_id": lora_id,
                "embedder": release.embedder,
                "direction": r["direction"],
                "strength": r["strength"],
                "consistency": r["consistency"],
                "n_samples": 280 * 16,
                **PAPER_PROTOCOL,
                "source": release.source,
                "source_hash": digest,
                "code_version": f"carlos-dashboard {__version__}",
            }
        )
    with store.transaction():
        added = store.loras.upsert(loras)
        store.reps.put_many(reps)
        store.loras.record_import(
            release.source, digest, len(rows), {"licence": release.licence, "member": release.member, "wheel_sha256": release.wheel_sha256}
        )
    log.info("imported %d LoRAs (%d new) from %s", len(rows), added, release.source)
    return ImportResult(release.source, digest, len(rows), added, False)


def ensure_corpus(store: Store, cache_dir: Path, *, wheel: Path | None = None) -> ImportResult:
    """Fetch (or take ``wheel``), verify, and import; the set-up commands call this."""
    release = AUTHORS_RELEASE
    if wheel is not None:
        out = release_dir(cache_dir, release) / Path(release.member).name
        parquet = extract_from_wheel(Path(wheel), out, release)
    else:
        parquet = fetch_release(cache_dir, release)
    return import_parquet(store, parquet, release)


def import_history(store: Store) -> list[dict]:
    """Every corpus import recorded in the store (source, file sha256, rows, when), oldest first."""
    return store.loras.imports()
