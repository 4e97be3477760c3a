"""The CLI registers every command group; none is skipped."""

from __future__ import annotations

import subprocess
import sys

import typer
from tests.support.fresh_process import loaded_modules

from modelfleet.cli.main import COMMANDS, command_module


def test_every_command_module_registers_one_command_named_as_the_module() -> None:
    app = typer.Typer()
    for name in COMMANDS:
        command_module(name).register(app)
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    # One command per module, named as the module: main() registers only the module a command line names.
    assert sorted(command.commands) == sorted(COMMANDS)
    assert len(COMMANDS) == 12


def test_running_one_command_imports_only_its_module_and_help_lists_them_all() -> None:
    loaded = loaded_modules("from modelfleet.cli.main import main; main(['serve', '--help'])")
    assert {name for name in loaded if name.startswith("modelfleet.cli.")} == {
        "modelfleet.cli.main",
        "modelfleet.cli.common",
        "modelfleet.cli.serve",
    }
    listed = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "--help"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0
    for name in COMMANDS:
        assert f" {name} " in listed.stdout, name


def test_version_prints_the_version() -> None:
    from modelfleet import __version__

    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout.strip()) == (0, __version__)
