"""Everything a review's check functions may look at, gathered once by the collectors (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelfleet.config.fleet import FleetSpec
from modelfleet.config.review import ReviewConfig
from modelfleet.review.types import Evidence


@dataclass(frozen=True, slots=True)
class ManifestDoc:
    """One Kubernetes object: from `file` (document `index` of it), or rendered from the spec (file None)."""

    obj: dict[str, Any]
    file: str | None
    index: int = 0

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    def where(self, pointer: str) -> str:
        """`file#/pointer` (with the document index of a multi-document file), or `rendered Kind/name#pointer`."""
        if self.file is None:
            return f"rendered {self.kind}/{self.name}#{pointer}"
        suffix = f"[{self.index}]" if self.index else ""
        return f"{self.file}{suffix}#{pointer}"

    def evidence(self, pointer: str, observed: str, expected: str) -> Evidence:
        """Evidence seen at `pointer` of this object, with the file and pointer SARIF needs for the line."""
        return Evidence(self.where(pointer), observed, expected, file=self.file, pointer=pointer)


@dataclass(frozen=True, slots=True)
class Saved:
    """A saved results document and how old it is (from its own timestamp, else the file's mtime)."""

    path: str
    data: Any
    age_s: float


@dataclass(frozen=True, slots=True)
class RegistryVersion:
    """What the review needs of one served model's version in the registry."""

    model: str  # the fleet's model name
    ref: str  # NAME:VERSION
    version_count: int
    lineage_missing: tuple[str, ...]  # lineage fields that are empty
    signed: bool
    model_sha256: str  # sha256 of the model file, as registered


@dataclass(frozen=True, slots=True)
class RetrainRun:
    """One retraining run in a model's registry history: how it ended and each gate's verdict."""

    id: str
    outcome: str  # promoted, rejected, failed, skipped
    new_version: int | None
    gates: tuple[tuple[str, bool], ...]  # (gate name, passed)


@dataclass(frozen=True, slots=True)
class RegistryEvidence:
    root: str
    versions: tuple[RegistryVersion, ...]
    unresolved: tuple[str, ...]  # fleet models served from a path, not the registry
    verify_problems: tuple[str, ...]
    verified_versions: int
    last_export_age_s: float | None
    # fleet model → its retraining runs; None when this registry keeps no retraining history
    retraining: dict[str, tuple[RetrainRun, ...]] | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """One live request: what was sent, the answer's status and body excerpt (status 0: no answer)."""

    name: str
    url: str
    status: int
    body: str = ""
    model: str | None = None


@dataclass(frozen=True, slots=True)
class LiveEvidence:
    router_url: str
    auth_enabled: bool
    probes: tuple[Probe, ...]
    served_sha256: dict[str, str]  # model → sha256 the server reports
    expected_sha256: dict[str, tuple[str, str]]  # model → (sha256, where it comes from)


@dataclass(frozen=True, slots=True)
class DrillEvidence:
    """What the disruptive drills measured (None fields: that drill did not run)."""

    burst_requests: int = 0
    burst_outcomes: dict[str, int] = field(default_factory=dict)
    refusal_p99_ms: float | None = None
    timeouts: int = 0
    recovered: bool | None = None
    recovery_note: str = ""
    killed: str | None = None
    healed_s: float | None = None
    notified: bool | None = None
    notification_note: str = ""


@dataclass(frozen=True, slots=True)
class ReviewInputs:
    """The evidence of one review. `None` for a source means it was not available (its checks are UNANSWERED)."""

    now: float
    config: ReviewConfig
    spec: FleetSpec | None = None
    spec_path: str | None = None
    manifests: tuple[ManifestDoc, ...] | None = None
    registry: RegistryEvidence | None = None
    bench: tuple[Saved, ...] | None = None
    tune: Saved | None = None
    chaos: Saved | None = None
    drift: dict[str, Saved] | None = None
    live: LiveEvidence | None = None
    drill: DrillEvidence | None = None
