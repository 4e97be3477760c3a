"""What `fleet status` and `fleet logs` report: the saved state, the restart log, the router's figures."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from modelfleet.fleet.local import resolve_fleet, supervisor_alive
from modelfleet.fleet.state import read_restarts, read_state, router_trust
from modelfleet.operate.events import Event, read_events_at

_ROUTER_TIMEOUT_S = 2.0
RECENT_RESTARTS = 20
RECENT_EVENTS = 10
_EVENTS_TAIL_BYTES = 256 * 1024  # a status reads the end of the event log, never all of a long one


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed under an httpx connection error, if that was the cause."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _router_figures(
    router_url: str, api_key: str | None, verify: ssl.SSLContext | bool
) -> tuple[dict[str, Any] | None, str | None]:
    """The router's /fleet/status document, or None and why the router would not give it."""
    headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
    try:
        response = httpx.get(
            f"{router_url}/fleet/status", headers=headers, timeout=_ROUTER_TIMEOUT_S, verify=verify
        )
    except httpx.HTTPError as exc:
        failed = _untrusted(exc)
        if failed is not None:
            return None, (
                f"the router's TLS certificate is not trusted ({failed.verify_message}): it is checked "
                "against the system's CAs and the fleet spec's router.tls_cert_file; pass --ca-file with "
                "the CA that issued it"
            )
        return None, None  # not up (yet): the process states say so
    if response.status_code in (401, 403):
        refused = "was refused" if api_key is None else "refused the key given"
        return None, (
            f"the router's figures need an API key with the read scope (the fleet has auth on) and this "
            f"request {refused} (HTTP {response.status_code}): pass --api-key or set MODELFLEET_API_KEY"
        )
    if response.status_code != 200:
        return None, None
    data: dict[str, Any] = response.json()
    return data, None


def fleet_status(
    fleet: str | Path,
    state_root: Path | None = None,
    api_key: str | None = None,
    ca_file: Path | None = None,
) -> dict[str, Any]:
    """Each model with its replicas, their states and restarts, and request/latency figures from the router.

    ``api_key`` (a key with the ``read`` scope) is needed for the router's figures when the fleet has auth
    on; without it the answer says so in ``router_error`` and carries the saved state only. A TLS router
    is verified against the system's CAs, the certificate the fleet spec names, and ``ca_file``.
    """
    paths = resolve_fleet(fleet, state_root)
    state = read_state(paths)
    running = supervisor_alive(state, paths)
    router, router_error = (
        _router_figures(state.router_url, api_key, router_trust(paths, ca_file)) if running else (None, None)
    )
    router_models: dict[str, Any] = (router or {}).get("models", {})
    restarts = read_restarts(paths)
    models = []
    for name in state.models:
        processes = [r for r in state.processes if r.kind == "server" and name in r.models]
        figures = router_models.get(name, {})
        models.append(
            {
                "name": name,
                "group": processes[0].group if processes else None,
                "replicas": len(processes),
                "ready_replicas": sum(1 for r in processes if r.state == "ready"),
                "states": {r.id: r.state for r in processes},
                "restarts": sum(r.restarts for r in processes),
                "requests": figures.get("requests", 0),
                "errors": figures.get("errors", 0),
                "retries": figures.get("retries", 0),
                "p50_ms": figures.get("p50_ms"),
                "p99_ms": figures.get("p99_ms"),
            }
        )
    return {
        "fleet": state.fleet,
        "status": state.status if running or state.status == "stopped" else "supervisor not running",
        "supervisor_pid": state.supervisor_pid if running else None,
        "router_url": state.router_url,
        "router_ready": bool(router and router.get("ready")),
        "router_error": router_error,
        "state_dir": str(paths.root),
        "updated_at": state.updated_at,
        "models": models,
        "processes": [
            {
                "id": r.id,
                "kind": r.kind,
                "group": r.group,
                "pid": r.pid,
                "port": r.port,
                "state": r.state,
                "restarts": r.restarts,
                "last_exit": r.last_exit,
            }
            for r in state.processes
        ],
        "restarts": restarts[-RECENT_RESTARTS:],
        "restart_count": len(restarts),
        "events": [asdict(event) for event in recent_events(paths.events_file, RECENT_EVENTS)],
    }


def recent_events(events_file: Path, limit: int) -> list[Event]:
    """The last ``limit`` events of a log, read from its end."""
    size = events_file.stat().st_size if events_file.is_file() else 0
    start = max(0, size - _EVENTS_TAIL_BYTES)
    if start > 0:  # skip to the first whole line of the tail
        with events_file.open("rb") as handle:
            handle.seek(start)
            start += len(handle.readline())
    found, _ = read_events_at(events_file, start)
    return [event for _, event in found][-limit:] if limit > 0 else []


def fleet_events(
    fleet: str | Path,
    state_root: Path | None = None,
    limit: int = 50,
    follow: bool = False,
    poll_s: float = 0.5,
) -> Iterator[Event]:
    """The fleet's last ``limit`` events, then (``follow``) every new one as it is appended, until stopped."""
    paths = resolve_fleet(fleet, state_root)
    yield from recent_events(paths.events_file, limit)
    if not follow:
        return
    offset = paths.events_file.stat().st_size if paths.events_file.is_file() else 0
    while True:
        time.sleep(poll_s)
        found, offset = read_events_at(paths.events_file, offset)
        for _, event in found:
            yield event


def log_files(
    fleet: str | Path, state_root: Path | None = None, process: str | None = None
) -> list[tuple[str, Path]]:
    """(process id, log file) for one process, or for the supervisor and every process."""
    paths = resolve_fleet(fleet, state_root)
    state = read_state(paths)
    if process is not None:
        if process == "supervisor":
            return [("supervisor", paths.supervisor_log)]
        return [(process, Path(state.process(process).log_file))]
    return [("supervisor", paths.supervisor_log)] + [(r.id, Path(r.log_file)) for r in state.processes]


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file, read from the end so big logs stay cheap."""
    if not path.is_file():
        return []
    block = 64 * 1024
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        data = b""
        position = size
        while position > 0 and data.count(b"\n") <= lines:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    return data.decode("utf-8", errors="replace").splitlines()[-lines:] if lines > 0 else []


def follow_file(path: Path, poll_s: float = 0.5) -> Iterator[str]:
    """Text appended to ``path`` from now on, as it arrives (like `tail -f`); runs until the caller stops."""
    # Measured here, not inside the generator, which would only start at the first next().
    position = path.stat().st_size if path.is_file() else 0
    return _appended(path, position, poll_s)


def _appended(path: Path, position: int, poll_s: float) -> Iterator[str]:
    while True:
        time.sleep(poll_s)
        if not path.is_file():
            continue
        size = path.stat().st_size
        if size < position:  # truncated or replaced: start again from the top
            position = 0
        if size > position:
            with path.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read(size - position)
            position = size
            yield chunk.decode("utf-8", errors="replace")
