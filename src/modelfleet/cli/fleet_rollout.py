"""`modelfleet fleet rollout`: move one model of a running local fleet to a new version, canary first.

A thin layer over `modelfleet.operate.rollout.run_rollout`: it parses the flags (`10%`, `10,50,100`,
`60s`), prints progress on stderr and the record on stdout.

Exit codes: 0 promoted · 1 rolled back (a step breached its gates) · 2 bad argument (share outside
(0, 100], steps not increasing or not ending at 100, a model not served from a registry alias) ·
3 unknown fleet, model or registry reference · 5 fleet not running, canary not ready, router unreachable ·
6 another rollout of the model is running, or the model already serves that version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import Actor, StateDir, console, err_console, print_json
from modelfleet.errors import GateFailed


def rollout_command(
    fleet: Annotated[str, typer.Argument(help="Fleet name or spec file.")],
    model: Annotated[str, typer.Argument(help="Model of the fleet to roll out (served as ref: NAME@ALIAS).")],
    to: Annotated[
        str, typer.Option("--to", help="Registry reference of the new version: NAME:VERSION or NAME@ALIAS.")
    ],
    canary: Annotated[
        str, typer.Option("--canary", help="First share of traffic for the new version.")
    ] = "10%",
    steps: Annotated[
        str, typer.Option("--steps", help="Shares to raise it through, increasing, ending at 100.")
    ] = "10,50,100",
    interval: Annotated[
        str, typer.Option("--interval", help="How long each step is held and judged.")
    ] = "60s",
    shadow: Annotated[
        str, typer.Option("--shadow", help="Share of baseline traffic mirrored to the new version (0: none).")
    ] = "0%",
    min_requests: Annotated[
        int | None,
        typer.Option("--min-requests", help="Canary requests a step needs before it is judged [50]."),
    ] = None,
    state_dir: StateDir = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry", envvar="MODELFLEET_REGISTRY", help="Registry folder the fleet's servers use."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="MODELFLEET_API_KEY",
            help="Key with the read scope, when the fleet has auth on.",
            show_default=False,
        ),
    ] = None,
    actor: Actor = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the rollout record as JSON.")] = False,
) -> None:
    """Canary a new version through the router, gated on errors and p99 against the current one; roll back
    at once on a breach, promote (move the alias) when every step passes."""
    from modelfleet.config.base import parse_spec
    from modelfleet.config.rollout import (
        RolloutGates,
        RolloutOptions,
        parse_duration_s,
        parse_percent,
        parse_steps,
    )
    from modelfleet.operate.rollout import run_rollout

    overrides = {} if min_requests is None else {"min_requests": min_requests}
    gates = parse_spec(overrides, RolloutGates, "--min-requests")
    options = RolloutOptions(
        canary_percent=parse_percent(canary, "--canary"),
        steps_percent=parse_steps(steps),
        interval_s=parse_duration_s(interval, "--interval"),
        shadow_percent=parse_percent(shadow, "--shadow", low_exclusive=False),
        gates=gates,
    )
    record = run_rollout(
        fleet,
        model,
        to,
        options,
        state_root=state_dir,
        registry_dir=registry,
        api_key=api_key,
        actor=actor,
        progress=lambda line: err_console.print(line, highlight=False, soft_wrap=True),
    )
    if json_output:
        print_json(record.model_dump(mode="json"))
    else:
        for step in record.steps:
            console.print(
                f"{step.phase} {step.canary_percent:g} % for {step.duration_s:g} s: canary {step.canary} "
                f"baseline {step.baseline}: {step.verdict}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"rollout {record.id}: {record.outcome} ({record.reason})", highlight=False, soft_wrap=True
        )
    if record.outcome == "rolled_back":
        raise GateFailed(f"rollout of {model} to {to} rolled back in {record.rollback_s} s: {record.reason}")
