"""`modelfleet fleet ...`: validate a fleet spec, run it locally, render it for and apply it to Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelfleet.cli.common import console, err_console, print_json
from modelfleet.errors import InvalidInput

_STATE_DIR_HELP = "Folder holding local fleets' state (pid files, ports, logs, restarts)."
_STATE_DIR_ENV = "MODELFLEET_STATE_DIR"


def _warnings(spec: Any, for_kubernetes: bool) -> list[str]:
    notes = []
    if not spec.auth.enabled:
        notes.append(
            f"auth is off: anyone who can reach the router ({spec.router.host}) can call every model"
        )
    elif not for_kubernetes and spec.auth.keys_file is None:
        notes.append(
            "auth is on without auth.keys_file: `fleet up` needs a key store (modelfleet keys create)"
        )
    if for_kubernetes and spec.image.digest is None:
        notes.append(
            f"image {spec.image.reference} is not pinned by digest; set image.digest for reproducible rollouts"
        )
    if for_kubernetes and spec.auth.enabled:
        secret = spec.auth.secret_name or f"{spec.name}-auth"
        notes.append(f"pods mount Secret {secret} (key `keys`); create it before applying")
        monitoring = spec.kubernetes.monitoring
        if monitoring.service_monitor and spec.auth.protect_metrics and monitoring.scrape_secret_name:
            notes.append(
                f"Prometheus reads a `read` API key from Secret {monitoring.scrape_secret_name} "
                f"(key `{monitoring.scrape_secret_key}`) in namespace {spec.kubernetes.namespace}; "
                "create it before applying"
            )
    refs = [m.name for m in spec.models if m.ref is not None and m.memory_mib is None]
    if refs:
        notes.append(f"registry models without memory_mib are sized at a default estimate: {', '.join(refs)}")
    return notes


def _print_plan(summary: list[dict[str, Any]]) -> None:
    table = Table(title="server groups")
    for column in ("group", "pool", "replicas", "workers", "memory MiB (est./limit)", "models"):
        table.add_column(column)
    for row in summary:
        table.add_row(
            str(row["group"]),
            str(row["pool"]),
            str(row["replicas"]),
            str(row["workers"]),
            f"{row['estimated_memory_mib']}/{row['memory_mib']}",
            ", ".join(row["models"]),
        )
    console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_status(status: dict[str, Any]) -> None:
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


def _print_results(results: list[Any], dry_run: bool, show_diff: bool) -> None:
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


def _kube_objects(spec_file: Path, for_delete: bool = False) -> list[dict[str, Any]]:
    from modelfleet.fleet.kubernetes import render_fleet
    from modelfleet.fleet.sizing import load_plan

    return render_fleet(load_plan(spec_file), for_delete)


def register(app: typer.Typer) -> None:
    fleet_app = typer.Typer(
        help="Many models behind one endpoint: local processes or Kubernetes.", no_args_is_help=True
    )
    app.add_typer(fleet_app, name="fleet")

    @fleet_app.command("validate")
    def validate(
        spec_file: Path = typer.Argument(..., help="Fleet spec (YAML)."),
        json_output: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    ) -> None:
        """Check a fleet spec and show how its models are packed into server groups. Runs nothing."""
        from modelfleet.fleet.sizing import load_plan

        plan = load_plan(spec_file)
        notes = _warnings(plan.fleet, for_kubernetes=False)
        if json_output:
            print_json({"fleet": plan.fleet.name, "valid": True, "groups": plan.summary(), "warnings": notes})
            return
        console.print(
            f"{spec_file}: valid fleet [bold]{plan.fleet.name}[/] with {len(plan.fleet.models)} model(s) "
            f"in {len(plan.groups)} server group(s)",
            highlight=False,
            soft_wrap=True,
        )
        _print_plan(plan.summary())
        for note in notes:
            err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)

    @fleet_app.command("up")
    def up(
        spec_file: Path = typer.Argument(..., help="Fleet spec (YAML)."),
        state_dir: Path | None = typer.Option(
            None, "--state-dir", help=_STATE_DIR_HELP, envvar=_STATE_DIR_ENV
        ),
        foreground: bool = typer.Option(
            False, "--foreground", help="Supervise in this process until Ctrl-C instead of in the background."
        ),
        wait_s: float = typer.Option(
            180.0,
            "--wait-s",
            help="Longest to wait for the fleet to become ready.",
            envvar="MODELFLEET_WAIT_S",
        ),
        json_output: bool = typer.Option(False, "--json", help="Print the fleet's state as JSON."),
    ) -> None:
        """Start the fleet's servers and router on this machine and keep them running."""
        from modelfleet.fleet.local import start_fleet
        from modelfleet.fleet.sizing import load_fleet_spec

        spec = load_fleet_spec(spec_file)
        for note in _warnings(spec, for_kubernetes=False):
            err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
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
    def down(
        fleet: str = typer.Argument(..., help="Fleet name or spec file."),
        state_dir: Path | None = typer.Option(
            None, "--state-dir", help=_STATE_DIR_HELP, envvar=_STATE_DIR_ENV
        ),
        grace_s: float | None = typer.Option(
            None, "--grace-s", help="Wait after SIGTERM before SIGKILL (default: local.stop_grace_s)."
        ),
        json_output: bool = typer.Option(False, "--json", help="Print the final state as JSON."),
    ) -> None:
        """Stop a local fleet: SIGTERM, then SIGKILL after the grace period."""
        from modelfleet.fleet.local import stop_fleet

        state = stop_fleet(fleet, state_root=state_dir, grace_s=grace_s)
        if json_output:
            print_json(state.model_dump(mode="json"))
        else:
            console.print(f"fleet {state.fleet} stopped", highlight=False, soft_wrap=True)

    @fleet_app.command("status")
    def status(
        fleet: str = typer.Argument(..., help="Fleet name or spec file."),
        state_dir: Path | None = typer.Option(
            None, "--state-dir", help=_STATE_DIR_HELP, envvar=_STATE_DIR_ENV
        ),
        api_key: str | None = typer.Option(
            None,
            "--api-key",
            help="Key with the read scope, for the router's figures when the fleet has auth on.",
            envvar="MODELFLEET_API_KEY",
            show_default=False,
        ),
        ca_file: Path | None = typer.Option(
            None,
            "--ca-file",
            help="PEM CA bundle to trust for a TLS router's certificate, besides the system's CAs and the "
            "certificate the fleet spec names (for a certificate a private CA issued).",
            show_default=False,
        ),
        json_output: bool = typer.Option(False, "--json", help="Print status as JSON."),
    ) -> None:
        """Each model, its replicas and their states, restarts, and request/latency figures from the router."""
        from modelfleet.fleet.status import fleet_status

        result = fleet_status(fleet, state_root=state_dir, api_key=api_key, ca_file=ca_file)
        if result["router_error"]:
            err_console.print(
                f"[yellow]warning:[/] {result['router_error']}", highlight=False, soft_wrap=True
            )
        if json_output:
            print_json(result)
        else:
            _print_status(result)

    @fleet_app.command("logs")
    def logs(
        fleet: str = typer.Argument(..., help="Fleet name or spec file."),
        process: str | None = typer.Option(
            None, "--process", "-p", help="One process id (e.g. cpu-0-1, router, supervisor)."
        ),
        lines: int = typer.Option(40, "--lines", "-n", min=0, help="Lines from the end of each log."),
        follow: bool = typer.Option(
            False, "--follow", "-f", help="Keep printing new lines (one process only)."
        ),
        state_dir: Path | None = typer.Option(
            None, "--state-dir", help=_STATE_DIR_HELP, envvar=_STATE_DIR_ENV
        ),
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

    @fleet_app.command("render")
    def render(
        spec_file: Path = typer.Argument(..., help="Fleet spec (YAML)."),
        out_dir: Path | None = typer.Option(
            None, "--out", "-o", help="Write one file per object and a kustomization.yaml here."
        ),
        json_output: bool = typer.Option(
            False, "--json", help="Print the objects (or the files written) as JSON."
        ),
    ) -> None:
        """Render Kubernetes manifests: Deployments, Services, HPAs, PDBs, NetworkPolicies and more."""
        from modelfleet.fleet.kubernetes import manifests_to_yaml, render_fleet, write_manifests
        from modelfleet.fleet.sizing import load_plan

        plan = load_plan(spec_file)
        for note in _warnings(plan.fleet, for_kubernetes=True):
            err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
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
    def apply(
        spec_file: Path = typer.Argument(..., help="Fleet spec (YAML)."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Server-side dry run: validate, store nothing."
        ),
        kubeconfig: Path | None = typer.Option(
            None, "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG or ~/.kube/config)."
        ),
        context: str | None = typer.Option(None, "--context", help="Kubeconfig context to use."),
        json_output: bool = typer.Option(False, "--json", help="Print results as JSON."),
    ) -> None:
        """Server-side apply the rendered fleet to the cluster."""
        from modelfleet.fleet.apply import apply_objects, connect

        objects = _kube_objects(spec_file)
        results = apply_objects(connect(kubeconfig, context), objects, dry_run=dry_run)
        if json_output:
            print_json([r.to_json() for r in results])
        else:
            _print_results(results, dry_run, show_diff=False)

    @fleet_app.command("diff")
    def diff(
        spec_file: Path = typer.Argument(..., help="Fleet spec (YAML)."),
        kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig file."),
        context: str | None = typer.Option(None, "--context", help="Kubeconfig context to use."),
        json_output: bool = typer.Option(False, "--json", help="Print results as JSON."),
    ) -> None:
        """Show what `apply` would change, object by object (the server's dry run against live objects)."""
        from modelfleet.fleet.apply import connect, diff_objects

        objects = _kube_objects(spec_file)
        results = diff_objects(connect(kubeconfig, context), objects)
        if json_output:
            print_json([r.to_json() for r in results])
        else:
            _print_results(results, dry_run=False, show_diff=True)

    @fleet_app.command("delete")
    def delete(
        spec_file: Path = typer.Argument(..., help="Fleet spec (YAML)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Server-side dry run: delete nothing."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
        kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig file."),
        context: str | None = typer.Option(None, "--context", help="Kubeconfig context to use."),
        json_output: bool = typer.Option(False, "--json", help="Print results as JSON."),
    ) -> None:
        """Delete the fleet's objects from the cluster (the Namespace only if the spec creates it)."""
        from modelfleet.fleet.apply import connect, delete_objects

        objects = _kube_objects(spec_file, for_delete=True)
        client = connect(kubeconfig, context)
        if not (yes or dry_run) and not typer.confirm(
            f"delete {len(objects)} objects of this fleet?", err=True
        ):
            raise InvalidInput("not confirmed; pass --yes to delete without asking")
        results = delete_objects(client, objects, dry_run=dry_run)
        if json_output:
            print_json([r.to_json() for r in results])
        else:
            _print_results(results, dry_run, show_diff=False)

    @fleet_app.command("router", hidden=True)
    def router(config_file: Path = typer.Argument(..., help="Router config (JSON).")) -> None:
        """Run the fleet router (started by the supervisor, or as the router container's command)."""
        from modelfleet.fleet.router import run_router
        from modelfleet.fleet.router_config import read_router_settings

        run_router(read_router_settings(config_file))

    @fleet_app.command("supervise", hidden=True)
    def supervise(state_dir: Path = typer.Argument(..., help="The fleet's state folder.")) -> None:
        """Run the supervisor of a prepared fleet (started by `fleet up`)."""
        from modelfleet.fleet.local import run_supervisor

        run_supervisor(state_dir)
