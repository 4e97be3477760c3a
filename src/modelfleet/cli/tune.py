"""`modelfleet tune`: the cheapest configuration that meets the SLO, priced per million conforming inferences.

Wraps `modelfleet.tune.search.run_tune`; the spec merge (flags over the file) is
`modelfleet.tune.options.tune_spec_from_sources`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import console, err_console, print_json
from modelfleet.errors import GateFailed


def tune_command(
    spec_file: Annotated[
        Path | None, typer.Argument(help="Tune spec (YAML); flags override its fields.")
    ] = None,
    model: Annotated[
        list[Path] | None,
        typer.Option("--model", "-m", help="Artifact folder to try; repeat (e.g. fp32 and int8)."),
    ] = None,
    slo: Annotated[
        str | None,
        typer.Option(help="SLO gates, e.g. 'p99<50ms,error_rate<1%'.", envvar="MODELFLEET_TUNE_SLO"),
    ] = None,
    target_rate: Annotated[
        float | None,
        typer.Option(
            "--target-rate", help="Peak requests per second to serve.", envvar="MODELFLEET_TUNE_TARGET_RATE"
        ),
    ] = None,
    cpus: Annotated[
        str | None, typer.Option(help="CPU-set sizes to try, e.g. '1,2' (replaces the spec's hardware).")
    ] = None,
    max_trials: Annotated[
        int | None,
        typer.Option(
            "--max-trials", help="Most configurations measured.", envvar="MODELFLEET_TUNE_MAX_TRIALS"
        ),
    ] = None,
    max_time: Annotated[
        float | None,
        typer.Option(
            "--max-time", help="Seconds after which no new trial starts.", envvar="MODELFLEET_TUNE_MAX_TIME"
        ),
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, exhaustive or optuna.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Results (and checkpoint) file.")] = Path(
        "tune-results.json"
    ),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the search in --output.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --output.")] = False,
    write_fleet: Annotated[
        Path | None, typer.Option("--write-fleet", help="Write the recommendation as a fleet spec here.")
    ] = None,
    render_kubernetes: Annotated[
        Path | None,
        typer.Option(
            "--render-kubernetes",
            help="Render trial Deployments and load Jobs into this folder; runs nothing.",
        ),
    ] = None,
    image: Annotated[
        str, typer.Option(help="Image for --render-kubernetes.")
    ] = "ghcr.io/modelfleet/modelfleet:0.1.0",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON instead of tables.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    pack: Annotated[
        list[Path] | None,
        typer.Option(
            "--pack",
            help="Tune results of several models (repeat): pack their recommendations onto shared nodes "
            "and price them once, instead of searching.",
        ),
    ] = None,
    instance_type: Annotated[
        str | None,
        typer.Option("--instance-type", help="With --pack: the node type (default: the largest mapped)."),
    ] = None,
) -> None:
    """Measure configurations × hardware under the SLO on real local servers, price them, recommend the cheapest.

    Exit codes: 0 a recommendation (re-verified); 1 no configuration met the SLO, or re-verification
    differed by more than verify_tolerance; 2 bad input (spec, unknown instance type); 3 artifact not
    found; 4 a model failed its integrity check; 6 --output exists (use --resume or --force).
    """
    if pack:
        _print_pack(pack, instance_type, json_output)
        return
    from modelfleet.tune.options import tune_spec_from_sources

    spec = tune_spec_from_sources(
        spec_file,
        {
            "artifacts": model or None,
            "slo": slo,
            "target_rate_per_s": target_rate,
            "cpus": cpus,
            "max_trials": max_trials,
            "max_time_s": max_time,
            "strategy": strategy,
        },
    )
    if render_kubernetes is not None:
        from modelfleet.tune.kube import NO_CLUSTER, write_trials

        written = write_trials(spec, render_kubernetes, image)
        console.print(f"{len(written)} trial file(s) → {render_kubernetes} ({NO_CLUSTER})", highlight=False)
        return
    from modelfleet.tune.output import TuneProgressBar, failure_message, print_tables, summary_json
    from modelfleet.tune.search import run_tune

    with TuneProgressBar(enabled=not quiet and not json_output and err_console.is_terminal) as bar:
        result = run_tune(spec, output, resume=resume, force=force, progress=bar.update)
    if json_output:
        print_json(summary_json(result, output))
    else:
        print_tables(console, result, output)
    if write_fleet is not None and result.recommendation is not None:
        from modelfleet.tune.fleetspec import write_fleet as write_fleet_spec

        write_fleet_spec(result, write_fleet, spec.fleet_name, spec.model_name)
        err_console.print(f"fleet spec → {write_fleet}", highlight=False)
    problem = failure_message(result)
    if problem is not None:
        raise GateFailed(problem)


def _print_pack(paths: list[Path], instance_type: str | None, json_output: bool) -> None:
    from rich.table import Table

    from modelfleet.tune.pack import pack_results, pack_summary

    summary = pack_summary(pack_results(paths, instance_type))
    if json_output:
        print_json(summary)
        return
    table = Table(title=f"Shared nodes: {summary['instance_type']}", title_justify="left")
    for column in ("model", "configuration", "replicas", "$/h (max(request, usage))", "share", "$/h alone"):
        table.add_column(column)
    for model in summary["models"]:  # type: ignore[attr-defined]
        table.add_row(
            model["name"],
            model["configuration"],
            str(model["replicas"]),
            f"{model['cost_per_h']:.4f}",
            f"{model['share']:.0%}",
            f"{model['separate_price_per_h']:.4f}",
        )
    console.print(table)
    console.print(
        f"{len(summary['nodes'])} node(s) × ${summary['node']['price_per_h']:.4f}/h = "  # type: ignore[arg-type, index]
        f"${summary['price_per_h']:.4f}/h, idle ${summary['idle_per_h']:.4f}/h ({summary['idle_share']:.0%}); "
        f"each model on its own nodes: ${summary['separate_price_per_h']:.4f}/h",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
