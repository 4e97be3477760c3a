"""`modelfleet report RESULTS.json -o report.html`: a self-contained HTML report from saved results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import console


def report_command(
    results: Annotated[
        list[Path], typer.Argument(help="Results files from `modelfleet bench run` or `bench merge`.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
) -> None:
    """Write an HTML report (inline SVG charts, works offline) from one or more results files."""
    from modelfleet.bench.report import write_report

    written = write_report(results, output)
    console.print(f"report → {written}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
