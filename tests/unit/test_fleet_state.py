"""The local fleet's state folder: atomic state writes, the restart log, exit descriptions, pid ownership,
what a client of the router trusts."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.fleet.router_config import RouterSettings, Upstream, write_router_settings
from modelfleet.fleet.state import (
    FleetPaths,
    FleetState,
    ProcessRecord,
    append_restart,
    describe_exit,
    owned_process,
    read_restarts,
    read_state,
    router_trust,
    write_state,
)
from modelfleet.security.tls import generate_self_signed


def _state(paths: FleetPaths) -> FleetState:
    record = ProcessRecord(
        id="cpu-0-0",
        kind="server",
        group="cpu-0",
        models=["a"],
        port=1234,
        url="http://127.0.0.1:1234",
        log_file=str(paths.log_file("cpu-0-0")),
    )
    now = time.time()
    return FleetState(
        fleet="demo",
        spec_path="/x/fleet.yaml",
        state_dir=str(paths.root),
        router_url="http://127.0.0.1:8080",
        models=["a"],
        created_at=now,
        updated_at=now,
        processes=[record],
    )


def test_state_round_trips_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    paths = FleetPaths.for_fleet("demo", tmp_path)
    state = _state(paths)
    write_state(paths, state)
    state.processes[0].restarts = 3
    write_state(paths, state)
    loaded = read_state(paths)
    assert loaded.process("cpu-0-0").restarts == 3
    assert [p.name for p in paths.root.iterdir()] == ["state.json"]
    with pytest.raises(NotFound, match="no process 'router'"):
        loaded.process("router")


def test_missing_or_corrupt_state_gives_clear_errors(tmp_path: Path) -> None:
    paths = FleetPaths.for_fleet("demo", tmp_path)
    with pytest.raises(NotFound, match="fleet up"):
        read_state(paths)
    paths.root.mkdir(parents=True)
    paths.state_file.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not a valid fleet state file"):
        read_state(paths)


def test_restart_log_skips_a_line_cut_by_a_crash(tmp_path: Path) -> None:
    paths = FleetPaths.for_fleet("demo", tmp_path)
    paths.root.mkdir(parents=True)
    append_restart(paths, {"process": "cpu-0-0", "signal": "SIGKILL"})
    with paths.restarts_file.open("a", encoding="utf-8") as handle:
        handle.write('{"process": "cpu-0-1", "sig')
    append_restart(paths, {"process": "router", "exit_code": 1})
    assert [r["process"] for r in read_restarts(paths)] == ["cpu-0-0", "router"]


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (0, (0, None)),
        (3, (3, None)),
        (-signal.SIGKILL, (None, "SIGKILL")),
        (-signal.SIGTERM, (None, "SIGTERM")),
        (None, (None, None)),
    ],
)
def test_exit_descriptions(returncode: int | None, expected: tuple[int | None, str | None]) -> None:
    assert describe_exit(returncode) == expected


def test_only_processes_that_mention_the_state_folder_are_ours(tmp_path: Path) -> None:
    marker = str(tmp_path / "fleets" / "demo")
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert owned_process(ours.pid, marker) is not None
        assert owned_process(other.pid, marker) is None
        assert owned_process(None, marker) is None
    finally:
        for process in (ours, other):
            process.kill()
            process.wait()
    assert owned_process(ours.pid, marker) is None


def _router_paths(tmp_path: Path, cert: Path | None) -> FleetPaths:
    paths = FleetPaths(tmp_path / "fleet")
    paths.root.mkdir(parents=True)
    upstream = Upstream(name="cpu-0-0", group="cpu-0", url="http://127.0.0.1:1", models=["a"])
    key = None if cert is None else cert.with_suffix(".key")
    write_router_settings(
        RouterSettings(fleet="f", upstreams=[upstream], tls_cert_file=cert, tls_key_file=key),
        paths.router_file,
    )
    return paths


def test_router_trust_is_the_system_cas_plus_the_named_certificate_and_ca_file(tmp_path: Path) -> None:
    assert router_trust(_router_paths(tmp_path / "plain", None)) is True  # plain HTTP: httpx's default
    generate_self_signed(tmp_path / "router.pem", tmp_path / "router.key")
    generate_self_signed(tmp_path / "ca.pem", tmp_path / "ca.key")
    context = router_trust(_router_paths(tmp_path / "tls", tmp_path / "router.pem"), tmp_path / "ca.pem")
    assert not isinstance(context, bool)
    anchors = context.get_ca_certs(binary_form=True)
    for pem in (tmp_path / "router.pem", tmp_path / "ca.pem"):
        assert ssl.PEM_cert_to_DER_cert(pem.read_text()) in anchors
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_router_trust_refuses_missing_or_unreadable_certificates_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"router\.tls_cert_file"):
        router_trust(_router_paths(tmp_path / "gone", tmp_path / "gone.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(InvalidInput, match=r"junk\.pem is not a PEM certificate file"):
        router_trust(_router_paths(tmp_path / "junk", tmp_path / "junk.pem"))
    with pytest.raises(NotFound, match=r"no-ca\.pem"):
        router_trust(_router_paths(tmp_path / "ca", None), tmp_path / "no-ca.pem")
