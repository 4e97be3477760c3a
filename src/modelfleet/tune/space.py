"""The search space: artifact variants (deduplicated by content hash) × hardware × server settings."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from modelfleet.config.tune import TuneSpec
from modelfleet.errors import NotFound
from modelfleet.manifest import read_manifest


@dataclass(frozen=True, slots=True)
class Variant:
    """One artifact to try; `content_hash` covers every file the manifest lists (not its build time)."""

    path: Path
    name: str
    precision: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class Settings:
    """Server settings of one configuration."""

    max_batch_size: int
    max_delay_s: float
    workers: int
    intra_op_threads: int
    instances: int
    length_grouping: bool = True

    def label(self) -> str:
        threads = self.intra_op_threads or "auto"
        return (
            f"batch {self.max_batch_size}, delay {self.max_delay_s * 1000:g} ms, {self.workers}w×{threads}t"
            + (f", {self.instances} inst" if self.instances != 1 else "")
            + ("" if self.length_grouping else ", no length grouping")
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One trial: a variant on a hardware with settings. `key` identifies it in results and checkpoints."""

    variant: Variant
    hardware_index: int
    settings: Settings

    @property
    def key(self) -> str:
        data = {"artifact": self.variant.content_hash, "hw": self.hardware_index, **asdict(self.settings)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def artifact_variants(spec: TuneSpec) -> tuple[list[Variant], list[str]]:
    """Every distinct artifact, and a note for each one skipped as byte-identical to an earlier one."""
    variants: list[Variant] = []
    notes: list[str] = []
    seen: dict[str, Path] = {}
    for index, path in enumerate(spec.artifacts):
        if not path.is_dir():
            raise NotFound(
                f"artifacts.{index}: {path} is not an artifact folder (build it with `modelfleet build`)"
            )
        manifest = read_manifest(path)
        content = hashlib.sha256(json.dumps(manifest.files, sort_keys=True).encode()).hexdigest()
        if content in seen:
            notes.append(
                f"{path} is byte-identical to {seen[content]} (content hash {content[:12]}): measured once"
            )
            continue
        seen[content] = path
        variants.append(Variant(path, manifest.name, manifest.precision, content))
    return variants, notes


def settings_space(spec: TuneSpec) -> list[Settings]:
    space = spec.space
    return [
        Settings(b, d, w, t, i, g)
        for b, d, w, t, i, g in itertools.product(
            space.max_batch_size,
            space.max_delay_s,
            space.workers,
            space.intra_op_threads,
            space.instances,
            space.length_grouping,
        )
    ]


def all_candidates(spec: TuneSpec, variants: list[Variant]) -> list[Candidate]:
    return [
        Candidate(variant, hw, settings)
        for variant in variants
        for hw in range(len(spec.hardware))
        for settings in settings_space(spec)
    ]
