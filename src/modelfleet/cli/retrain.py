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
from typing import TYPE_CHECKING, Annotated

import typer

from modelfleet.cli.common import Actor, StateDir, console, err_console, print_json
from modelfleet.errors import GateFailed

if TYPE_CHECKING:
    from modelfleet.registry import ModelVersion, Registry


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain_command)


def retrain_command(
    fleet: Annotated[str, typer.Argument(help="Fleet spec file, or the name of a local fleet.")],
    model: Annotated[str, typer.Argument(help="Model of the fleet to retrain (its spec has `retrain:`).")],
    labels: Annotated[
        str | None,
        typer.Option("--labels", help="Labels file or http(s) URL (JSON lines), instead of retrain.labels."),
    ] = None,
    state_dir: StateDir = None,
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


def print_retraining_lineage(version: ModelVersion) -> None:
    """`registry show`: the run that made a retrained version, its trigger, window and hook."""
    made, parent = version.lineage.retraining, version.lineage.parent_version
    if made is None:
        return
    window = made.window
    console.print(
        f"  retrained by run {made.run} ({made.trigger.get('kind')}: {made.trigger.get('summary')}) from "
        f"version {parent}\n  window: {window.get('items')} items "
        f"({window.get('train_items')} train, {window.get('holdout_items')} held out), sha256 "
        f"{window.get('sha256')}\n  hook: {' '.join(made.hook_command)} (exit {made.hook_exit_code})",
        highlight=False,
        soft_wrap=True,
    )


def print_retraining(registry: Registry, name: str) -> None:
    """`registry history`: the model's retraining runs with their steps, below its alias moves."""
    from modelfleet.registry.retraining import retraining_runs

    for run in retraining_runs(registry, name):
        window = run.window
        console.print(
            f"retraining {run.id} ({run.trigger.get('kind')}: {run.trigger.get('summary')}) from version "
            f"{run.parent_version}: {run.outcome}"
            + (f" → version {run.new_version}" if run.new_version is not None else "")
            + f" ({run.reason})\n  window: {window.get('items', '-')} items, sha256 {window.get('sha256', '-')}"
            f"\n  hook: {' '.join(run.hook.get('command', [])) or '-'} (exit {run.hook.get('exit_code', '-')})",
            highlight=False,
            soft_wrap=True,
        )
        for step in run.steps:
            console.print(
                f"  {step.step}: {step.status} ({step.duration_s:g} s) {step.detail}",
                highlight=False,
                soft_wrap=True,
            )
