"""The `modelfleet` command. The only place that reads argv; each group lives in its own module."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from modelfleet import __version__
from modelfleet.cli import (
    bench,
    build,
    drift,
    fleet,
    image,
    keys,
    registry,
    report,
    retrain,
    review,
    serve,
    tune,
)
from modelfleet.cli.common import err_console
from modelfleet.errors import ModelfleetError

app = typer.Typer(
    name="modelfleet",
    help="Build, serve, load-test, tune and review many ML models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines `register(app)`, in the order --help lists them. Their library imports happen inside
# the commands, so `modelfleet --help` stays fast and a command's heavy dependencies load only when it runs.
COMMAND_MODULES = (
    build,
    serve,
    fleet,
    image,
    registry,
    keys,
    bench,
    tune,
    report,
    retrain,
    review,
    drift,
    retrain,
)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True)
    ] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


def _register_all() -> None:
    if app.registered_commands or app.registered_groups:
        return  # main() called again in one process: registering twice made each call slower (0.5 s more each)
    for module in COMMAND_MODULES:
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        _register_all()
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
