"""Rendered Kubernetes objects out as text: one file each plus a kustomization.yaml, or one YAML stream."""

from __future__ import annotations

from pathlib import Path

from modelfleet.errors import InvalidInput
from modelfleet.kubeobjects import KubeObject
from modelfleet.yamlio import dump_manifest, dump_manifests


def _file_name(obj: KubeObject) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_manifests(objects: list[KubeObject], out_dir: Path) -> list[Path]:
    """One file per object plus a kustomization.yaml listing them; returns the files written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create output folder {out_dir}: {exc.strerror}") from None
    written: list[Path] = []
    names: list[str] = []
    for obj in objects:
        file_name = _file_name(obj)
        path = out_dir / file_name
        path.write_text(dump_manifest(obj), encoding="utf-8")
        written.append(path)
        names.append(file_name)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": names,
    }
    path = out_dir / "kustomization.yaml"
    path.write_text(dump_manifest(kustomization), encoding="utf-8")
    written.append(path)
    return written


def manifests_to_yaml(objects: list[KubeObject]) -> str:
    """A single multi-document YAML stream, for `fleet render` without `-o`."""
    return dump_manifests(objects)
