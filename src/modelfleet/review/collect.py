"""Evidence collectors: the target (fleet spec, local fleet name, or Kubernetes YAML), the registry, saved results.

Each reads files only; live probes and drills are in probes.py. A file of the wrong kind is a one-line
InvalidInput (exit 2), a spec that does not validate a SpecError (exit 2), a missing path NotFound (exit 3).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound, SpecError
from modelfleet.review.inputs import ManifestDoc, RegistryEvidence, RegistryVersion, RetrainRun, Saved

_LINEAGE_FIELDS = ("source_uri", "training_data_uri")


@dataclass(frozen=True, slots=True)
class Target:
    """What `modelfleet review TARGET` names: a spec (and maybe its local fleet), or manifests only."""

    label: str
    spec: FleetSpec | None
    spec_path: Path | None
    manifests_path: Path | None
    fleet_root: Path | None  # the local fleet's state folder, when it has one


def _is_manifest_file(path: Path) -> bool:
    try:
        first = next(iter(yaml.safe_load_all(path.read_text(encoding="utf-8"))), None)
    except yaml.YAMLError:
        return False
    return isinstance(first, dict) and "kind" in first and "apiVersion" in first


def resolve_target(target: str, state_root: Path | None = None) -> Target:
    """A manifests folder or file, a fleet spec file, or the name of a local fleet (its saved spec)."""
    from modelfleet.fleet.sizing import load_fleet_spec
    from modelfleet.fleet.state import FleetPaths

    path = Path(target)
    if path.is_dir():
        return Target(str(path), None, None, path, None)
    if path.is_file():
        if path.suffix in (".yaml", ".yml", ".json") and _is_manifest_file(path):
            return Target(str(path), None, None, path, None)
        spec = load_fleet_spec(path)
        root = FleetPaths.for_fleet(spec.name, state_root).root
        return Target(str(path), spec, path, None, root if (root / "state.json").is_file() else None)
    if "/" in target or target.endswith((".yaml", ".yml")):
        raise NotFound(
            f"review target {target} does not exist (give a fleet spec, a manifests folder or a fleet name)"
        )
    from modelfleet.fleet.local import resolve_fleet
    from modelfleet.fleet.state import read_state

    paths = resolve_fleet(target, state_root)
    spec_path = Path(read_state(paths).spec_path)
    return Target(target, load_fleet_spec(spec_path), spec_path, None, paths.root)


def read_manifests(path: Path) -> tuple[ManifestDoc, ...]:
    """Every Kubernetes object in a YAML file or a folder of them (kustomization.yaml skipped)."""
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    docs: list[ManifestDoc] = []
    for file in files:
        if file.name == "kustomization.yaml":
            continue
        try:
            loaded = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise SpecError(f"{file}: not valid YAML{where}") from None
        for index, obj in enumerate(loaded):
            if isinstance(obj, dict) and "kind" in obj:
                docs.append(ManifestDoc(obj, str(file), index))
    if not docs:
        raise InvalidInput(
            f"{path}: no Kubernetes object found (expected YAML documents with apiVersion and kind)"
        )
    return tuple(docs)


def rendered_manifests(spec: FleetSpec) -> tuple[ManifestDoc, ...]:
    """The fleet's Kubernetes objects, as `modelfleet fleet render` writes them."""
    from modelfleet.fleet.kubernetes import render_fleet
    from modelfleet.fleet.sizing import plan_from_spec

    return tuple(ManifestDoc(obj, None) for obj in render_fleet(plan_from_spec(spec)))


def _age(path: Path, stamp: str | None, now: float) -> float:
    if stamp:
        try:
            return max(0.0, now - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return max(0.0, now - path.stat().st_mtime)


@dataclass(frozen=True, slots=True)
class SavedResults:
    bench: tuple[Saved, ...]
    tune: Saved | None
    chaos: Saved | None


def _chaos_shaped(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("scenarios"), list)
        and all(
            isinstance(s, dict) and "name" in s and isinstance(s.get("verdicts"), list)
            for s in document["scenarios"]
        )
    )


def read_results_dir(folder: Path, now: float) -> SavedResults:
    """Bench, tune and chaos results in `folder` (*.json); any other JSON there is a one-line error."""
    from modelfleet.bench.results import RESULT_KIND, read_result
    from modelfleet.tune.results import TUNE_KIND
    from modelfleet.tune.results import read_result as read_tune

    if not folder.is_dir():
        raise NotFound(f"results folder {folder} does not exist")
    bench: list[Saved] = []
    tune: Saved | None = None
    chaos: Saved | None = None
    for path in sorted(folder.glob("*.json")):
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            raise InvalidInput(
                f"{path}: not JSON (a results folder holds bench, tune and chaos results)"
            ) from None
        kind = document.get("kind") if isinstance(document, dict) else None
        if kind == RESULT_KIND:
            result = read_result(path)
            bench.append(Saved(str(path), result, _age(path, result.run.finished_at, now)))
        elif kind == TUNE_KIND:
            tuned = read_tune(path)
            saved = Saved(str(path), tuned, _age(path, tuned.finished_at or tuned.started_at, now))
            tune = saved if tune is None or saved.age_s < tune.age_s else tune
        elif _chaos_shaped(document):
            chaos = Saved(str(path), document, _age(path, None, now))
        else:
            raise InvalidInput(
                f"{path}: not a bench, tune or chaos result (expected kind {RESULT_KIND!r} or {TUNE_KIND!r}, "
                "or benchmarks/chaos.py's scenarios)"
            )
    return SavedResults(tuple(bench), tune, chaos)


def read_drift(fleet_root: Path | None, now: float) -> dict[str, Saved] | None:
    """The last DriftAssessment line of each `<drift_dir>/<model>.jsonl`; None when the folder is missing."""
    if fleet_root is None or not (fleet_root / "drift").is_dir():
        return None
    found: dict[str, Saved] = {}
    for path in sorted((fleet_root / "drift").glob("*.jsonl")):
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("at"), int | float):
                found[path.stem] = Saved(str(path), record, max(0.0, now - float(record["at"])))
                break
    return found


def read_registry(root: Path, spec: FleetSpec | None, now: float) -> RegistryEvidence:
    """Versions the fleet serves (or every model's latest), their lineage and signatures, verify, last export."""
    from modelfleet.registry.store import Registry

    registry = Registry(root, create=False)
    versions: list[RegistryVersion] = []
    unresolved: list[str] = []
    wanted: list[tuple[str, str]] = (
        [(m.name, m.ref) if m.ref else (m.name, "") for m in spec.models]
        if spec is not None
        else [(s.name, s.name) for s in registry.list_models()]
    )
    for model, ref in wanted:
        if not ref:
            unresolved.append(model)
            continue
        try:
            version = registry.get(ref)
        except ModelfleetError:
            unresolved.append(model)
            continue
        lineage = version.lineage
        missing = tuple(name for name in _LINEAGE_FIELDS if not getattr(lineage, name))
        hashes = version.file_hashes()
        model_file = next((p for p in sorted(hashes) if p.endswith(".onnx")), "")
        versions.append(
            RegistryVersion(
                model=model,
                ref=version.ref,
                version_count=len(registry.list_versions(version.name)),
                lineage_missing=missing,
                signed=bool(version.signatures),
                model_sha256=hashes.get(model_file, ""),
            )
        )
    report = registry.verify()
    problems = [f"{p.problem} blob {p.sha256[:12]}… used by {', '.join(p.used_by)}" for p in report.problems]
    problems += list(report.signature_problems) + list(report.index_problems)
    return RegistryEvidence(
        root=str(root),
        versions=tuple(versions),
        unresolved=tuple(unresolved),
        verify_problems=tuple(problems),
        verified_versions=report.checked_versions,
        last_export_age_s=_last_export_age(root / "audit.jsonl", now),
        retraining=_retraining(registry, versions),
    )


def _retraining(registry: Any, versions: list[RegistryVersion]) -> dict[str, tuple[RetrainRun, ...]] | None:
    """Each served model's retraining runs (modelfleet.registry.retraining); None where the registry has none."""
    try:
        from modelfleet.registry.retraining import retraining_runs  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # a modelfleet without drift-triggered retraining
        return None
    found: dict[str, tuple[RetrainRun, ...]] = {}
    for version in versions:
        records = retraining_runs(registry, version.ref.split(":", 1)[0])
        found[version.model] = tuple(
            RetrainRun(
                str(r.id),
                str(r.outcome),
                r.new_version,
                tuple((str(g.get("name", "?")), bool(g.get("passed"))) for g in r.gates),
            )
            for r in records
        )
    return found


def _last_export_age(audit: Path, now: float) -> float | None:
    if not audit.is_file():
        return None
    last = None
    for line in audit.read_bytes().splitlines():
        if b"registry.export" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "registry.export" and record.get("outcome", "ok") in ("ok", "success"):
            last = record.get("at")
    if not isinstance(last, str):
        return None
    return max(0.0, now - datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp())


def now_s() -> float:
    return time.time()
