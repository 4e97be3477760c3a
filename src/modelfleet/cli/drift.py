"""`modelfleet drift report FLEET MODEL`: a model's drift history as HTML (inline SVG) or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import StateDir, console

drift_app = typer.Typer(
    name="drift", help="Drift of served traffic from each model's reference.", no_args_is_help=True
)


@drift_app.command("report")
def report_command(
    fleet: Annotated[str, typer.Argument(help="Fleet name or spec file.")],
    model: Annotated[str, typer.Argument(help="Model name in the fleet.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("drift.html"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the history and last assessment as JSON instead.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Per-feature reference vs current histograms and scores over time, from the fleet's drift monitor.

    Exit codes: 0 written; 3 unknown fleet or model; 2 unreadable fleet state.
    """
    from modelfleet.drift.report import drift_summary, write_drift_report
    from modelfleet.fleet.local import resolve_fleet

    summary = drift_summary(resolve_fleet(fleet, state_dir), model)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    written = write_drift_report(summary, output)
    console.print(f"drift report → {written} ({summary['assessments']} judged checks)", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(drift_app, name="drift")
