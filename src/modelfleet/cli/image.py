"""`modelfleet image context`: assemble a container build context with a fleet's artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import console, print_json, warn

image_app = typer.Typer(name="image", help="Container images for model servers.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


@image_app.command("context")
def context_command(
    spec_file: Annotated[Path, typer.Argument(help="Fleet spec (YAML) whose artifacts go into the image.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to assemble the build context in.")],
    source: Annotated[
        Path | None,
        typer.Option(
            "--source", help="modelfleet source checkout (default: the one this package runs from)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output folder.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print what was assembled as JSON.")] = False,
) -> None:
    """Write Dockerfile, modelfleet source and verified artifacts into one folder for `docker build`."""
    from modelfleet.fleet.image_context import assemble_image_context
    from modelfleet.fleet.sizing import load_fleet_spec

    spec = load_fleet_spec(spec_file)
    result = assemble_image_context(spec, out_dir, source_root=source, force=force)
    if json_output:
        print_json(result.to_json())
        return
    for name in result.skipped_refs:
        warn(f"model {name} is a registry reference and is not baked into the image")
    console.print(
        f"assembled {out_dir}: {len(result.models)} model(s), {len(result.files)} files; "
        f"build with: docker build -t {spec.image.repository}:{spec.image.tag} {out_dir}",
        highlight=False,
        soft_wrap=True,
    )
