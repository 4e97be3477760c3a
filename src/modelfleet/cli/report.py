"""`modelfleet report RESULTS.json -o report.html`: a self-contained HTML report from saved results."""

from __future__ import annotations

from pathlib import Path

import typer

from modelfleet.cli.common import console


def report_command(
    results: list[Path] = typer.Argument(
        ..., help="Results files from `modelfleet bench run` or `bench merge`."
    ),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file to write."),
) -> None:
    """Write an HTML report (inline SVG charts, works offline) from one or more results files."""
    from modelfleet.bench.report import write_report

    written = write_report(results, output)
    console.print(f"report → {written}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
