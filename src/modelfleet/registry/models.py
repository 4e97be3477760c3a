"""Records the registry stores and returns: versions with their lineage, alias events and reports.

They are frozen pydantic models so the CLI can print them as JSON and a bundle can carry them as-is.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Record):
    """One file of a registered version; its bytes live in the blob store under `sha256`."""

    path: str = Field(description="POSIX path inside the artifact folder, e.g. model.onnx.")
    sha256: str = Field(description="sha256 of the file's plaintext bytes; also the blob's name.")
    size_bytes: int = Field(description="Size of the file's plaintext in bytes.")


class SourceLineage(_Record):
    """Where the model came from, as the build manifest recorded it."""

    kind: str = Field(description="Source framework: huggingface, sklearn, onnx, xgboost, lightgbm or torch.")
    path: str = Field(description="Path or URI of the source the build read.")
    sha256: str = Field(description="sha256 over the source's files, as the build computed it.")


class RetrainingLineage(_Record):
    """How a retraining run made this version: trigger, data window, hook (modelfleet.drift.retrain)."""

    run: str = Field(description="Retraining run id (also in the model's retraining history).")
    trigger: dict[str, Any] = Field(
        description="What started it: kind (drift, error_rate, schedule, manual), summary and details."
    )
    window: dict[str, Any] = Field(
        description="The captured data: sha256, items, train/holdout items, first_at/last_at, labels_sha256."
    )
    hook_command: list[str] = Field(description="The hook's argv as run.")
    hook_exit_code: int = Field(description="The hook's exit status.")


class Lineage(_Record):
    """Everything needed to say how a version came to be, and to rebuild or audit it."""

    source: SourceLineage = Field(description="Source model from the build manifest.")
    source_uri: str | None = Field(
        default=None, description="Where the source lives for people (git URL, bucket URI), when given."
    )
    build_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Build settings from the manifest: task, target, precision, graph optimisation.",
    )
    training_data_sha256: str | None = Field(
        default=None, description="sha256 of the training data, when given."
    )
    training_data_uri: str | None = Field(
        default=None, description="Where the training data lives, when given."
    )
    training_params: dict[str, Any] = Field(
        default_factory=dict, description="Training parameters, when given."
    )
    parent_version: int | None = Field(
        default=None, description="The version of the same model this one was derived from, when given."
    )
    verification: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The build's verification figures (outputs compared with the source framework).",
    )
    retraining: RetrainingLineage | None = Field(
        default=None, description="The retraining run that made it, when one did."
    )
    artifact_created_at: str = Field(description="When the build wrote the artifact (ISO 8601 UTC).")
    artifact_version: str = Field(
        description="The `version` field of the build manifest (the registry numbers versions itself)."
    )
    build_libraries: dict[str, str] = Field(
        default_factory=dict, description="Library versions the build used."
    )
    registry_libraries: dict[str, str] = Field(
        default_factory=dict, description="Library versions of the process that registered it."
    )


class SignatureRecord(_Record):
    """An Ed25519 signature over a version's name, number and file hashes."""

    key_id: str = Field(description="First 16 hex digits of sha256 of the raw public key.")
    public_key_b64: str = Field(
        description="The signer's raw public key (base64). Trust comes from the keys you pass, not from this."
    )
    signature_b64: str = Field(description="The signature (base64).")
    signed_at: str = Field(description="When it was signed (ISO 8601 UTC).")
    actor: str = Field(description="Who signed it.")


class ModelVersion(_Record):
    """One immutable, numbered version of a model."""

    name: str = Field(description="Model name.")
    version: int = Field(description="Version number, 1, 2, ... per model.")
    created_at: str = Field(description="When it was registered (ISO 8601 UTC).")
    actor: str = Field(description="Who registered it.")
    manifest_sha256: str = Field(description="sha256 of the version's manifest.json.")
    size_bytes: int = Field(description="Total plaintext size of its files.")
    files: list[FileEntry] = Field(description="Every file, manifest.json included, sorted by path.")
    lineage: Lineage = Field(description="Where it came from and how it was built.")
    aliases: list[str] = Field(default_factory=list, description="Aliases that point at this version now.")
    signatures: list[SignatureRecord] = Field(default_factory=list, description="Signatures recorded for it.")

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def file_hashes(self) -> dict[str, str]:
        return {entry.path: entry.sha256 for entry in self.files}


class ModelSummary(_Record):
    name: str = Field(description="Model name.")
    latest_version: int = Field(description="Highest version number.")
    version_count: int = Field(description="How many versions are registered.")
    aliases: dict[str, int] = Field(default_factory=dict, description="Alias → version it points at.")
    updated_at: str = Field(description="When the latest version was registered.")


AliasAction = Literal["set", "promote", "rollback"]


class AliasEvent(_Record):
    """One move of an alias, kept forever so every promotion and rollback can be traced."""

    id: int = Field(description="Event number, increasing.")
    name: str = Field(description="Model name.")
    alias: str = Field(description="Alias that moved, e.g. production.")
    action: AliasAction = Field(description="set, promote or rollback.")
    from_version: int | None = Field(description="Where the alias pointed before; null when it was new.")
    to_version: int = Field(description="Where it points after.")
    reason: str = Field(description="Why, as given by the actor.")
    actor: str = Field(description="Who moved it.")
    at: str = Field(description="When (ISO 8601 UTC).")


RolloutOutcome = Literal["promoted", "rolled_back", "aborted", "failed"]


class RolloutStep(_Record):
    """One step of a rollout: the canary's share, how long it was held, both versions' figures, the verdict."""

    phase: str = Field(description="`shadow` (mirrored only) or `canary`.")
    canary_percent: float = Field(description="Share of client traffic the new version had, in percent.")
    shadow_percent: float = Field(description="Share of baseline traffic mirrored to it, in percent.")
    started_at: str = Field(description="When the step began (ISO 8601 UTC).")
    duration_s: float = Field(description="How long it was held.")
    baseline: dict[str, Any] = Field(description="Baseline attempts in the window: requests, errors, p99_ms.")
    canary: dict[str, Any] = Field(description="Canary attempts in the window: requests, errors, p99_ms.")
    verdict: str = Field(description="`passed`, or why the step failed.")


class RolloutRecord(_Record):
    """A rollout of a model from one version to another through a fleet's router, kept with its history."""

    id: str = Field(description="Rollout id (random hex).")
    name: str = Field(description="Model name in the registry.")
    alias: str = Field(description="Alias the fleet serves, moved on promotion.")
    fleet: str = Field(description="Fleet that ran it.")
    fleet_model: str = Field(description="Model name in the fleet.")
    from_version: int = Field(description="Version the alias pointed at when it began.")
    to_version: int = Field(description="Version rolled out.")
    actor: str = Field(description="Who ran it.")
    outcome: RolloutOutcome = Field(description="promoted, rolled_back, aborted (interrupted) or failed.")
    reason: str = Field(description="Why it ended so: the breached gate, the error, or `every step passed`.")
    started_at: str = Field(description="When it began (ISO 8601 UTC).")
    finished_at: str = Field(description="When it ended (ISO 8601 UTC).")
    duration_s: float = Field(description="Start to end.")
    schedule_percent: list[float] = Field(description="Canary shares it was to go through, in percent.")
    steps: list[RolloutStep] = Field(default_factory=list, description="Steps held, in order.")
    rollback_s: float | None = Field(
        default=None,
        description="Breach seen → router sending the canary nothing, in seconds (rolled back only).",
    )
    shadow: dict[str, Any] | None = Field(
        default=None, description="Shadow comparison: mirrored, compared, label_agreement, cosine_mean/min."
    )


RetrainOutcome = Literal["promoted", "rejected", "failed", "skipped"]


class RetrainStep(_Record):
    """One step of a retraining run: snapshot, hook, build, register, gates, promote."""

    step: str = Field(description="snapshot, hook, build, register, gates or promote.")
    status: Literal["ok", "failed"] = Field(description="How it ended.")
    detail: str = Field(description="One line: what it did or why it failed.")
    duration_s: float = Field(description="How long it took.")


class RetrainRecord(_Record):
    """A retraining run of one fleet model, kept with the registry model's history."""

    id: str = Field(description="Run id (also its folder under the fleet's retrain_dir).")
    name: str = Field(description="Model name in the registry.")
    fleet: str = Field(description="Fleet whose model was retrained.")
    fleet_model: str = Field(description="Model name in the fleet.")
    trigger: dict[str, Any] = Field(description="What started it: kind, summary, details.")
    parent_version: int | None = Field(description="Version served when it began.")
    new_version: int | None = Field(default=None, description="Version it registered, if it got that far.")
    outcome: RetrainOutcome = Field(
        description="promoted, rejected (a gate or the rollout said no), failed (an error) or skipped "
        "(another run of the model was under way)."
    )
    reason: str = Field(description="Why it ended so.")
    actor: str = Field(description="Who ran it.")
    started_at: str = Field(description="When it began (ISO 8601 UTC).")
    finished_at: str = Field(description="When it ended (ISO 8601 UTC).")
    window: dict[str, Any] = Field(
        default_factory=dict, description="The data window (see RetrainingLineage)."
    )
    hook: dict[str, Any] = Field(
        default_factory=dict, description="command, exit_code, duration_s and stderr_tail of the hook."
    )
    gates: list[dict[str, Any]] = Field(
        default_factory=list, description="Each gate: name, current, candidate, bound, passed."
    )
    rollout: str | None = Field(default=None, description="Rollout id, when promotion went through one.")
    steps: list[RetrainStep] = Field(default_factory=list, description="Steps run, in order.")


class BlobProblem(_Record):
    sha256: str = Field(description="The blob's name.")
    problem: Literal["missing", "corrupt"] = Field(description="What is wrong.")
    detail: str = Field(description="Human explanation.")
    used_by: list[str] = Field(description="NAME:VERSION/PATH of every file that needs this blob.")


class VerifyReport(_Record):
    checked_versions: int = Field(description="Versions whose files were checked.")
    checked_blobs: int = Field(description="Distinct blobs read and hashed.")
    checked_bytes: int = Field(description="Plaintext bytes hashed.")
    problems: list[BlobProblem] = Field(default_factory=list, description="Missing or corrupt blobs.")
    signature_problems: list[str] = Field(
        default_factory=list, description="Versions with a bad signature or no trusted one."
    )
    index_problems: list[str] = Field(
        default_factory=list, description="What SQLite's integrity check reported."
    )
    orphan_blobs: int = Field(default=0, description="Blobs no version uses (harmless; `gc` removes them).")
    temp_files: int = Field(
        default=0, description="Leftover temp files of interrupted writes (harmless; `gc` removes them)."
    )

    @property
    def ok(self) -> bool:
        return not (self.problems or self.signature_problems or self.index_problems)


class GcReport(_Record):
    dry_run: bool = Field(description="True when nothing was removed, only counted.")
    removed_blobs: int = Field(description="Unreferenced blobs removed (or that would be).")
    freed_bytes: int = Field(description="Bytes on disk freed (or that would be).")
    removed_temp_files: int = Field(description="Leftover temp files removed (or that would be).")


# What a bundle holds: one version, one model with its history, or the whole registry.
ExportScope = Literal["version", "model", "all"]


class ExportReport(_Record):
    path: str = Field(description="The bundle file written.")
    scope: ExportScope = Field(description="What it holds.")
    versions: list[str] = Field(description="NAME:VERSION of every version in it.")
    blobs: int = Field(description="Distinct blobs in it.")
    size_bytes: int = Field(description="Size of the bundle file.")


class ImportReport(_Record):
    versions_added: list[str] = Field(
        default_factory=list, description="Versions now registered that were not before."
    )
    versions_present: list[str] = Field(
        default_factory=list, description="Versions already registered with identical hashes."
    )
    blobs_written: int = Field(
        default=0, description="Blobs written to the store (the rest were already there)."
    )
    aliases_set: list[str] = Field(default_factory=list, description="NAME@ALIAS set from the bundle.")
    aliases_kept: list[str] = Field(
        default_factory=list,
        description="NAME@ALIAS that already pointed elsewhere here and were left alone.",
    )
    events_added: int = Field(default=0, description="Alias history events restored.")
