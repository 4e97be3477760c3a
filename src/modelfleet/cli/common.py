"""Helpers every command group shares: consoles, JSON output, warnings, who is acting, typed flags."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# stdout carries results (human tables or --json); stderr carries progress and errors.
console = Console()
err_console = Console(stderr=True)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def warn(note: str) -> None:
    err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)


def typed_flags(ctx: typer.Context, keys: Iterable[str]) -> dict[str, object]:
    """The parameters among `keys` whose value was typed on the command line.

    Click also reads their environment variables (so --help names them) and fills in defaults (so --help
    shows them), but the library merges variables, spec files and defaults itself: handing it only what was
    typed makes the CLI and a library user follow one rule.
    """
    typed = {}
    for key in keys:
        source = ctx.get_parameter_source(key)
        if source is not None and source.name == "COMMANDLINE":
            typed[key] = ctx.params[key]
    return typed


# Who an audited action is recorded for: --actor, $MODELFLEET_ACTOR, else the login name.
# Where local fleets keep their state: every command that finds a fleet by name takes it.
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="MODELFLEET_STATE_DIR",
        help="Folder holding local fleets' state (pid files, ports, logs, restarts).",
    ),
]
Actor = Annotated[
    str | None,
    typer.Option("--actor", envvar="MODELFLEET_ACTOR", help="Who to record [default: your user name]."),
]


def actor_name(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid-{os.getuid()}"
