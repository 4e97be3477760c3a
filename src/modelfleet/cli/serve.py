"""`modelfleet serve`: one process (or N workers) serving many models over V2 (wraps `server.runner.serve`).

The options, their variables and their precedence are `modelfleet.config.serve_options`; this module only
declares them for typer and prints.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import err_console, typed_flags
from modelfleet.config.serve_options import SERVE_OPTIONS, SPEC_FILE_ENV, serve_spec_from_sources

_OPTIONS = {option.key: option for option in SERVE_OPTIONS}


def _option(key: str) -> typer.models.OptionInfo:
    """The typer option of one `SERVE_OPTIONS` entry; the parameter must be named as its key."""
    option = _OPTIONS[key]
    info: typer.models.OptionInfo = typer.Option(
        *option.flag_names, help=option.help, envvar=option.env, show_default=option.default_text or False
    )
    return info


def serve_command(
    ctx: typer.Context,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", "-s", help="Serve spec (YAML).", envvar=SPEC_FILE_ENV)
    ] = None,
    model: Annotated[
        list[Path] | None, typer.Option("--model", "-m", help="Artifact folder to serve; repeat for more.")
    ] = None,
    ref: Annotated[
        list[str] | None,
        typer.Option("--ref", "-r", help="Registry model NAME, NAME:VERSION or NAME@ALIAS; repeat for more."),
    ] = None,
    registry: Annotated[Path | None, _option("registry")] = None,
    host: Annotated[str | None, _option("host")] = None,
    port: Annotated[int | None, _option("port")] = None,
    grpc_port: Annotated[int | None, _option("grpc_port")] = None,
    workers: Annotated[int | None, _option("workers")] = None,
    max_batch_size: Annotated[int | None, _option("max_batch_size")] = None,
    max_delay_s: Annotated[float | None, _option("max_delay_s")] = None,
    dispatch_when_idle: Annotated[bool | None, _option("dispatch_when_idle")] = None,
    max_queue_items: Annotated[int | None, _option("max_queue_items")] = None,
    tls_cert: Annotated[Path | None, _option("tls_cert")] = None,
    tls_key: Annotated[Path | None, _option("tls_key")] = None,
    audit_log: Annotated[Path | None, _option("audit_log")] = None,
    port_file: Annotated[
        Path | None, typer.Option(help="Write the port here once listening (for scripts).")
    ] = None,
    grpc_port_file: Annotated[
        Path | None, typer.Option(help="Write the gRPC port here once listening (for scripts).")
    ] = None,
) -> None:
    """Serve models over the Open Inference Protocol (V2) with dynamic batching.

    Every option is also an environment variable (shown with it) and a field of the --spec file: a flag wins over its variable, which wins over the file.
    """
    logging.basicConfig(level=logging.WARNING, format="modelfleet: %(message)s")
    spec = serve_spec_from_sources(
        spec_file, model or [], ref or [], flags=typed_flags(ctx, _OPTIONS), env=os.environ
    )
    from modelfleet.server.runner import serve, write_port_file

    def on_listening(bound_host: str, bound_port: int) -> None:
        scheme = "https" if spec.server.tls_cert_file else "http"
        err_console.print(
            f"serving {len(spec.models)} model(s) on {scheme}://{bound_host}:{bound_port} "
            f"with {spec.server.workers} worker(s); ready at /v2/health/ready",
            highlight=False,
            soft_wrap=True,
        )
        if port_file is not None:
            write_port_file(port_file, bound_port)

    def on_grpc_listening(bound_port: int) -> None:
        err_console.print(f"V2 gRPC on {spec.server.host}:{bound_port}", highlight=False, soft_wrap=True)
        if grpc_port_file is not None:
            write_port_file(grpc_port_file, bound_port)

    raise typer.Exit(serve(spec, on_listening, on_grpc_listening))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
