"""The CLI registers every command group; none is skipped."""

from __future__ import annotations

import typer

from modelfleet.cli.main import COMMAND_MODULES


def test_every_command_module_registers_its_commands() -> None:
    app = typer.Typer()
    for module in COMMAND_MODULES:
        module.register(app)
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    assert set(command.commands) == {
        "build",
        "serve",
        "fleet",
        "image",
        "registry",
        "keys",
        "bench",
        "tune",
        "report",
        "drift",
        "review",
        "retrain",
    }
