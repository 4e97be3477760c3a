"""Assemble a container build context for a fleet: Dockerfile, modelfleet source, verified artifacts.

Layout of the context folder (what the Dockerfile expects)::

    Dockerfile  .dockerignore  context.json
    app/        pyproject.toml, README.md, src/modelfleet/...   (built into a wheel in the first stage)
    models/     NAME/ one verified artifact per model, at /models/NAME in the image

Every artifact is checked against its manifest's hashes before it is copied, and again after, so a
corrupt file never reaches an image. `context.json` lists every file with its sha256.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelfleet
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.manifest import MANIFEST_FILE, hash_tree, read_manifest, sha256_file, verify_files

_SOURCE_FILES = ("pyproject.toml", "README.md")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".ruff_cache")
_DOCKERIGNORE = "**/__pycache__\n**/*.pyc\n**/*.egg-info\n"


@dataclass(slots=True)
class ImageContext:
    """The assembled folder and what went into it."""

    path: Path
    models: dict[str, str] = field(default_factory=dict)  # model name → sha256 of its manifest.json
    skipped_refs: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "models": self.models,
            "skipped_refs": self.skipped_refs,
            "file_count": len(self.files),
        }


def find_source_root(start: Path | None = None) -> Path:
    """The modelfleet checkout this package runs from (needed to build the wheel inside the image)."""
    here = (start or Path(modelfleet.__file__)).resolve()
    for candidate in [here, *here.parents]:
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and 'name = "modelfleet"' in pyproject.read_text(encoding="utf-8"):
            return candidate
    raise NotFound(
        "cannot find the modelfleet source tree (pyproject.toml) this package was installed from; pass --source DIR"
    )


def assemble_image_context(
    spec: FleetSpec, out_dir: Path, source_root: Path | None = None, force: bool = False
) -> ImageContext:
    """Write the build context for ``spec`` into ``out_dir`` (which must be empty unless ``force``)."""
    source = source_root if source_root is not None else find_source_root()
    dockerfile = source / "Dockerfile"
    if not dockerfile.is_file():
        raise NotFound(f"{dockerfile} does not exist: the source tree has no Dockerfile")
    if not (source / "src" / "modelfleet").is_dir():
        raise NotFound(f"{source} has no src/modelfleet package")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise Conflict(f"{out_dir} is not empty; pass --force to replace it")
        shutil.rmtree(out_dir)
    context = ImageContext(path=out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dockerfile, out_dir / "Dockerfile")
        (out_dir / ".dockerignore").write_text(_DOCKERIGNORE, encoding="utf-8")
        app = out_dir / "app"
        app.mkdir()
        for name in _SOURCE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, app / name)
        shutil.copytree(source / "src", app / "src", ignore=_IGNORED)
        models_dir = out_dir / "models"
        models_dir.mkdir()
        for model in spec.models:
            if model.path is None:
                context.skipped_refs.append(model.name)
                continue
            context.models[model.name] = _copy_artifact(model.path, models_dir / model.name)
        if not context.models:
            # COPY needs the folder to exist even when every model comes from the registry.
            (models_dir / ".keep").write_text("", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write the image context to {out_dir}: {exc.strerror or exc}") from None
    context.files = hash_tree(out_dir, exclude=("context.json",))
    (out_dir / "context.json").write_text(
        json.dumps(
            {"models": context.models, "skipped_refs": context.skipped_refs, "files": context.files},
            indent=2,
            sort_keys=True,
        )
        + "\n",
        encoding="utf-8",
    )
    return context


def _copy_artifact(source: Path, target: Path) -> str:
    manifest = read_manifest(source)
    verify_files(source, manifest)
    shutil.copytree(source, target, ignore=_IGNORED)
    # Re-check the copy: a full disk or a racing writer must not leave a silently truncated model.
    verify_files(target, read_manifest(target))
    return sha256_file(target / MANIFEST_FILE)
