"""Helpers every command group shares: consoles, JSON output, error translation."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

# stdout carries results (human tables or --json); stderr carries progress and errors.
console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


# Who an audited action is recorded for: --actor, $MODELFLEET_ACTOR, else the login name.
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
