"""`modelfleet serve`: one process (or N workers) serving many models over V2."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from modelfleet.cli.common import err_console
from modelfleet.config import BatchingConfig, ModelConfig, ServeSpec, load_spec, parse_spec
from modelfleet.errors import InvalidInput
from modelfleet.manifest import read_manifest


def build_spec(
    spec_file: Path | None,
    models: list[Path],
    overrides: dict[str, object],
    batching: dict[str, object],
    refs: list[str] | None = None,
    registry_root: Path | None = None,
    audit_log: Path | None = None,
) -> ServeSpec:
    """A serve spec from a file and/or `--model` paths and `--ref` registry references; flags override the file."""
    refs = refs or []
    if spec_file is not None:
        spec = load_spec(spec_file, ServeSpec)
        data = spec.model_dump()
    elif models or refs:
        data = {"server": {}, "models": []}
    else:
        raise InvalidInput("give a serve spec (--spec FILE), --model ARTIFACT_DIR or --ref NAME@ALIAS")
    data["models"] = (
        list(data["models"])
        + [ModelConfig(path=path.resolve()).model_dump() for path in models]
        + [ModelConfig(ref=ref).model_dump() for ref in refs]
    )
    if any(model.get("ref") for model in data["models"]):
        registry = data.setdefault("registry", {})
        if registry_root is not None or registry.get("root") is None:
            registry["root"] = (registry_root or Path.home() / ".modelfleet" / "registry").expanduser()
    data["server"].update({key: value for key, value in overrides.items() if value is not None})
    if audit_log is not None:
        data.setdefault("auth", {})["audit_log"] = audit_log
    chosen_batching = {key: value for key, value in batching.items() if value is not None}
    if chosen_batching:
        for model in data["models"]:
            model["batching"] = BatchingConfig(**{**model["batching"], **chosen_batching}).model_dump()
    return parse_spec(data, ServeSpec, str(spec_file or "command line"))


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        spec_file: Path | None = typer.Option(
            None, "--spec", "-s", help="Serve spec (YAML).", envvar="MODELFLEET_SERVE_SPEC"
        ),
        model: list[Path] = typer.Option(
            [], "--model", "-m", help="Artifact folder to serve; repeat for more."
        ),
        ref: list[str] = typer.Option(
            [], "--ref", "-r", help="Registry model NAME, NAME:VERSION or NAME@ALIAS; repeat for more."
        ),
        registry: Path | None = typer.Option(
            None, help="Registry folder for --ref and `ref:` models.", envvar="MODELFLEET_REGISTRY"
        ),
        host: str | None = typer.Option(None, help="Listen address.", envvar="MODELFLEET_HOST"),
        port: int | None = typer.Option(
            None, help="Listen port; 0 picks a free one.", envvar="MODELFLEET_PORT"
        ),
        workers: int | None = typer.Option(
            None, help="Processes sharing the port.", envvar="MODELFLEET_WORKERS"
        ),
        max_batch_size: int | None = typer.Option(
            None, help="Most items per model run.", envvar="MODELFLEET_MAX_BATCH_SIZE"
        ),
        max_delay_s: float | None = typer.Option(
            None, help="Longest wait for a batch to fill.", envvar="MODELFLEET_MAX_DELAY_S"
        ),
        dispatch_when_idle: bool | None = typer.Option(
            None,
            "--dispatch-when-idle/--no-dispatch-when-idle",
            help="Start a run at once when the model is idle (default) or wait up to --max-delay-s.",
            envvar="MODELFLEET_DISPATCH_WHEN_IDLE",
        ),
        max_queue_items: int | None = typer.Option(
            None, help="Queue bound per model (503 beyond).", envvar="MODELFLEET_MAX_QUEUE_ITEMS"
        ),
        tls_cert: Path | None = typer.Option(
            None, help="PEM certificate (turns on HTTPS).", envvar="MODELFLEET_TLS_CERT"
        ),
        tls_key: Path | None = typer.Option(None, help="PEM private key.", envvar="MODELFLEET_TLS_KEY"),
        port_file: Path | None = typer.Option(None, help="Write the port here once listening (for scripts)."),
        audit_log: Path | None = typer.Option(
            None,
            help="Audit log of admin actions and auth failures (JSON lines); `-` for stdout.",
            envvar="MODELFLEET_AUDIT_LOG",
        ),
    ) -> None:
        """Serve models over the Open Inference Protocol (V2) with dynamic batching."""
        logging.basicConfig(level=logging.WARNING, format="modelfleet: %(message)s")
        spec = build_spec(
            spec_file,
            model,
            {
                "host": host,
                "port": port,
                "workers": workers,
                "tls_cert_file": tls_cert,
                "tls_key_file": tls_key,
            },
            {
                "max_batch_size": max_batch_size,
                "max_delay_s": max_delay_s,
                "max_queue_items": max_queue_items,
                "dispatch_when_idle": dispatch_when_idle,
            },
            ref,
            registry,
            audit_log,
        )
        # Fail before binding the port when an artifact folder is plainly missing or not an artifact.
        for entry in spec.models:
            if entry.path is not None:
                read_manifest(entry.path)
        from modelfleet.server.runner import serve as run_server
        from modelfleet.server.runner import write_port_file

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

        code = run_server(spec, on_listening)
        raise typer.Exit(code)
