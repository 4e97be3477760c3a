"""Lineage: what a version records about where it came from, built from the manifest and the caller's extras."""

from __future__ import annotations

import hashlib
import platform
from contextlib import suppress
from importlib import metadata
from pathlib import Path
from typing import Any

from modelfleet import __version__
from modelfleet.errors import IntegrityError, InvalidInput, NotFound
from modelfleet.manifest import MANIFEST_FILE, Manifest, sha256_file
from modelfleet.registry.blobs import is_sha256_hex
from modelfleet.registry.checkout import check_relative_path
from modelfleet.registry.models import Lineage, SourceLineage


def digest_path(path: Path) -> str:
    """sha256 of a file, or of a folder as sha256 over ``path\\0sha256\\n`` lines of its files in sorted order."""
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path).as_posix()}\0{sha256_file(item)}\n".encode())
        return digest.hexdigest()
    raise NotFound(f"{path} does not exist")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "modelfleet": __version__}
    for package in ("cryptography", "onnxruntime", "numpy"):
        with suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def planned_files(artifact_dir: Path, manifest: Manifest) -> list[tuple[str, str, int]]:
    """(path, sha256, size) of every file the manifest lists, refusing unsafe paths and missing files."""
    planned = []
    for relative, sha256 in sorted(manifest.files.items()):
        check_relative_path(relative)
        if relative == MANIFEST_FILE:
            raise InvalidInput(
                f"artifact {artifact_dir}: the manifest must not list {MANIFEST_FILE} among its files"
            )
        if not is_sha256_hex(sha256):
            raise InvalidInput(
                f"artifact {artifact_dir}: file {relative} has no valid sha256 in the manifest"
            )
        path = artifact_dir / relative
        if not path.is_file():
            raise IntegrityError(f"artifact {artifact_dir}: file {relative} is missing")
        planned.append((relative, sha256, path.stat().st_size))
    return planned


def build_lineage(
    manifest: Manifest,
    source_uri: str | None,
    training_data_sha256: str | None,
    training_data_uri: str | None,
    training_params: dict[str, Any] | None,
    parent_version: int | None,
) -> Lineage:
    build_options: dict[str, Any] = {
        "task": manifest.task,
        "target": manifest.target,
        "precision": manifest.precision,
        "graph_optimization_level": manifest.graph_optimization_level,
        "model_file": manifest.model_file,
    }
    extra_options = manifest.extra.get("build_options")
    if isinstance(extra_options, dict):
        build_options.update(extra_options)
    return Lineage(
        source=SourceLineage(
            kind=manifest.source.kind, path=manifest.source.path, sha256=manifest.source.sha256
        ),
        source_uri=source_uri,
        build_options=build_options,
        training_data_sha256=training_data_sha256,
        training_data_uri=training_data_uri,
        training_params=dict(training_params or {}),
        parent_version=parent_version,
        verification=[v.model_dump(mode="json") for v in manifest.verification],
        artifact_created_at=manifest.created_at,
        artifact_version=manifest.version,
        build_libraries=dict(manifest.libraries),
        registry_libraries=library_versions(),
    )
