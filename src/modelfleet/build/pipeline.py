"""source → verified artifact: load, export, (quantize), verify, hash, write atomically."""

from __future__ import annotations

import importlib.metadata
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelfleet import __version__
from modelfleet.build.atomic import check_output_free, staged_output
from modelfleet.build.exported import ExportedModel, no_progress
from modelfleet.build.optimize import check_optimizable, optimize_encoder
from modelfleet.build.options import BuildOptions
from modelfleet.build.quantize import quantize_int8
from modelfleet.build.sources import ResolvedSource, hash_source, resolve_source
from modelfleet.build.verify import check_target_available, open_session, require_passed
from modelfleet.errors import InvalidInput
from modelfleet.manifest import DRIFT_REFERENCE_FILE, MANIFEST_FILE, Manifest, Source, hash_tree
from modelfleet.types import ModelRef, Progress

MODEL_FILE = "model.onnx"
_WORK_DIR = ".work"  # inside the staging folder; removed before hashing
_ALWAYS_RECORDED = ("onnxruntime", "numpy")


def build_artifact(
    source: str | Path, output: Path, options: BuildOptions | None = None, progress: Progress | None = None
) -> Manifest:
    """Build `source` (a path, or "bundled:all-MiniLM-L6-v2") into the artifact folder `output`.

    Returns the manifest written to `output/manifest.json`. Raises NotFound (missing source),
    InvalidInput (unsupported, corrupt or untrusted source; bad options), Conflict (output exists
    without `force`), Unavailable (target provider missing) or VerificationFailed; in every failure
    case nothing is left at `output` or beside it.
    """
    options = options or BuildOptions()
    report = progress or no_progress
    output = Path(output)
    check_output_free(output.absolute(), options.force)
    check_target_available(options.target)
    resolved = resolve_source(source)
    encoder_shape = check_optimizable(resolved.kind, resolved.path, options)
    name = _model_name(options.name or resolved.default_name)
    source_record = Source(kind=resolved.kind, path=str(resolved.path), sha256=hash_source(resolved.path))
    with staged_output(output, options.force) as stage:
        work = stage / _WORK_DIR
        work.mkdir()
        exported = _export(resolved, work, options, report)
        _check_task(exported, options)
        report(f"found {exported.detected or resolved.kind} → {exported.task}")
        quantization = None
        model_path = stage / MODEL_FILE
        optimization = None
        if encoder_shape is not None:
            report("optimizing")
            optimized_path = work / "optimized.onnx"
            optimization = optimize_encoder(
                exported.onnx_path, optimized_path, encoder_shape, use_gpu=options.target != "cpu"
            )
            exported.onnx_path = optimized_path
        if options.precision == "int8":
            report("quantizing")
            quantization = quantize_int8(
                exported.onnx_path,
                model_path,
                exported.calibration_feeds,
                options.cosine_threshold(),
                lambda path: open_session(path, options.target, options.optimization),
                work,
            )
        else:
            shutil.move(exported.onnx_path, model_path)
        for relative, path in exported.side_files.items():
            shutil.move(path, stage / relative)
        report("verifying")
        verifications = exported.verify(open_session(model_path, options.target, options.optimization), stage)
        require_passed(verifications)
        _write_drift_reference(exported, stage)
        report("writing artifact")
        shutil.rmtree(work)
        extra: dict[str, Any] = {
            "source_reference": resolved.reference,
            "build_options": _options_record(options),
        }
        extra.update(exported.extra)
        if exported.detected:
            extra["detected"] = exported.detected
        if exported.warnings:
            extra["warnings"] = list(exported.warnings)
        if quantization is not None:
            extra["quantization"] = quantization.as_dict()
        if optimization is not None:
            extra["optimization"] = optimization.as_dict()
        manifest = Manifest(
            name=name,
            version=options.version,
            task=exported.task,  # type: ignore[arg-type]  # exporters only produce the manifest's tasks
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            source=source_record,
            target=options.target,
            precision=options.precision,
            graph_optimization_level=options.optimization,
            model_file=MODEL_FILE,
            inputs=exported.inputs,
            outputs=exported.outputs,
            preprocessing=exported.preprocessing,
            postprocessing=exported.postprocessing,
            files=hash_tree(stage),
            verification=verifications,
            libraries=library_versions(exported.libraries),
            extra=extra,
        )
        (stage / MANIFEST_FILE).write_bytes(manifest.to_json_bytes())
    return manifest


def _write_drift_reference(exported: ExportedModel, stage: Path) -> None:
    """The verification inputs as the artifact's drift reference, when they are what clients send.

    Only for models without pre-processing (tabular and plain ONNX graphs): there the verification feed is
    the served inputs themselves; a text model's feed is token ids, which no client sends, so text models
    take a `served` or `file` reference instead (docs/drift.md).
    """
    if exported.preprocessing is not None or not exported.calibration_feeds:
        return
    feed = exported.calibration_feeds[0]
    if {field.name for field in exported.inputs} != set(feed):
        return
    rows = len(next(iter(feed.values())))
    with (stage / DRIFT_REFERENCE_FILE).open("wb") as handle:
        for row in range(rows):
            item = {name: np.asarray(values[row]).tolist() for name, values in feed.items()}
            handle.write(orjson.dumps({"inputs": item}) + b"\n")


def library_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the libraries that shaped the artifact (read from metadata, not imported)."""
    versions = {"modelfleet": __version__}
    for name in (*_ALWAYS_RECORDED, *distributions):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _export(resolved: ResolvedSource, work: Path, options: BuildOptions, report: Progress) -> ExportedModel:
    # Each exporter imports its heavy framework (torch, skl2onnx, ...) only when called.
    if resolved.kind == "huggingface":
        from modelfleet.build.huggingface import export_huggingface

        return export_huggingface(resolved.path, work, options, report)
    if resolved.kind == "sklearn":
        from modelfleet.build.sklearn import export_sklearn

        assert resolved.sklearn_format is not None
        return export_sklearn(resolved.path, resolved.sklearn_format, work, options, report)
    if resolved.kind in ("xgboost", "lightgbm"):
        from modelfleet.build.boosted_trees import export_boosted_trees

        return export_boosted_trees(resolved.path, resolved.kind, work, options, report)
    if resolved.kind == "torch":
        from modelfleet.build.torch_module import export_torch

        return export_torch(resolved, work, options, report)
    from modelfleet.build.onnx_source import export_onnx

    return export_onnx(resolved.path, work, options, report)


def _check_task(exported: ExportedModel, options: BuildOptions) -> None:
    """An exporter that cannot build the asked task must not pass off another one as it."""
    if options.task not in ("auto", exported.task):
        raise InvalidInput(
            f"--task {options.task}: the source ({exported.detected or 'this kind'}) builds as "
            f"{exported.task}, not {options.task}; leave --task out to detect it"
        )


def _model_name(name: str) -> str:
    try:
        ref = ModelRef.parse(name)
    except ValueError as exc:
        raise InvalidInput(f"--name: {exc}") from None
    if ref.version is not None or ref.alias is not None:
        raise InvalidInput(f"--name {name!r} must be a bare name; give the version with --version")
    return ref.name


def _options_record(options: BuildOptions) -> dict[str, Any]:
    record = options.model_dump(mode="json", exclude={"force"})
    return {k: v for k, v in record.items() if v not in (None, [], False)}
