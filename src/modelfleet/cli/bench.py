"""`modelfleet bench`: run, merge, compare and scale out load tests. Thin: every command wraps a library call."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelfleet.cli.common import console, err_console, print_json
from modelfleet.config.bench import BENCH_OPTIONS, ENV_PREFIX, BenchOption

if TYPE_CHECKING:
    from modelfleet.bench.plan import ProgressSnapshot as Snapshot
    from modelfleet.bench.results import BenchResult, PointResult, PointSummary

bench_app = typer.Typer(
    name="bench",
    help="Load-test inference endpoints honestly: open/closed loops, HDR percentiles, SLO gates.",
    no_args_is_help=True,
)


class LiveProgress:
    """A rich progress bar on stderr with live rate, p99 and errors, fed by generator snapshots."""

    def __init__(self, totals_s: list[float | None]) -> None:
        self.totals_s = totals_s
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[phase]:<7}"),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[int, TaskID] = {}

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, snapshot: Snapshot) -> None:
        index = snapshot.point_index
        if index not in self.tasks:
            for task in self.tasks.values():  # the previous point is over
                self.progress.update(task, phase="done")
            self.tasks[index] = self.progress.add_task(
                snapshot.point_label, total=self.totals_s[index], phase="", stats=""
            )
        rate = f"{snapshot.window_rate_per_s:,.0f}/s" if snapshot.window_rate_per_s is not None else "-"
        p99 = f"{snapshot.window_p99_ms:,.1f} ms" if snapshot.window_p99_ms is not None else "-"
        stats = f"rate {rate}  p99 {p99}  ok {snapshot.ok:,}  errors {snapshot.errors:,}  in flight {snapshot.in_flight}"
        self.progress.update(
            self.tasks[index], completed=snapshot.elapsed_s, phase=snapshot.phase, stats=stats
        )


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _wide(out: Console) -> Console:
    """Piped output is not a terminal and rich would squeeze tables into 80 columns: print them wider."""
    if out.is_terminal:
        return out
    return Console(file=out.file, width=160, highlight=False)


def _print_result(result: BenchResult, output: str) -> None:
    out = err_console if output == "-" else console
    target = _wide(out)
    roomy = target.width >= 130  # on a narrow terminal, keep the columns that matter most
    open_loop = any(p.loop == "open" for p in result.points)
    stable_text = {True: "yes", False: "no", None: "-"}
    # (header, value of a point, shown on a narrow terminal)
    columns: list[tuple[str, Callable[[PointResult, PointSummary], str], bool]] = [
        ("point", lambda p, s: p.label, True),
        ("sent", lambda p, s: f"{p.sent:,}", True),
        ("sent/s", lambda p, s: f"{s.achieved_send_rate_per_s:,.1f}", False),
        ("ok", lambda p, s: f"{p.ok:,}", False),
        ("err", lambda p, s: f"{s.error_rate:.1%}", True),
        ("thr/s", lambda p, s: f"{s.throughput_per_s:,.1f}", True),
        ("goodput/s", lambda p, s: f"{s.goodput_per_s:,.1f}", False),
        ("p50", lambda p, s: _fmt_ms(s.latency.p50_ms), True),
        ("p90", lambda p, s: _fmt_ms(s.latency.p90_ms), False),
        ("p99", lambda p, s: _fmt_ms(s.latency.p99_ms), True),
        ("p99.9", lambda p, s: _fmt_ms(s.latency.p99_9_ms), False),
        ("max", lambda p, s: _fmt_ms(s.latency.max_ms), True),
    ]
    if open_loop:
        columns += [
            ("p99 unc.", lambda p, s: _fmt_ms(s.uncorrected_latency.p99_ms), True),
            ("late", lambda p, s: f"{s.late_fraction:.1%}", True),
        ]
    columns.append(("stable", lambda p, s: stable_text[s.stable], True))
    shown = [c for c in columns if roomy or c[2]]
    table = Table(
        title=f"bench {result.run.mode} → {result.run.target} (latency in ms)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for header, _, _ in shown:
        table.add_column(header, justify="left" if header in ("point", "stable") else "right", no_wrap=True)
    for point, summary in _summarized(result):
        table.add_row(*(value(point, summary) for _, value, _ in shown))
    target.print(table)
    many_points = len(result.points) > 1
    for point in result.points:
        endpoints = [e for e in point.endpoints if e.sent]
        if len(endpoints) > 1 or result.run.mode == "seq":
            models = Table(
                title=f"per model{' — ' + point.label if many_points else ''}", title_justify="left"
            )
            for column in ("model", "sent", "ok", "errors", "mean ms", "p50 ms", "p99 ms"):
                models.add_column(column, justify="left" if column == "model" else "right")
            for e in endpoints[:50]:
                errors = ", ".join(f"{k} {v}" for k, v in e.errors.items()) or "0"
                models.add_row(
                    e.name,
                    str(e.sent),
                    str(e.ok),
                    errors,
                    _fmt_ms(e.mean_ms),
                    _fmt_ms(e.p50_ms),
                    _fmt_ms(e.p99_ms),
                )
            if len(endpoints) > 50:
                models.add_row(f"… {len(endpoints) - 50} more in the results file", "", "", "", "", "", "")
            _wide(out).print(models)
        errors = ", ".join(f"{kind}: {count:,}" for kind, count in point.errors.items())
        if errors:
            out.print(f"[yellow]{point.label} errors[/] {errors}", highlight=False)
    _print_verdicts(result, out)
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _print_verdicts(result: BenchResult, out: Console) -> None:
    if result.slo is None:
        return
    labels = {p.index: p.label for p in result.points}
    for verdict in result.slo.verdicts:
        mark = "[green]pass[/]" if verdict.passed else "[red]FAIL[/]"
        value = "-" if verdict.value is None else f"{verdict.value:,.4g}"
        note = f" ({verdict.note})" if verdict.note else ""
        out.print(
            f"{mark} {verdict.gate} at {labels[verdict.point]}: measured {value}{note}", highlight=False
        )


def _json_summary(result: BenchResult, output: str | None) -> dict[str, object]:
    return {
        "results_file": output,
        "run_id": result.run.id,
        "valid": result.valid,
        "slo_passed": None if result.slo is None else result.slo.passed,
        "warnings": result.warnings,
        "points": [
            {
                "label": p.label,
                "sent": p.sent,
                "ok": p.ok,
                "errors": p.errors,
                **{
                    k: v
                    for k, v in s.model_dump().items()
                    if k not in ("latency", "uncorrected_latency", "warnings")
                },
                "latency_ms": s.latency.model_dump(),
                "uncorrected_latency_ms": s.uncorrected_latency.model_dump(),
            }
            for p, s in _summarized(result)
        ],
    }


def _summarized(result: BenchResult) -> list[tuple[PointResult, PointSummary]]:
    """Points with their derived figures (a finished run or a merge always has them)."""
    return [(point, point.summary) for point in result.points if point.summary is not None]


def _default_output() -> str:
    return f"bench-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"


def _typer_parameter(option: BenchOption) -> inspect.Parameter:
    """The typer parameter of one bench option: names, help and default shown all come from the option.

    Its click default is the option's default only for --help to show: the wrapper passes on no
    default, so a spec file's value is not overridden by a default.
    """
    if not option.flags:
        info: typer.models.ParameterInfo = typer.Argument(
            metavar=option.metavar, help=option.help, envvar=option.env, show_default=False
        )
    else:
        info = typer.Option(*option.flags, help=option.help, envvar=option.env)
    if option.kind is bool:
        annotation: object = bool
        default: object = False
    else:
        annotation = (list[option.kind] if option.many else option.kind) | None  # type: ignore[name-defined]
        default = option.default_value
    return inspect.Parameter(
        option.key,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, info],  # type: ignore[valid-type]
    )


RunCommand = Callable[..., None]


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter's value was typed on the command line (not a variable, not a default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _with_bench_options(command: RunCommand) -> RunCommand:
    """Give `command` a parameter per `BENCH_OPTIONS` entry, handed to it as one `flags` mapping.

    Only values typed on the command line go into `flags`: click also reads the environment variables
    (that is how --help shows them) and fills in defaults (to show them), but the library reads the
    environment itself and knows the spec file, so the CLI and a library user merge by the same rules.
    """
    own = [
        parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for name, parameter in inspect.signature(command, eval_str=True).parameters.items()
        if name != "flags"
    ]
    keys = {option.key for option in BENCH_OPTIONS}

    def wrapper(ctx: typer.Context, **values: object) -> None:
        flags = {key: value for key, value in values.items() if key in keys and _typed(ctx, key)}
        command(flags=flags, **{key: value for key, value in values.items() if key not in keys})

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    parameters = [context, *(_typer_parameter(option) for option in BENCH_OPTIONS), *own]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__doc__ = command.__doc__
    return wrapper


@bench_app.command("run")
@_with_bench_options
def run_command(
    flags: Mapping[str, object],
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="A bench spec (YAML); options given as flags or variables override its fields.",
    ),
    fleet: Path | None = typer.Option(
        None, "--fleet", help="A running local fleet (spec file or name): every model, through its router."
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Where local fleets keep their state.", envvar="MODELFLEET_STATE_DIR"
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Results JSON path ('-' for stdout).", show_default="bench-TIME.json"
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved bench spec as YAML and exit."),
) -> None:
    """Load-test a V2 server or a plain HTTP endpoint and write a results file. Exit 1 when an SLO gate fails.

    Every run option is also an environment variable (shown with it) and a field of the --config spec: a flag wins over its variable, which wins over the spec file.
    """
    from modelfleet.bench.options import spec_from_sources

    bench_spec = spec_from_sources(config, flags, os.environ, fleet=fleet, state_dir=state_dir)
    if dry_run:
        import yaml

        sys.stdout.write(
            yaml.safe_dump(bench_spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
        )
        return
    from modelfleet.bench import run_bench, write_result
    from modelfleet.bench.slo import require_slo_passed

    destination = output or _default_output()
    if not quiet and not json_output and err_console.is_terminal:
        with LiveProgress(bench_spec.expected_point_s()) as live:
            result = run_bench(bench_spec, progress=live)
    else:
        result = run_bench(bench_spec)
    write_result(result, destination)
    if json_output and destination != "-":
        print_json(_json_summary(result, destination))
    elif not quiet or destination != "-":
        _print_result(result, destination)
        if destination != "-":
            console.print(
                f"results → {destination}  (HTML: modelfleet report {destination} -o report.html)",
                highlight=False,
            )
    require_slo_passed(result)


@bench_app.command("merge")
def merge_command(
    files: list[Path] = typer.Argument(
        ..., help="Results files (or pod logs holding one) of generators that ran together."
    ),
    output: str = typer.Option(
        "bench-merged.json", "--output", "-o", help="Merged results path ('-' for stdout)."
    ),
    slo: str | None = typer.Option(
        None,
        "--slo",
        help="Gates for the merged result (default: the inputs' gates).",
        envvar=ENV_PREFIX + "SLO",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
) -> None:
    """Combine results of many generators exactly (histograms add) into one result. Exit 1 when a gate fails."""
    from modelfleet.bench import merge_results, read_results, write_result
    from modelfleet.bench.slo import parse_slo, require_slo_passed

    gates = parse_slo(slo) if slo is not None else None
    result = merge_results([r for path in files for r in read_results(path)], gates)
    write_result(result, output)
    if json_output:
        print_json(_json_summary(result, output))
    else:
        _print_result(result, output)
        if output != "-":
            console.print(
                f"merged {len(result.run.sources)} results ({result.run.generators} generators) → {output}",
                highlight=False,
            )
    require_slo_passed(result)


@bench_app.command("compare")
def compare_command(
    baseline: Path = typer.Argument(..., help="Results file A (the baseline)."),
    candidate: Path = typer.Argument(..., help="Results file B (compared with A)."),
    html: Path | None = typer.Option(
        None, "--html", help="Also write an HTML page with the comparison charts."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Print (and chart) how B differs from A, point by point."""
    from modelfleet.bench import read_result
    from modelfleet.bench.compare import compare_results, write_compare_html

    a, b = read_result(baseline), read_result(candidate)
    comparison = compare_results(a, b)
    if html is not None:
        write_compare_html(a, b, html, names=(baseline.name, candidate.name))
    if json_output:
        print_json([row.as_dict() for row in comparison])
        return
    table = Table(title=f"{baseline.name} → {candidate.name}", title_justify="left")
    for column in ("point", "metric", "A", "B", "change"):
        table.add_column(column, justify="left" if column in ("point", "metric") else "right")
    for row in comparison:
        change = "-" if row.change is None else f"{row.change:+.1%}"
        style = "" if row.better is None else ("green" if row.better else "red")
        table.add_row(
            row.point,
            row.metric,
            row.fmt(row.a),
            row.fmt(row.b),
            f"[{style}]{change}[/]" if style else change,
        )
    _wide(console).print(table)
    if html is not None:
        console.print(f"charts → {html}", highlight=False)


@bench_app.command("render-job")
def render_job_command(
    config: Path = typer.Option(
        ..., "--config", "-c", help="Bench spec (YAML) with the total load for all pods."
    ),
    pods: int = typer.Option(..., "--pods", help="Generator pods; the load is split evenly between them."),
    image: str = typer.Option(..., "--image", help="Container image with modelfleet installed."),
    target: str | None = typer.Option(
        None, "--target", help="Target URL as seen from inside the cluster (overrides the spec)."
    ),
    name: str = typer.Option("modelfleet-bench", "--name", help="Job and ConfigMap name."),
    namespace: str = typer.Option("default", "--namespace", help="Kubernetes namespace."),
    procs_per_pod: int = typer.Option(1, "--procs-per-pod", help="Generator processes in each pod."),
    cpu: str | None = typer.Option(
        None, "--cpu", help="CPU request and limit per pod (default: one core per process)."
    ),
    memory: str = typer.Option("512Mi", "--memory", help="Memory request and limit per pod."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the manifests here instead of stdout."
    ),
) -> None:
    """Render a ConfigMap and an Indexed Job of N generator pods; merge their logs with `bench merge`."""
    from modelfleet.bench.kubejob import JobOptions, render_job
    from modelfleet.bench.options import spec_from_sources

    bench_spec = spec_from_sources(config, flags={"target": target})
    text = render_job(
        bench_spec,
        JobOptions(
            pods=pods,
            image=image,
            name=name,
            namespace=namespace,
            procs_per_pod=procs_per_pod,
            cpu=cpu,
            memory=memory,
        ),
    )
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {output}: kubectl apply -f {output}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
