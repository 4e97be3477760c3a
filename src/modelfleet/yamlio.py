"""YAML in and out: spec files read with errors that name the file and line; Kubernetes manifests written plainly."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from modelfleet.errors import NotFound, SpecError


def read_yaml_mapping(path: Path, what: str = "spec file") -> dict[str, Any]:
    """The top-level mapping of a YAML (or JSON) file; NotFound or SpecError with a one-line reason."""
    if not path.is_file():
        raise NotFound(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


class _ManifestDumper(yaml.SafeDumper):
    """Block style for multi-line strings (readable ConfigMaps) and no YAML anchors or aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def dump_manifest(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_ManifestDumper, sort_keys=False)


def dump_manifests(objects: Iterable[Any]) -> str:
    """Several objects as one multi-document YAML stream, keys in the order given."""
    return yaml.dump_all(list(objects), Dumper=_ManifestDumper, sort_keys=False)
