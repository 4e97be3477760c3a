"""`modelfleet retrain FLEET MODEL`: run the model's retraining pipeline now (a manual trigger).

A thin layer over `modelfleet.drift.retrain.run_retrain`: progress on stderr, the run's record on stdout.

Exit codes: 0 promoted · 1 rejected (a gate or the rollout said no; the current version keeps serving) ·
2 bad input (no `retrain:` section, no or too few captured items, labels that do not match the window, a
hook that is missing or not executable) · 3 unknown fleet, model, labels file or registry reference ·
4 the built artifact failed verification · 5 the hook timed out (killed), the fleet or router unavailable ·
6 another run of the model is under way (recorded as skipped) · 8 the hook exited non-zero or wrote nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import Actor, console, err_console, print_json
from modelfleet.errors import GateFailed


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain_command)


def retrain_command(
    fleet: Annotated[str, typer.Argument(help="Fleet spec file, or the name of a local fleet.")],
    model: Annotated[str, typer.Argument(help="Model of the fleet to retrain (its spec has `retrain:`).")],
    labels: Annotated[
        str | None,
        typer.Option("--labels", help="Labels file or http(s) URL (JSON lines), instead of retrain.labels."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", envvar="MODELFLEET_STATE_DIR", help="Folder holding local fleets."),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option("--registry", envvar="MODELFLEET_REGISTRY", help="Registry folder the fleet uses."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="MODELFLEET_API_KEY",
            help="Key with the read scope for the rollout, when the fleet has auth on.",
            show_default=False,
        ),
    ] = None,
    actor: Actor = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run's record as JSON.")] = False,
) -> None:
    """Snapshot the captured window, run the hook, build, register with lineage, gate against the current
    version on held-out recent items, then promote through a rollout (or move the alias) or reject."""
    from modelfleet.drift.retrain import run_retrain

    record = run_retrain(
        fleet,
        model,
        state_root=state_dir,
        registry_dir=registry,
        labels=labels,
        api_key=api_key,
        actor=actor,
        progress=lambda line: err_console.print(line, highlight=False, soft_wrap=True),
    )
    if json_output:
        print_json(record.model_dump(mode="json"))
    else:
        for step in record.steps:
            console.print(
                f"{step.step}: {step.status} ({step.duration_s:g} s) {step.detail}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"retraining {record.id}: {record.outcome} ({record.reason})", highlight=False, soft_wrap=True
        )
    if record.outcome == "rejected":
        raise GateFailed(f"retraining of {model} rejected: {record.reason}")
