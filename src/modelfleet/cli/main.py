"""The `modelfleet` command. The only place that reads argv; each group lives in its own module."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from modelfleet import __version__
from modelfleet.cli.common import err_console
from modelfleet.errors import ModelfleetError

app = typer.Typer(
    name="modelfleet",
    help="Build, serve, load-test, tune and review many ML models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines `register(app)`. Imported lazily by name so `modelfleet --help` stays fast and a
# command's heavy dependencies load only when that command runs.
COMMAND_MODULES = [
    "modelfleet.cli.build",
    "modelfleet.cli.serve",
    "modelfleet.cli.fleet",
    "modelfleet.cli.image",
    "modelfleet.cli.registry",
    "modelfleet.cli.keys",
    "modelfleet.cli.bench",
    "modelfleet.cli.report",
]


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


def _register_all() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a missing dependency inside the module is a real error
                raise
            continue
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    _register_all()
    try:
        app(args=argv, prog_name="modelfleet")
    except ModelfleetError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # last line of defence: a one-line message, never a traceback
        if os.environ.get("MODELFLEET_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set MODELFLEET_DEBUG=1 for a traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(10)


if __name__ == "__main__":
    main()
