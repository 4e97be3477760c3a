"""The local supervisor with real servers: SIGKILL under load heals by itself, restarts are recorded,
requests admitted meanwhile succeed (retried) or fail with a clear 503, never hang."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from tests.support.fleet_specs import write_fleet_spec
from tests.support.linear_model import infer_body, make_artifact

from modelfleet.errors import Conflict, SpecError, Unavailable
from modelfleet.fleet.local import fleet_endpoints, start_fleet, stop_fleet
from modelfleet.fleet.state import FleetPaths, read_restarts, read_state
from modelfleet.fleet.status import fleet_status, log_files, tail_lines

pytestmark = pytest.mark.timeout(180)
CLIENT_TIMEOUT_S = 8.0


async def _load(
    router_url: str, models: list[str], duration_s: float, kill_at_s: float, victim_pid: int
) -> list[tuple[int, dict[str, object], str | None]]:
    """4 closed-loop clients for ``duration_s``; SIGKILL ``victim_pid`` at ``kill_at_s``."""
    results: list[tuple[int, dict[str, object], str | None]] = []
    started = time.monotonic()
    body = infer_body()

    async def client(index: int) -> None:
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as http:
            count = 0
            while time.monotonic() - started < duration_s:
                model = models[(index + count) % len(models)]
                count += 1
                # Any exception (a hang would be a ReadTimeout) fails the test below.
                response = await http.post(f"{router_url}/v2/models/{model}/infer", json=body)
                results.append((response.status_code, response.json(), response.headers.get("Retry-After")))

    async def killer() -> None:
        await asyncio.sleep(kill_at_s)
        os.kill(victim_pid, signal.SIGKILL)

    await asyncio.gather(killer(), *(client(i) for i in range(4)))
    return results


def _wait_until_healed(spec_file: Path, state_root: Path, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = fleet_status(spec_file, state_root)
        processes = status["processes"]
        assert isinstance(processes, list)
        if status["router_ready"] and all(p["state"] == "ready" for p in processes):
            return status
        time.sleep(0.1)
    raise AssertionError(
        f"fleet not back to full readiness within {timeout_s} s: {fleet_status(spec_file, state_root)}"
    )


def test_sigkill_under_load_heals_records_and_never_hangs(tmp_path: Path) -> None:
    artifacts = {
        "alpha": make_artifact(tmp_path / "alpha", "alpha", 1),
        "beta": make_artifact(tmp_path / "beta", "beta", 2),
    }
    spec_file = write_fleet_spec(
        tmp_path / "fleet.yaml",
        artifacts,
        pools=[{"name": "cpu", "replicas": 2, "resources": {"memory_mib": 1024}}],
    )
    state_root = tmp_path / "state"
    state = start_fleet(spec_file, state_root=state_root, wait_s=120)
    paths = FleetPaths.for_fleet("testfleet", state_root)
    try:
        assert state.status == "running"
        router_url, models = fleet_endpoints(spec_file, state_root)
        assert router_url == state.router_url and models == ["alpha", "beta"]
        with pytest.raises(Conflict, match="already running"):
            start_fleet(spec_file, state_root=state_root, wait_s=5)

        victim = state.process("cpu-0-0")
        assert victim.pid is not None
        router_pid = state.process("router").pid
        assert router_pid is not None
        # Servers run local.server_nice (5) below the router, so a saturated machine still routes and sheds.
        assert psutil.Process(victim.pid).nice() == min(19, psutil.Process(router_pid).nice() + 5)
        results = asyncio.run(_load(router_url, models, duration_s=4.0, kill_at_s=1.0, victim_pid=victim.pid))

        # Admitted requests succeed, or fail with a clear 503 and Retry-After; nothing else, nothing hangs.
        assert len(results) > 50
        unexpected = [r for r in results if r[0] not in (200, 503)]
        assert not unexpected, unexpected[:3]
        for status_code, payload, retry_after in results:
            if status_code == 503:
                assert "error" in payload and retry_after is not None
            else:
                assert payload["model_name"] in models
        assert sum(1 for r in results if r[0] == 200) > 0.9 * len(results)

        healed = _wait_until_healed(spec_file, state_root, timeout_s=60)
        restarts = read_restarts(paths)
        assert [r["process"] for r in restarts] == ["cpu-0-0"]
        assert restarts[0]["signal"] == "SIGKILL" and restarts[0]["pid"] == victim.pid
        assert restarts[0]["reason"] == "killed by SIGKILL"
        after = read_state(paths).process("cpu-0-0")
        assert (
            after.restarts == 1
            and after.pid not in (None, victim.pid)
            and after.last_exit == "killed by SIGKILL"
        )
        assert healed["restart_count"] == 1
        by_model = {m["name"]: m for m in healed["models"]}  # type: ignore[union-attr]
        assert by_model["alpha"]["ready_replicas"] == 2 and by_model["alpha"]["restarts"] == 1
        assert by_model["alpha"]["requests"] + by_model["beta"]["requests"] == len(results)
        assert by_model["alpha"]["p99_ms"] is not None

        logs = dict(log_files("testfleet", state_root))
        assert set(logs) == {"supervisor", "cpu-0-0", "cpu-0-1", "router"}
        assert any("killed by SIGKILL" in line for line in tail_lines(logs["cpu-0-0"], 50))
    finally:
        pids = [r.pid for r in read_state(paths).processes if r.pid is not None]
        supervisor_pid = read_state(paths).supervisor_pid
        stopped = stop_fleet(spec_file, state_root, grace_s=10)
    assert stopped.status == "stopped"
    for pid in [*pids, supervisor_pid]:
        assert (
            pid is None or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        )
    with pytest.raises(Unavailable, match="not running"):
        fleet_endpoints(spec_file, state_root)


def test_a_server_that_keeps_crashing_is_restarted_with_growing_back_off(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()  # not an artifact: the server exits at start-up
    spec_file = write_fleet_spec(
        tmp_path / "fleet.yaml",
        {"broken": broken},
        models=[{"name": "broken", "path": str(broken), "memory_mib": 10}],
    )
    state_root = tmp_path / "state"
    with pytest.raises(Unavailable, match="not ready after 6 s"):
        start_fleet(spec_file, state_root=state_root, wait_s=6)
    paths = FleetPaths.for_fleet("testfleet", state_root)
    try:
        deadline = time.monotonic() + 30
        while len(read_restarts(paths)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        restarts = read_restarts(paths)
        assert len(restarts) >= 3
        assert all(r["process"] == "cpu-0-0" and r["exit_code"] not in (None, 0) for r in restarts)
        backoffs = [r["backoff_s"] for r in restarts[:3]]
        assert backoffs == [0.2, 0.4, 0.8]
        status = fleet_status(spec_file, state_root)
        assert status["status"] == "starting" and not status["router_ready"]
    finally:
        stop_fleet(spec_file, state_root, grace_s=5)


def test_auth_on_the_fleet_is_enforced_through_the_router(tmp_path: Path) -> None:
    from modelfleet.security.keys import KeyStore

    keys_file = tmp_path / "keys.json"
    key = KeyStore(keys_file).create("fleet-test", ["infer:alpha"], actor="test").key
    read_key = KeyStore(keys_file).create("fleet-status", ["read"], actor="test").key
    artifacts = {
        "alpha": make_artifact(tmp_path / "alpha", "alpha", 1),
        "beta": make_artifact(tmp_path / "beta", "beta", 2),
    }
    spec_file = write_fleet_spec(
        tmp_path / "fleet.yaml", artifacts, auth={"enabled": True, "keys_file": str(keys_file)}
    )
    state_root = tmp_path / "state"
    state = start_fleet(spec_file, state_root=state_root, wait_s=120)
    try:
        url = f"{state.router_url}/v2/models"
        anonymous = httpx.post(f"{url}/alpha/infer", json=infer_body())
        assert anonymous.status_code == 401 and "missing API key" in anonymous.json()["error"]
        allowed = httpx.post(
            f"{url}/alpha/infer", json=infer_body(), headers={"Authorization": f"Bearer {key}"}
        )
        assert allowed.status_code == 200
        other_model = httpx.post(f"{url}/beta/infer", json=infer_body(), headers={"X-API-Key": key})
        assert other_model.status_code == 403
        assert httpx.get(f"{state.router_url}/v2/health/ready").status_code == 200  # probes stay open
        # Each server process keeps its own audit log in the fleet's state folder, with client addresses.
        server = next(p for p in state.processes if p.kind == "server")
        assert httpx.get(f"{server.url}/v2", headers={"X-API-Key": "mf_nokey000_x"}).status_code == 401
        audit_file = FleetPaths.for_fleet("testfleet", state_root).root / "audit" / f"{server.id}.jsonl"
        denied = [json.loads(line) for line in audit_file.read_text().splitlines()]
        assert denied[-1]["event"] == "auth.denied" and denied[-1]["client"].startswith("127.0.0.1:")
        # The router's own figures need a `read` key too; without one, status says how to give it.
        assert httpx.get(f"{state.router_url}/fleet/status").status_code == 401
        assert httpx.get(f"{state.router_url}/metrics").status_code == 401
        anonymous_status = fleet_status(spec_file, state_root)
        assert not anonymous_status["router_ready"]
        assert "MODELFLEET_API_KEY" in anonymous_status["router_error"]
        refused = fleet_status(spec_file, state_root, api_key=key)  # infer only: 403
        assert "refused the key given" in refused["router_error"]
        status = fleet_status(spec_file, state_root, api_key=read_key)
        assert status["router_ready"] and status["router_error"] is None
        alpha = next(m for m in status["models"] if m["name"] == "alpha")
        assert alpha["requests"] >= 1  # the allowed inference above, counted by the router
    finally:
        stop_fleet(spec_file, state_root, grace_s=5)


def test_local_auth_without_a_key_store_is_refused_before_anything_starts(tmp_path: Path) -> None:
    artifacts = {"alpha": make_artifact(tmp_path / "alpha", "alpha", 1)}
    spec_file = write_fleet_spec(tmp_path / "fleet.yaml", artifacts, auth={"enabled": True})
    with pytest.raises(SpecError, match=r"auth\.keys_file is not set"):
        start_fleet(spec_file, state_root=tmp_path / "state", wait_s=5)
    assert not (tmp_path / "state" / "testfleet" / "state.json").exists()


def test_a_local_fleet_serves_tls_from_certificate_paths_relative_to_the_spec(tmp_path: Path) -> None:
    from modelfleet.security.tls import client_ssl_context, generate_self_signed

    generate_self_signed(tmp_path / "tls" / "router.pem", tmp_path / "tls" / "router.key")
    artifacts = {"alpha": make_artifact(tmp_path / "alpha", "alpha", 1)}
    spec_file = write_fleet_spec(
        tmp_path / "fleet.yaml",
        artifacts,
        router={"port": 0, "tls_cert_file": "tls/router.pem", "tls_key_file": "tls/router.key"},
    )
    state_root = tmp_path / "state"
    state = start_fleet(spec_file, state_root=state_root, wait_s=120)  # the supervisor checks it over TLS
    try:
        assert state.router_url.startswith("https://127.0.0.1:")
        trust = client_ssl_context(tmp_path / "tls" / "router.pem")
        response = httpx.post(f"{state.router_url}/v2/models/alpha/infer", json=infer_body(), verify=trust)
        assert response.status_code == 200 and response.json()["model_name"] == "alpha"

        # `fleet status` trusts the self-signed certificate the spec names, as the supervisor does.
        status = fleet_status(spec_file, state_root)
        assert status["router_ready"] and status["router_error"] is None
        assert next(m for m in status["models"] if m["name"] == "alpha")["requests"] >= 1

        # A router serving a certificate other than the one named (here: the name now points at another
        # one) is reported as untrusted with the way out, not as down; the CLI's --ca-file is that way.
        router_file = FleetPaths.for_fleet("testfleet", state_root).router_file
        settings = json.loads(router_file.read_text())
        generate_self_signed(tmp_path / "other" / "other.pem", tmp_path / "other" / "other.key")
        router_file.write_text(
            json.dumps({**settings, "tls_cert_file": str(tmp_path / "other" / "other.pem")})
        )
        untrusted = fleet_status(spec_file, state_root)
        assert not untrusted["router_ready"]
        assert "not trusted" in untrusted["router_error"] and "--ca-file" in untrusted["router_error"]

        def cli_status(*extra: str) -> subprocess.CompletedProcess[str]:
            command = ["fleet", "status", str(spec_file), "--state-dir", str(state_root), "--json", *extra]
            return subprocess.run(
                [sys.executable, "-m", "modelfleet.cli.main", *command],
                capture_output=True,
                text=True,
                timeout=60,
            )

        refused = cli_status()
        assert refused.returncode == 0 and "--ca-file" in refused.stderr
        assert not json.loads(refused.stdout)["router_ready"]
        given = cli_status("--ca-file", str(tmp_path / "tls" / "router.pem"))
        assert given.returncode == 0, given.stderr
        shown = json.loads(given.stdout)
        assert shown["router_ready"] and shown["router_error"] is None
        missing = cli_status("--ca-file", str(tmp_path / "no-such-ca.pem"))
        assert missing.returncode == 3 and "no-such-ca.pem" in missing.stderr
        router_file.write_text(json.dumps(settings))
    finally:
        stop_fleet(spec_file, state_root, grace_s=5)
