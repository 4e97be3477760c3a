"""The `modelfleet` command. The only place that reads argv; each group lives in its own module."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Annotated, NoReturn

import typer

from modelfleet import __version__, interrupt
from modelfleet.cli.common import err_console
from modelfleet.errors import ModelfleetError

app = typer.Typer(
    name="modelfleet",
    help="Build, serve, load-test, tune and review many ML models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each command is the module `modelfleet.cli.<name>` defining `register(app)`, in the order --help lists
# them. Their library imports happen inside the commands, so `modelfleet --help` stays fast and a command's
# heavy dependencies load only when it runs.
COMMANDS = (
    "build",
    "serve",
    "fleet",
    "image",
    "registry",
    "keys",
    "bench",
    "tune",
    "report",
    "retrain",
    "review",
    "drift",
)
_registered: list[str] = []


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"modelfleet.cli.{name}")


def _print_version(value: bool) -> None:
    # An option callback runs while the options are parsed, before click asks for a command: in the
    # group's own callback, `modelfleet --version` was "Missing command" (exit 2).
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    pass


def _register(argv: list[str]) -> None:
    """Register the command `argv` names, or every command when it names none (`--help`, a typo).

    Only the one that runs: the fleet supervisor starts each server through `modelfleet serve`, and
    importing and building all 46 commands cost 0.5 s of the 1.5 s a server took to listen, paid again on
    every crash restart. Registered once per process (main() may be called again, as in the tests).
    """
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    for name in (first,) if first in COMMANDS else COMMANDS:
        if name is not None and name not in _registered:
            command_module(name).register(app)
            _registered.append(name)


def main(argv: list[str] | None = None) -> None:
    interrupt.install()
    try:
        _register(sys.argv[1:] if argv is None else argv)
        app(args=argv, prog_name="modelfleet")
    except SystemExit:
        # Typer turns a KeyboardInterrupt into a silent exit 130; and a Ctrl-C whose KeyboardInterrupt a
        # library swallowed must not end as the command's own success.
        if interrupt.requested():
            _interrupted()
        raise
    except ModelfleetError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # last line of defence: a one-line message, never a traceback
        if os.environ.get("MODELFLEET_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set MODELFLEET_DEBUG=1 for a traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(10)


def _interrupted() -> NoReturn:
    err_console.print("interrupted (Ctrl-C)")
    sys.exit(130)


if __name__ == "__main__":
    main()
