"""`modelfleet report RESULTS.json -o report.html`: a self-contained HTML report from saved results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import console
from modelfleet.errors import InvalidInput


def report_command(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Results files from `modelfleet bench run` or `bench merge`, or one `tune-results.json`."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
) -> None:
    """Write an HTML report (inline SVG charts, works offline) from one or more results files."""
    from modelfleet.tune.results import is_tune_file

    if any(is_tune_file(path) for path in results):
        if len(results) != 1:
            raise InvalidInput("a tune results file makes a report of its own: give it alone")
        from modelfleet.tune.report import write_tune_report

        written = write_tune_report(results[0], output)
    else:
        from modelfleet.bench.report import write_report

        written = write_report(results, output)
    console.print(f"report → {written}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
