"""The local fleet's state folder: atomic state writes, the restart log, exit descriptions, pid ownership."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.fleet.state import (
    FleetPaths,
    FleetState,
    ProcessRecord,
    append_restart,
    describe_exit,
    owned_process,
    read_restarts,
    read_state,
    write_state,
)


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
