"""`modelfleet bench`: run, merge, compare and scale out load tests. Thin: every command wraps a library call."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelfleet.cli.common import console, err_console, print_json
from modelfleet.errors import GateFailed

bench_app = typer.Typer(
    name="bench",
    help="Load-test inference endpoints honestly: open/closed loops, HDR percentiles, SLO gates.",
    no_args_is_help=True,
)

_ENV = "MODELFLEET_BENCH_"


class LiveProgress:
    """A rich progress bar on stderr with live rate, p99 and errors, fed by generator snapshots."""

    def __init__(self, totals_s: dict[int, float | None]) -> None:
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

    def __call__(self, snapshot: Any) -> None:
        index = snapshot.point_index
        if index not in self.tasks:
            for task in self.tasks.values():  # the previous point is over
                self.progress.update(task, phase="done")
            self.tasks[index] = self.progress.add_task(
                snapshot.point_label, total=self.totals_s.get(index), phase="", stats=""
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


def _print_result(result: Any, output: str) -> None:
    out = err_console if output == "-" else console
    target = _wide(out)
    roomy = target.width >= 130  # on a narrow terminal, keep the columns that matter most
    open_loop = any(p.loop == "open" for p in result.points)
    stable_text = {True: "yes", False: "no", None: "-"}
    # (header, value of a point, shown on a narrow terminal)
    columns: list[tuple[str, Any, bool]] = [
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
    for point in result.points:
        table.add_row(*(value(point, point.summary) for _, value, _ in shown))
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


def _print_verdicts(result: Any, out: Any) -> None:
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


def _json_summary(result: Any, output: str | None) -> dict[str, Any]:
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
                    for k, v in p.summary.model_dump().items()
                    if k not in ("latency", "uncorrected_latency", "warnings")
                },
                "latency_ms": p.summary.latency.model_dump(),
                "uncorrected_latency_ms": p.summary.uncorrected_latency.model_dump(),
            }
            for p in result.points
        ],
    }


def _gate(result: Any) -> None:
    if result.slo is not None and not result.slo.passed:
        failed = [v for v in result.slo.verdicts if not v.passed]
        labels = {p.index: p.label for p in result.points}
        first = failed[0]
        raise GateFailed(
            f"SLO failed: {len(failed)} of {len(result.slo.verdicts)} checks, first {first.gate} at "
            f"{labels[first.point]} (measured {first.value if first.value is not None else 'nothing'})"
        )


def _default_output() -> str:
    return f"bench-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"


def _progress_totals(spec: Any) -> dict[int, float | None]:
    totals: dict[int, float | None] = {}
    for index, point in enumerate(spec.points):
        lead = point.ramp_s + spec.warmup_s
        if point.duration_s is not None:
            totals[index] = lead + point.duration_s
        elif point.requests is None:
            totals[index] = lead + spec.stability.max_windows * spec.window_s
        else:
            totals[index] = None
    return totals


@bench_app.command("run")
def run_command(
    url: str | None = typer.Argument(
        None, help="V2 base URL (http://host:8000), or with --http the endpoint URL."
    ),
    model: list[str] = typer.Option(
        [], "--model", "-m", help="NAME[:VERSION][=WEIGHT]; repeat or comma-separate.", envvar=_ENV + "MODELS"
    ),
    models_file: Path | None = typer.Option(
        None, "--models-file", help="File with one NAME[:VERSION][=WEIGHT] per line."
    ),
    spec: Path | None = typer.Option(
        None, "--spec", help="A serve spec: its server address and models become the targets."
    ),
    fleet: Path | None = typer.Option(
        None, "--fleet", help="A running local fleet (spec file or name): every model, through its router."
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Where local fleets keep their state.", envvar="MODELFLEET_STATE_DIR"
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="A bench spec (YAML); flags override its fields."
    ),
    http: bool = typer.Option(False, "--http", help="URL is a plain HTTP JSON endpoint, not a V2 server."),
    method: str | None = typer.Option(None, "--method", help="Plain HTTP method (default POST)."),
    body: str | None = typer.Option(
        None, "--body", help="Plain HTTP body template; {{sample}} becomes a sample as a JSON string."
    ),
    header: list[str] = typer.Option(
        [], "--header", "-H", help="'Name: value' on every request; repeatable."
    ),
    samples: Path | None = typer.Option(
        None, "--samples", help="Text file, one sample (e.g. sentence) per line."
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="seq | rnd | closed | open (default: open with --rate, else closed).",
        envvar=_ENV + "MODE",
    ),
    rate: str | None = typer.Option(
        None,
        "--rate",
        help="Open loop arrivals per second; comma-separated for a sweep.",
        envvar=_ENV + "RATE",
    ),
    concurrency: str | None = typer.Option(
        None,
        "--concurrency",
        help="Closed loop concurrency; comma-separated for a sweep.",
        envvar=_ENV + "CONCURRENCY",
    ),
    duration_s: float | None = typer.Option(
        None, "--duration-s", help="Measured seconds per point (default 10).", envvar=_ENV + "DURATION_S"
    ),
    requests: int | None = typer.Option(
        None, "--requests", help="Measured requests per point instead of a duration."
    ),
    ramp_s: float | None = typer.Option(
        None, "--ramp-s", help="Ramp from the previous point's load (not measured)."
    ),
    until_stable: bool = typer.Option(
        False, "--until-stable", help="Run each point until it is stable (or gives up)."
    ),
    arrival: str | None = typer.Option(None, "--arrival", help="Open loop arrivals: constant | poisson."),
    warmup_s: float | None = typer.Option(
        None, "--warmup-s", help="Warm-up per point, excluded from statistics (default 1)."
    ),
    window_s: float | None = typer.Option(
        None, "--window-s", help="Stability window and time-series step (default 1)."
    ),
    timeout_s: float | None = typer.Option(
        None,
        "--timeout-s",
        help="Per-request timeout from the intended send (default 10).",
        envvar=_ENV + "TIMEOUT_S",
    ),
    max_in_flight: int | None = typer.Option(
        None, "--max-in-flight", help="Open loop connection cap per process (default 1024)."
    ),
    procs: int | None = typer.Option(
        None, "--procs", help="Generator processes on this machine (default 1).", envvar=_ENV + "PROCS"
    ),
    repeat: int | None = typer.Option(None, "--repeat", help="seq mode: requests per model (default 1)."),
    late_threshold_ms: float | None = typer.Option(
        None, "--late-threshold-ms", help="A send later than this is late (default 2)."
    ),
    slo: str | None = typer.Option(
        None, "--slo", help="Gates, e.g. 'p99<100ms,error_rate<0.1%,throughput>500'.", envvar=_ENV + "SLO"
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Results JSON path ('-' for stdout; default bench-TIME.json)."
    ),
    requests_csv: Path | None = typer.Option(
        None, "--requests-csv", help="Also write one CSV row per request here."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed for arrivals, model choice and generated inputs."
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify the target's TLS certificate."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved bench spec as YAML and exit."),
) -> None:
    """Load-test a V2 server or a plain HTTP endpoint and write a results file. Exit 1 when an SLO gate fails."""
    from modelfleet.bench.options import RunOptions, spec_from_options

    if fleet is not None:
        from modelfleet.fleet.local import fleet_endpoints

        router_url, fleet_models = fleet_endpoints(fleet, state_dir)
        url = url or router_url
        model = model or fleet_models

    options = RunOptions(
        url=url,
        config=config,
        spec=spec,
        models=model,
        models_file=models_file,
        http=http,
        method=method,
        body=body,
        headers=header,
        samples=samples,
        mode=mode,
        rates=rate,
        concurrencies=concurrency,
        duration_s=duration_s,
        requests=requests,
        ramp_s=ramp_s,
        until_stable=until_stable,
        arrival=arrival,
        warmup_s=warmup_s,
        window_s=window_s,
        timeout_s=timeout_s,
        max_in_flight=max_in_flight,
        procs=procs,
        repeat=repeat,
        late_send_threshold_s=late_threshold_ms / 1000.0 if late_threshold_ms is not None else None,
        slo=slo,
        requests_csv=requests_csv,
        seed=seed,
        insecure=insecure,
    )
    bench_spec = spec_from_options(options)
    if dry_run:
        import yaml

        sys.stdout.write(
            yaml.safe_dump(bench_spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
        )
        return
    from modelfleet.bench import run_bench, write_result
    from modelfleet.bench.slo import parse_slo

    parse_slo(bench_spec.slo)  # bad gates fail before any load is sent
    destination = output or _default_output()
    show_progress = not quiet and not json_output and err_console.is_terminal
    if show_progress:
        with LiveProgress(_progress_totals(bench_spec)) as live:
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
    _gate(result)


@bench_app.command("merge")
def merge_command(
    files: list[Path] = typer.Argument(
        ..., help="Results files (or pod logs holding one) of generators that ran together."
    ),
    output: str = typer.Option(
        "bench-merged.json", "--output", "-o", help="Merged results path ('-' for stdout)."
    ),
    slo: str | None = typer.Option(
        None, "--slo", help="Gates for the merged result (default: the inputs' gates).", envvar=_ENV + "SLO"
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
) -> None:
    """Combine results of many generators exactly (histograms add) into one result. Exit 1 when a gate fails."""
    from modelfleet.bench import merge_results, read_results, write_result
    from modelfleet.bench.slo import parse_slo

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
    _gate(result)


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
    from modelfleet.bench.options import RunOptions, spec_from_options

    bench_spec = spec_from_options(RunOptions(config=config, url=target))
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
