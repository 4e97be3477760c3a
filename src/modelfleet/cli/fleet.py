"""`modelfleet fleet ...`: validate a fleet spec, run it locally, render it for and apply it to Kubernetes.

Every command wraps one library call (`fleet.sizing.load_plan`, `fleet.local.start_fleet`, `fleet.status
.fleet_status`, `fleet.kubernetes.render_fleet`, `fleet.apply.*`) and prints `fleet.warnings.fleet_warnings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from modelfleet.cli.common import StateDir, console, err_console, print_json, warn
from modelfleet.errors import InvalidInput

if TYPE_CHECKING:
    from modelfleet.fleet.apply import ObjectResult
    from modelfleet.fleet.plan import FleetPlan

# Library imports happen inside commands so `modelfleet --help` does not load httpx and kubernetes.

fleet_app = typer.Typer(
    name="fleet", help="Many models behind one endpoint: local processes or Kubernetes.", no_args_is_help=True
)

SpecFile = Annotated[Path, typer.Argument(help="Fleet spec (YAML).")]
FleetRef = Annotated[str, typer.Argument(help="Fleet name or spec file.")]
Kubeconfig = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG or ~/.kube/config)."),
]
KubeContext = Annotated[str | None, typer.Option("--context", help="Kubeconfig context to use.")]


def register(app: typer.Typer) -> None:
    from modelfleet.cli.fleet_rollout import rollout_command

    fleet_app.command("rollout")(rollout_command)
    app.add_typer(fleet_app, name="fleet")


# ----- local fleets ------------------------------------------------------------------------------------


@fleet_app.command("validate")
def validate_command(
    spec_file: SpecFile,
    json_output: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Check a fleet spec and show how its models are packed into server groups. Runs nothing."""
    from modelfleet.fleet.sizing import load_plan
    from modelfleet.fleet.warnings import fleet_warnings

    plan = load_plan(spec_file)
    notes = fleet_warnings(plan.fleet, kubernetes=False)
    if json_output:
        print_json({"fleet": plan.fleet.name, "valid": True, "groups": plan.summary(), "warnings": notes})
        return
    console.print(
        f"{spec_file}: valid fleet [bold]{plan.fleet.name}[/] with {len(plan.fleet.models)} model(s) "
        f"in {len(plan.groups)} server group(s)",
        highlight=False,
        soft_wrap=True,
    )
    _print_plan(plan)
    for note in notes:
        warn(note)


@fleet_app.command("up")
def up_command(
    spec_file: SpecFile,
    state_dir: StateDir = None,
    foreground: Annotated[
        bool,
        typer.Option(
            "--foreground", help="Supervise in this process until Ctrl-C instead of in the background."
        ),
    ] = False,
    wait_s: Annotated[
        float,
        typer.Option(
            "--wait-s", help="Longest to wait for the fleet to become ready.", envvar="MODELFLEET_WAIT_S"
        ),
    ] = 180.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the fleet's state as JSON.")] = False,
) -> None:
    """Start the fleet's servers and router on this machine and keep them running."""
    from modelfleet.fleet.local import start_fleet
    from modelfleet.fleet.sizing import load_fleet_spec
    from modelfleet.fleet.warnings import fleet_warnings

    spec = load_fleet_spec(spec_file)
    for note in fleet_warnings(spec, kubernetes=False):
        warn(note)
    state = start_fleet(
        spec_file,
        state_root=state_dir,
        foreground=foreground,
        wait_s=wait_s,
        progress=lambda message: err_console.print(message, highlight=False, soft_wrap=True),
        spec=spec,
    )
    if json_output:
        print_json(state.model_dump(mode="json"))
    elif not foreground:
        console.print(f"{state.router_url}", highlight=False, soft_wrap=True)


@fleet_app.command("down")
def down_command(
    fleet: FleetRef,
    state_dir: StateDir = None,
    grace_s: Annotated[
        float | None,
        typer.Option("--grace-s", help="Wait after SIGTERM before SIGKILL (default: local.stop_grace_s)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")] = False,
) -> None:
    """Stop a local fleet: SIGTERM, then SIGKILL after the grace period."""
    from modelfleet.fleet.local import stop_fleet

    state = stop_fleet(fleet, state_root=state_dir, grace_s=grace_s)
    if json_output:
        print_json(state.model_dump(mode="json"))
    else:
        console.print(f"fleet {state.fleet} stopped", highlight=False, soft_wrap=True)


@fleet_app.command("status")
def status_command(
    fleet: FleetRef,
    state_dir: StateDir = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="Key with the read scope, for the router's figures when the fleet has auth on.",
            envvar="MODELFLEET_API_KEY",
            show_default=False,
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            help="PEM CA bundle to trust for a TLS router's certificate, besides the system's CAs and the "
            "certificate the fleet spec names (for a certificate a private CA issued).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print status as JSON.")] = False,
) -> None:
    """Each model, its replicas and their states, restarts, and request/latency figures from the router."""
    from modelfleet.fleet.status import fleet_status

    result = fleet_status(fleet, state_root=state_dir, api_key=api_key, ca_file=ca_file)
    if result["router_error"]:
        warn(result["router_error"])
    if json_output:
        print_json(result)
    else:
        _print_status(result)


@fleet_app.command("logs")
def logs_command(
    fleet: FleetRef,
    process: Annotated[
        str | None,
        typer.Option("--process", "-p", help="One process id (e.g. cpu-0-1, router, supervisor)."),
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end of each log.")] = 40,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (one process only).")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Print the logs of a local fleet's processes."""
    from modelfleet.fleet.status import follow_file, log_files, tail_lines

    files = log_files(fleet, state_root=state_dir, process=process)
    if follow and len(files) != 1:
        raise InvalidInput("--follow needs one process: add --process ID")
    for process_id, path in files:
        # Plain writes, not rich: log lines must not be re-wrapped or re-coloured.
        if len(files) > 1:
            typer.echo(f"==> {process_id} ({path}) <==")
        for line in tail_lines(path, lines):
            typer.echo(line)
    if follow:
        for chunk in follow_file(files[0][1]):
            typer.echo(chunk, nl=False)


@fleet_app.command("events")
def events_command(
    fleet: FleetRef,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Events from the end of the log.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    state_dir: StateDir = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Availability events: restarts (healed), unavailable models, load failures, alerts, rollouts."""
    import json
    from dataclasses import asdict

    from modelfleet.fleet.status import fleet_events

    for event in fleet_events(fleet, state_root=state_dir, limit=lines, follow=follow):
        if json_output:
            typer.echo(json.dumps(asdict(event), sort_keys=True, default=str))
        else:
            typer.echo(_event_line(asdict(event)))


def _event_line(event: dict[str, Any]) -> str:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(event["at"], UTC).isoformat(timespec="seconds")
    return f"{stamp} {event['severity']:<8} {event['status']:<8} {event['kind']}: {event['summary']}"


# ----- Kubernetes ---------------------------------------------------------------------------------------


@fleet_app.command("render")
def render_command(
    spec_file: SpecFile,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write one file per object and a kustomization.yaml here."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the objects (or the files written) as JSON.")
    ] = False,
    alertmanager: Annotated[
        bool,
        typer.Option(
            "--alertmanager",
            help="Print instead the Alertmanager configuration snippet routing the fleet's alerts to its "
            "webhook sinks (merge it into alertmanager.yml).",
        ),
    ] = False,
    rollout: Annotated[
        str | None,
        typer.Option(
            "--rollout", help="Render only a canary of this model and the router's weighted config."
        ),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="With --rollout: the new version's registry reference.")
    ] = None,
    canary: Annotated[str, typer.Option("--canary", help="With --rollout: the canary's share.")] = "10%",
    shadow: Annotated[str, typer.Option("--shadow", help="With --rollout: share mirrored to it.")] = "0%",
) -> None:
    """Render Kubernetes manifests: Deployments, Services, HPAs, PDBs, NetworkPolicies and more."""
    from modelfleet.fleet.kubernetes import manifests_to_yaml, render_fleet, write_manifests
    from modelfleet.fleet.sizing import load_plan
    from modelfleet.fleet.warnings import fleet_warnings

    plan = load_plan(spec_file)
    if alertmanager:
        import yaml

        from modelfleet.operate.alertmanager import alertmanager_config

        snippet = alertmanager_config(plan.fleet)
        if json_output:
            print_json(snippet)
        else:
            typer.echo(yaml.safe_dump(snippet, sort_keys=False), nl=False)
        return
    for note in fleet_warnings(plan.fleet, kubernetes=True):
        warn(note)
    if rollout is not None:
        from modelfleet.config.rollout import parse_percent
        from modelfleet.fleet.kube_rollout import render_rollout

        if to is None:
            raise InvalidInput("--rollout needs --to REF (the new version's registry reference)")
        share, mirrored = (
            parse_percent(canary, "--canary"),
            parse_percent(shadow, "--shadow", low_exclusive=False),
        )
        objects = render_rollout(plan, rollout, to, share, mirrored)
    else:
        objects = render_fleet(plan)
    if out_dir is None:
        if json_output:
            print_json(objects)
        else:
            typer.echo(manifests_to_yaml(objects), nl=False)
        return
    written = write_manifests(objects, out_dir)
    if json_output:
        print_json({"out_dir": str(out_dir), "files": [str(p) for p in written]})
    else:
        err_console.print(
            f"wrote {len(written)} files to {out_dir} (kubectl apply -k {out_dir})",
            highlight=False,
            soft_wrap=True,
        )


@fleet_app.command("apply")
def apply_command(
    spec_file: SpecFile,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Server-side dry run: validate, store nothing.")
    ] = False,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Server-side apply the rendered fleet to the cluster."""
    from modelfleet.fleet.apply import apply_objects, connect

    results = apply_objects(connect(kubeconfig, context), _kube_objects(spec_file), dry_run=dry_run)
    _print_results(results, json_output, dry_run, show_diff=False)


@fleet_app.command("diff")
def diff_command(
    spec_file: SpecFile,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Show what `apply` would change, object by object (the server's dry run against live objects)."""
    from modelfleet.fleet.apply import connect, diff_objects

    results = diff_objects(connect(kubeconfig, context), _kube_objects(spec_file))
    _print_results(results, json_output, dry_run=False, show_diff=True)


@fleet_app.command("delete")
def delete_command(
    spec_file: SpecFile,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Server-side dry run: delete nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Delete the fleet's objects from the cluster (the Namespace only if the spec creates it)."""
    from modelfleet.fleet.apply import connect, delete_objects

    objects = _kube_objects(spec_file, for_delete=True)
    client = connect(kubeconfig, context)
    if not (yes or dry_run) and not typer.confirm(f"delete {len(objects)} objects of this fleet?", err=True):
        raise InvalidInput("not confirmed; pass --yes to delete without asking")
    results = delete_objects(client, objects, dry_run=dry_run)
    _print_results(results, json_output, dry_run, show_diff=False)


# ----- processes the supervisor and the router container start ---------------------------------------


@fleet_app.command("router", hidden=True)
def router_command(
    config_file: Annotated[Path, typer.Argument(help="Router config (JSON).")],
    port_file: Annotated[
        Path | None, typer.Option(help="Write the port here once listening (for scripts).")
    ] = None,
    grpc_port_file: Annotated[
        Path | None, typer.Option(help="Write the gRPC front's port here once listening (for scripts).")
    ] = None,
) -> None:
    """Run the fleet router (started by the supervisor, or as the router container's command)."""
    from modelfleet.fileio import write_atomic
    from modelfleet.fleet.router_config import read_router_settings
    from modelfleet.fleet.router_serve import run_router

    def on_listening(port: int) -> None:
        if port_file is not None:  # as `serve --port-file` writes it
            write_atomic(port_file, f"{port}\n".encode())

    def on_grpc_listening(port: int) -> None:
        if grpc_port_file is not None:
            write_atomic(grpc_port_file, f"{port}\n".encode())

    run_router(read_router_settings(config_file), on_listening, on_grpc_listening)


@fleet_app.command("supervise", hidden=True)
def supervise_command(
    state_dir: Annotated[Path, typer.Argument(help="The fleet's state folder.")],
) -> None:
    """Run the supervisor of a prepared fleet (started by `fleet up`)."""
    from modelfleet.fleet.local import run_supervisor

    run_supervisor(state_dir)


# ----- output -------------------------------------------------------------------------------------------


def _kube_objects(spec_file: Path, for_delete: bool = False) -> list[dict[str, Any]]:
    from modelfleet.fleet.kubernetes import render_fleet
    from modelfleet.fleet.sizing import load_plan

    return render_fleet(load_plan(spec_file), for_delete)


def _print_plan(plan: FleetPlan) -> None:
    table = Table(title="server groups")
    for column in ("group", "pool", "replicas", "workers", "memory MiB (est./limit)", "models"):
        table.add_column(column)
    for group in plan.groups:
        table.add_row(
            group.name,
            group.pool.name,
            str(group.replicas),
            str(group.pool.workers),
            f"{group.estimated_memory_mib}/{group.pool.resources.memory_mib}",
            ", ".join(group.model_names),
        )
    console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_status(status: dict[str, Any]) -> None:
    """`fleet_status`'s answer (a JSON document, as `--json` prints it) as tables."""
    console.print(
        f"fleet [bold]{status['fleet']}[/]: {status['status']}, router {status['router_url']} "
        f"({'ready' if status['router_ready'] else 'not ready'}), restarts {status['restart_count']}",
        highlight=False,
        soft_wrap=True,
    )
    models = Table(title="models")
    for column in ("model", "group", "ready", "restarts", "requests", "5xx", "retries", "p50 ms", "p99 ms"):
        models.add_column(column, overflow="fold")
    for m in status["models"]:
        models.add_row(
            m["name"],
            str(m["group"]),
            f"{m['ready_replicas']}/{m['replicas']}",
            str(m["restarts"]),
            str(m["requests"]),
            str(m["errors"]),
            str(m["retries"]),
            _ms(m["p50_ms"]),
            _ms(m["p99_ms"]),
        )
    console.print(models)
    processes = Table(title="processes")
    for column in ("id", "pid", "port", "state", "restarts", "last exit"):
        processes.add_column(column)
    for p in status["processes"]:
        processes.add_row(
            p["id"],
            str(p["pid"] or "-"),
            str(p["port"]),
            p["state"],
            str(p["restarts"]),
            p["last_exit"] or "-",
        )
    console.print(processes)
    for record in status["restarts"][-5:]:
        console.print(
            f"restart {record['time']} {record['process']}: {record['reason']} "
            f"(uptime {record['uptime_s']} s, back-off {record['backoff_s']} s)",
            highlight=False,
            soft_wrap=True,
        )
    for event in status.get("events", [])[-5:]:
        console.print(f"event {_event_line(event)}", highlight=False, soft_wrap=True)


def _print_results(results: list[ObjectResult], json_output: bool, dry_run: bool, show_diff: bool) -> None:
    if json_output:
        print_json([r.to_json() for r in results])
        return
    suffix = " (dry run)" if dry_run else ""
    for result in results:
        where = f"{result.namespace}/" if result.namespace else ""
        console.print(
            f"{result.kind.lower()}/{where}{result.name} {result.action}{suffix}",
            highlight=False,
            soft_wrap=True,
        )
        if show_diff and result.diff:
            console.print(result.diff, highlight=False, markup=False)
