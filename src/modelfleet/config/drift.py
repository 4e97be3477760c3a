"""Per-model drift settings: sampling of served traffic, its optional capture to disk, the reference, the tests.

One `drift:` block on a model's runtime settings (serve spec and fleet spec alike); docs/drift.md lists every
field with its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from modelfleet.config.base import SpecModel

ReferenceSource = Literal["build", "file", "served"]
Correction = Literal["holm", "benjamini_hochberg"]


class CaptureConfig(SpecModel):
    """Sampled items appended to JSON-lines files for retraining: rotated, and capped in size and count."""

    enabled: bool = Field(default=False, description="Append every sampled item to the capture files.")
    dir: Path | None = Field(
        default=None,
        description="Folder of this model's capture files. Unset: a local fleet's capture/<model>/ folder "
        "(the supervisor tells its servers); a server outside a fleet then captures nothing.",
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=4096,
        description="Most bytes of capture files kept per model (all writers together); the oldest files go first.",
    )
    max_file_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="A capture file is closed and a new one started once it holds this many bytes.",
    )
    max_files: int = Field(
        default=64, ge=1, description="Most capture files kept per model; the oldest go first."
    )
    flush_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Sampled items are buffered and written by a background thread at most this long after serving.",
    )
    max_buffered_items: int = Field(
        default=10_000,
        ge=1,
        description="Items waiting to be written; beyond this new ones are dropped from the capture (counted).",
    )

    @model_validator(mode="after")
    def _file_within_total(self) -> CaptureConfig:
        if self.max_file_bytes > self.max_bytes:
            raise ValueError("drift.capture.max_file_bytes must not exceed drift.capture.max_bytes")
        return self

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "dir")


class ReferenceConfig(SpecModel):
    """What served traffic is compared with."""

    source: ReferenceSource = Field(
        default="served",
        description="`build`: the artifact's drift_reference.jsonl, when its build wrote one; `file`: the file "
        "in `path`; `served`: the first `served_items` sampled items after the version was loaded.",
    )
    path: Path | None = Field(
        default=None,
        description="With source `file`: a .jsonl (one item per line: {input name: value} or a capture line), "
        ".csv (rows of the model's one 2-D input, optional header) or .npy file (its first axis is items).",
    )
    served_items: int = Field(
        default=1000, ge=10, description="With source `served`: sampled items that make the reference."
    )
    max_items: int = Field(
        default=10_000,
        ge=10,
        description="A larger reference file is subsampled (fixed seed) to this many items.",
    )

    @model_validator(mode="after")
    def _path_for_file(self) -> ReferenceConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("drift.reference.source `file` needs drift.reference.path")
        return self

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "path")


class DriftConfig(SpecModel):
    """Drift detection for one model: sample served items into a bounded window and test it against a reference."""

    sample_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Fraction of requests whose items are sampled (one random draw per request); 0 turns "
        "sampling, capture and detection off.",
    )
    sensitive: bool = Field(
        default=False,
        description="The model serves personal or secret data: nothing is sampled or captured, whatever sample_rate says.",
    )
    window_items: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Reservoir size: the most sampled items kept per model and process (a uniform sample of "
        "everything served since the version loaded, Algorithm R).",
    )
    max_items_per_request: int = Field(
        default=8,
        ge=1,
        description="Most items of one sampled request offered to the window, so a large batch cannot dominate it.",
    )
    min_window_items: int = Field(
        default=100, ge=2, description="A smaller window is not judged (the assessment says so)."
    )
    min_reference_items: int = Field(
        default=100, ge=2, description="A smaller reference is not judged (the assessment says so)."
    )
    alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Family-wise (Holm) or false-discovery (Benjamini-Hochberg) rate of the p-value tests.",
    )
    correction: Correction = Field(
        default="holm", description="Multiple-testing correction across a model's p-value tests."
    )
    large_reference_items: int = Field(
        default=5000,
        ge=2,
        description="From this many reference items on, per-feature tests are distances against thresholds "
        "(Wasserstein, Jensen-Shannon) instead of p-values (KS, chi-square), which flag negligible shifts then.",
    )
    wasserstein_threshold: float = Field(
        default=0.15,
        gt=0,
        description="Drift when a continuous feature's Wasserstein distance, in reference standard deviations, exceeds this.",
    )
    jensen_shannon_threshold: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Drift when a categorical feature's Jensen-Shannon distance (base 2, 0..1) exceeds this.",
    )
    psi_bins: int = Field(
        default=10,
        ge=2,
        le=100,
        description="Reference-quantile bins of the PSI and of the report's histograms.",
    )
    categorical_max_values: int = Field(
        default=10,
        ge=2,
        description="A feature with at most this many distinct reference values (or an integer/text one) is categorical: chi-square.",
    )
    max_tabular_features: int = Field(
        default=32,
        ge=1,
        description="A tensor with more values per item than this (an embedding, an image) is tested as one "
        "vector (MMD) instead of feature by feature.",
    )
    mmd_permutations: int = Field(
        default=200,
        ge=19,
        le=5000,
        description="Permutations of the MMD test (its p-value resolution is 1/(n+1)).",
    )
    mmd_max_items: int = Field(
        default=400,
        ge=10,
        le=5000,
        description="Items per side the MMD test uses (a fixed-seed subsample): its cost grows with the square.",
    )
    check_interval_s: float = Field(
        default=60.0, ge=0.1, description="How often the fleet's drift monitor judges this model."
    )
    capture: CaptureConfig = Field(
        default_factory=CaptureConfig, description="Sampled items written to disk."
    )
    reference: ReferenceConfig = Field(
        default_factory=ReferenceConfig, description="What served traffic is compared with."
    )

    @property
    def sampling(self) -> bool:
        """Whether this model samples anything: a rate above 0 and not marked sensitive."""
        return self.sample_rate > 0 and not self.sensitive

    def resolve_paths(self, base: Path) -> None:
        self.capture.resolve_paths(base)
        self.reference.resolve_paths(base)
