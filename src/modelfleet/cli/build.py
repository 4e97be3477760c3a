"""`modelfleet build`: a model source → a verified ONNX artifact folder (wraps `build_artifact`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact
from modelfleet.build.options import MAX_PROBABILITY_DIFF
from modelfleet.cli.common import console, err_console, print_json
from modelfleet.config import parse_spec
from modelfleet.errors import InvalidInput
from modelfleet.manifest import Manifest

_HELP = f"""Build a model source into a verified artifact folder (model.onnx, tokenizer, manifest.json).

SOURCE is a Hugging Face model folder, a scikit-learn .skops file (.pkl/.joblib with --trust-pickle), an XGBoost model (.json/.ubj from save_model), a LightGBM text model, an .onnx file, a TorchScript file (torch.jit.save), module:function or path/to/file.py:function returning a torch.nn.Module (with --trust-code), or {BUNDLED_SOURCE} (same as --bundled). PyTorch sources need --samples (example inputs, .npz by forward()'s parameter names).

Exit codes: 0 built; 2 bad, corrupt or untrusted source or option; 3 source not found; 4 verification failed; 5 target execution provider unavailable; 6 output exists (use --force).
"""


def build_command(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Artifact folder to write.", envvar="MODELFLEET_BUILD_OUTPUT"),
    ],
    source: Annotated[
        str | None, typer.Argument(help=f"Model source (path or {BUNDLED_SOURCE}).", show_default=False)
    ] = None,
    bundled: Annotated[
        bool, typer.Option("--bundled", help=f"Build the bundled demo model ({BUNDLED_SOURCE}).")
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(help="Model name (default: from the source).", envvar="MODELFLEET_BUILD_NAME"),
    ] = None,
    version: Annotated[
        str, typer.Option(help="Model version (digits).", envvar="MODELFLEET_BUILD_VERSION")
    ] = "1",
    precision: Annotated[
        str, typer.Option(help="fp32 or int8 (dynamic quantization).", envvar="MODELFLEET_BUILD_PRECISION")
    ] = "fp32",
    optimization: Annotated[
        str,
        typer.Option(
            help="ONNX Runtime graph optimization level: disable, basic, extended, all.",
            envvar="MODELFLEET_BUILD_OPTIMIZATION",
        ),
    ] = "all",
    optimize: Annotated[
        bool,
        typer.Option(
            "--optimize",
            help="fp32 transformer encoders (bert, roberta, ...): fuse attention, layer norms and gelu "
            "with ONNX Runtime's transformer optimizer at build time; recorded in the manifest.",
            envvar="MODELFLEET_BUILD_OPTIMIZE",
        ),
    ] = False,
    target: Annotated[
        str, typer.Option(help="cpu, cuda or tensorrt.", envvar="MODELFLEET_BUILD_TARGET")
    ] = "cpu",
    task: Annotated[
        str,
        typer.Option(
            help="What to build the source as: auto (detect), or a task such as question-answering, "
            "text-classification, token-classification, text-embedding, classification, regression, generic.",
            envvar="MODELFLEET_BUILD_TASK",
        ),
    ] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")] = False,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow pickle/joblib sources and any skops type (runs code from the file).",
        ),
    ] = False,
    trust_code: Annotated[
        bool,
        typer.Option(
            "--trust-code",
            help="Allow a module:function source: imports the module and calls the function (runs its code).",
        ),
    ] = False,
    trust: Annotated[
        list[str] | None,
        typer.Option("--trust", help="A skops type to trust, e.g. mypackage.features.clip; repeatable."),
    ] = None,
    samples: Annotated[
        Path | None,
        typer.Option(
            help="Verification inputs: .txt/.json sentences, .npy/.csv rows, or .npz arrays by input name "
            "(required for PyTorch sources: their example inputs)."
        ),
    ] = None,
    min_cosine: Annotated[
        float | None,
        typer.Option(
            help="Lowest acceptable per-sample cosine similarity (default 0.999 fp32, 0.98 int8).",
            envvar="MODELFLEET_BUILD_MIN_COSINE",
        ),
    ] = None,
    min_label_agreement: Annotated[
        float,
        typer.Option(
            help="Tabular models: lowest fraction of verification rows that must get the framework's "
            "label (or prediction); the rest are excused from the probability checks too.",
            envvar="MODELFLEET_BUILD_MIN_LABEL_AGREEMENT",
        ),
    ] = 1.0,
    max_probability_diff: Annotated[
        float,
        typer.Option(
            help="Tabular classifiers: largest acceptable difference of a class probability.",
            envvar="MODELFLEET_BUILD_MAX_PROBABILITY_DIFF",
        ),
    ] = MAX_PROBABILITY_DIFF,
    max_relative_diff: Annotated[
        float | None,
        typer.Option(
            help="PyTorch sources: largest max |artifact - torch| per float output, as a fraction of "
            "max(1, max |torch|) (default 1e-4 fp32, 0.05 int8).",
            envvar="MODELFLEET_BUILD_MAX_RELATIVE_DIFF",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    if bundled and source is not None and source != BUNDLED_SOURCE:
        raise InvalidInput("give either SOURCE or --bundled, not both")
    chosen = BUNDLED_SOURCE if bundled else source
    if chosen is None:
        raise InvalidInput(f"give a model SOURCE (a path, or {BUNDLED_SOURCE}) or --bundled")
    options = parse_spec(
        {
            "name": name,
            "version": version,
            "precision": precision,
            "optimization": optimization,
            "optimize": optimize,
            "target": target,
            "task": task,
            "force": force,
            "trust_pickle": trust_pickle,
            "trust_code": trust_code,
            "trusted_types": trust or [],
            "samples": samples,
            "min_cosine": min_cosine,
            "min_label_agreement": min_label_agreement,
            "max_probability_diff": max_probability_diff,
            "max_relative_diff": max_relative_diff,
        },
        BuildOptions,
        "build options",
    )
    started = time.perf_counter()
    with err_console.status("starting build") as status:

        def progress(stage: str) -> None:
            status.update(f"{stage} ({time.perf_counter() - started:.1f} s)")

        manifest = build_artifact(chosen, output, options, progress)
    elapsed_s = time.perf_counter() - started
    if json_output:
        print_json(manifest.model_dump(mode="json"))
        return
    _print_summary(manifest, output, elapsed_s)


def register(app: typer.Typer) -> None:
    app.command("build", help=_HELP)(build_command)


def _print_summary(manifest: Manifest, output: Path, elapsed_s: float) -> None:
    console.print(
        f"[bold green]built[/] {manifest.name}:{manifest.version} → {output} "
        f"({manifest.task}, {manifest.precision}, target {manifest.target}, {elapsed_s:.1f} s)",
        highlight=False,
    )
    detected = manifest.extra.get("detected")
    if detected:
        console.print(f"found {detected}", highlight=False)
    optimization = manifest.extra.get("optimization")
    if optimization:
        fused = ", ".join(f"{op} {count}" for op, count in optimization["fused_operators"].items())
        console.print(
            f"optimized with {optimization['tool']} {optimization['tool_version']}: fused {fused}",
            highlight=False,
        )
    for warning in manifest.extra.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    tensors = Table(title="Tensors (V2)", title_justify="left")
    for column in ("", "name", "datatype", "shape"):
        tensors.add_column(column)
    for kind, fields in (("input", manifest.inputs), ("output", manifest.outputs)):
        for field in fields:
            name = f"{field.name} (optional)" if field.optional else field.name
            tensors.add_row(kind, name, field.datatype.value, str(field.shape))
    console.print(tensors)
    checks = Table(title="Verification against the source framework", title_justify="left")
    for column in ("metric", "value", "threshold", "samples", "passed"):
        checks.add_column(column, justify="right" if column != "metric" else "left")
    for entry in manifest.verification:
        checks.add_row(
            escape(entry.metric),  # per-output metrics end in "[name]", which rich would read as markup
            _figure(entry.value),
            _figure(entry.threshold),
            str(entry.samples),
            "[green]yes[/]" if entry.passed else "[red]no[/]",
        )
    console.print(checks)
    files = Table(title="Files", title_justify="left")
    files.add_column("file")
    files.add_column("size", justify="right")
    files.add_column("sha256")
    for relative, digest in manifest.files.items():
        size_bytes = (output / relative).stat().st_size
        files.add_row(relative, _size(size_bytes), digest[:16] + "…")
    console.print(files)


def _figure(value: float) -> str:
    """Similarities near 1 need many digits; small differences read best in scientific notation."""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.6f}"


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes >= 100_000 else f"{size_bytes / 1e3:.1f} kB"
