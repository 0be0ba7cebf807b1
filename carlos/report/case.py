"""The case file as typed data: what one report says about one or more LoRAs.

Everything a renderer prints is a field here, so the sha256 over :meth:`CaseFile.to_dict`
(:mod:`carlos.report.integrity`) covers every number, name and image of the document.
Creator-supplied text (names, descriptions, metadata, trigger words, file names) is kept as
plain text; the renderers escape it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from carlos.report.integrity import FORMAT, digest, plain


@dataclass(frozen=True)
class Identification:
    """Who the LoRA is: ids, names, file hashes (when we hold the file), declared metadata."""

    lora_id: str
    name: str | None
    source: str | None
    version_id: int | None
    model_id: int | None
    civitai_url: str | None  # printed as text, never linked: the document makes no request
    folder_name: str | None
    nsfw: str
    download_count: int | None
    sha256: str | None
    autov2: str | None  # first 10 hex digits of the sha256, upper case, as Civitai shows it
    file_name: str | None
    file_size_bytes: int | None
    file_check: str  # whether the stored copy was re-hashed and matched
    trigger_words: list[str]
    description: str | None  # the creator's description, cleaned to plain text
    declared: dict[str, Any] | None  # what the file declares: format, base model, rank, metadata


@dataclass(frozen=True)
class Distribution:
    """A histogram of one value over the LoRAs of a space (for the percentile chart)."""

    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class Measurement:
    """One representation: values, 95 % intervals, percentiles, risk class, provenance."""

    rep_id: int
    embedder: str
    dim: int
    n_samples: int
    strength: float
    consistency: float
    strength_pct: float | None  # share of the space's LoRAs at or below, in %
    consistency_pct: float | None
    space_size: int  # LoRAs in this space
    strength_interval: list[float] | None  # 95 %, of the full-protocol value
    consistency_interval: list[float] | None
    strength_text: str
    consistency_text: str
    expected_cosine: float | None  # of the Direction to the full protocol's
    risk_class: str | None  # under the thresholds in force
    risk_confidence: str  # carlos.core.confidence.risk_call label
    risk_probabilities: dict[str, float]
    excluded_because: list[str]
    flags: list[str]
    comparability: str
    provenance: dict[str, Any]  # summary: protocol, models, prompt set and hash, seeds, noise
    recorded: dict[str, Any]  # the representation's stored provenance (intervals left out: above)
    strength_distribution: Distribution | None = None
    consistency_distribution: Distribution | None = None


@dataclass(frozen=True)
class Neighbour:
    rank: int
    lora_id: str
    name: str
    score: float  # Direction cosine, or the weight-space cosine
    strength: float | None  # None in the weights section
    consistency: float | None
    excluded_because: list[str]
    flags: list[str]  # quality flags; in the weights section, the relation in words


@dataclass(frozen=True)
class Neighbours:
    """LoRAs like this one, by behaviour (Direction cosine) or by weights."""

    kind: str  # "behaviour" or "weights"
    available: bool
    message: str
    space: str | None
    n_excluded: int
    hits: list[Neighbour]


@dataclass(frozen=True)
class CategoryStrength:
    category: str
    strength: float  # mean CLIP-difference norm of the category's pairs
    pairs: int


@dataclass(frozen=True)
class ImagePair:
    pair_index: int
    prompt: str | None
    category: str | None
    seed: int | None
    base_png: str | None  # base64 PNG; blurred unless the report was made with reveal
    lora_png: str | None


@dataclass(frozen=True)
class AuditEntry:
    """One event of the LoRA's audit log: a decision, a claim or a release."""

    id: int
    at: str | None
    event: str  # decision, claim, release
    reviewer: str | None
    action: str | None
    status_before: str | None
    status_after: str | None
    note: str | None


@dataclass(frozen=True)
class LoRACase:
    """Everything the case file says about one LoRA."""

    identification: Identification
    measurements: list[Measurement]
    neighbours: list[Neighbours]
    category_strength: list[CategoryStrength]
    category_overall: float | None  # mean norm of all the local pairs (the chart's dashed line)
    category_note: str
    image_pairs: list[ImagePair]
    image_note: str
    review_status: str
    claimed_by: str | None
    audit: list[AuditEntry]  # newest first

    @property
    def headline(self) -> Measurement | None:
        """The measurement the summary shows: the newest in the corpus's space, else the newest
        (``measurements`` is in that order)."""
        return self.measurements[0] if self.measurements else None


@dataclass(frozen=True)
class ThresholdSetting:
    setting_id: int
    strength_max: float | None
    consistency_min: float | None
    reviewer: str
    note: str | None
    created_at: str | None


@dataclass(frozen=True)
class ThresholdsInForce:
    """The thresholds the risk classes were computed under, where they come from, and the audit
    trail of saved thresholds."""

    strength_max: float | None
    consistency_min: float | None
    origin: str  # "saved by ada at …", "the paper's (none saved)", "chosen for this report"
    history: list[ThresholdSetting]


@dataclass(frozen=True)
class ReportProvenance:
    """Where the report's numbers come from, as of the moment it was made."""

    store_file: str
    data_version: int | None
    schema_version: int | None
    code_version: str
    git_commit: str | None
    corpus_imports: list[dict[str, Any]]
    prompt_sets: dict[str, Any]  # name -> source file sha256 and content hash, where registered


@dataclass(frozen=True)
class CaseFile:
    """One case file: one or more LoRAs, the thresholds in force, provenance, time."""

    generated_at: str  # ISO 8601, UTC
    generated_by: str | None
    reveal: bool  # image pairs unblurred
    thresholds: ThresholdsInForce
    provenance: ReportProvenance
    loras: list[LoRACase]
    format: str = FORMAT
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        names = [c.identification.name or c.identification.lora_id for c in self.loras]
        return names[0] if len(names) == 1 else f"{len(names)} LoRAs: " + ", ".join(names[:3]) + ("…" if len(names) > 3 else "")

    def to_dict(self) -> dict[str, Any]:
        """The data every renderer prints and the sha256 covers (plain JSON types)."""
        return plain(asdict(self))

    @property
    def sha256(self) -> str:
        return digest(self.to_dict())
