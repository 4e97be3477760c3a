"""`modelfleet review TARGET`: Well-Architected questions answered from config, saved results and behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from modelfleet.cli.common import StateDir, console, err_console
from modelfleet.errors import InvalidInput


def review_command(
    target: Annotated[
        str, typer.Argument(help="Fleet spec, local fleet name, or Kubernetes YAML file/folder.")
    ],
    live: Annotated[
        bool, typer.Option("--live", help="Probe the running fleet (harmless requests).")
    ] = False,
    drill: Annotated[
        bool, typer.Option("--drill", help="With --live: overload burst and kill one replica.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Run drills on a fleet with review.protected.")
    ] = False,
    results: Annotated[
        Path | None, typer.Option("--results", help="Folder of bench, tune and chaos results.")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option("--registry", envvar="MODELFLEET_REGISTRY", help="Registry folder.")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="text, json, sarif or html.")] = "text",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
    export_lens: Annotated[
        Path | None, typer.Option("--export-lens", help="Write the AWS WA custom lens JSON.")
    ] = None,
    export_answers: Annotated[
        Path | None, typer.Option("--export-answers", help="Write the answers (ChoiceUpdates).")
    ] = None,
    earlier: Annotated[
        list[Path] | None, typer.Option("--earlier", help="Earlier JSON reviews (HTML score over time).")
    ] = None,
    fail_on: Annotated[
        str, typer.Option("--fail-on", help="high or medium: the risk that exits 1.")
    ] = "high",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="MODELFLEET_API_KEY", help="Key for reads and drills.", show_default=False
        ),
    ] = None,
    probe_key: Annotated[
        str | None,
        typer.Option(
            "--probe-key", help="A key WITHOUT the model's infer scope (403 probe).", show_default=False
        ),
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Answer the Well-Architected questions with evidence; exit 1 while a HIGH (or --fail-on medium) risk remains."""
    from modelfleet.review.api import review

    if output_format not in ("text", "json", "sarif", "html"):
        raise InvalidInput(f"--format {output_format!r}: use text, json, sarif or html")
    if fail_on not in ("high", "medium"):
        raise InvalidInput(f"--fail-on {fail_on!r}: use high or medium")
    if drill and not live:
        raise InvalidInput("--drill needs --live")
    fmt: Literal["text", "json", "sarif", "html"] = output_format  # type: ignore[assignment]
    outcome = review(
        target,
        live=live,
        drill=drill,
        force=force,
        results_dir=results,
        registry_root=registry,
        api_key=api_key,
        probe_key=probe_key,
        state_root=state_dir,
        earlier=earlier or [],
        fmt=fmt,
        fail_on=fail_on,
    )
    if output is None:
        typer.echo(outcome.text, nl=False)
    else:
        output.write_text(outcome.text, encoding="utf-8")
        err_console.print(f"review → {output}", highlight=False)
    if export_lens is not None:
        export_lens.write_text(json.dumps(outcome.lens, indent=1) + "\n", encoding="utf-8")
        err_console.print(f"lens → {export_lens}", highlight=False)
    if export_answers is not None:
        export_answers.write_text(json.dumps(outcome.answers, indent=1) + "\n", encoding="utf-8")
        err_console.print(f"answers → {export_answers}", highlight=False)
    if outcome.exit_code:
        console.print(
            f"[red]review: risks at or above {fail_on.upper()} remain[/]", highlight=False
        ) if output else None
        raise typer.Exit(outcome.exit_code)


def register(app: typer.Typer) -> None:
    app.command("review")(review_command)
