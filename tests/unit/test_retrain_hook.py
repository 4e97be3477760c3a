"""The hook contract: the environment it gets, a missing or non-executable program refused before it runs,
a non-zero exit rejected with its stderr's last line, a hook past its timeout killed with its children."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from modelfleet.config.retrain import RetrainConfig
from modelfleet.drift.hook import hook_argv, run_hook
from modelfleet.errors import DeadlineExceeded, HookFailed, InvalidInput


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "out").mkdir(exist_ok=True)
    return {
        "MODELFLEET_WINDOW_FILE": str(tmp_path / "window.jsonl"),
        "MODELFLEET_LABELS_FILE": "",
        "MODELFLEET_OUTPUT_DIR": str(tmp_path / "out"),
        "MODELFLEET_MODEL": "iris",
        "MODELFLEET_PARENT_REF": "iris:1",
    }


def test_a_hook_gets_the_contract_and_its_single_output_is_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFLEET_API_KEY", "secret-key")
    script = 'cd "$MODELFLEET_OUTPUT_DIR" && env | grep ^MODELFLEET_ | sort > model.txt'
    result = run_hook(["sh", "-c", script], _env(tmp_path), tmp_path, tmp_path, timeout_s=20)
    assert result.exit_code == 0 and result.source == tmp_path / "out" / "model.txt"
    seen = result.source.read_text()
    assert "MODELFLEET_PARENT_REF=iris:1" in seen and "MODELFLEET_MODEL=iris" in seen
    assert "secret-key" not in seen  # the fleet's key never reaches a hook


def test_missing_or_not_executable_hooks_are_refused_before_running(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not on PATH"):
        run_hook(["no-such-hook-anywhere"], _env(tmp_path), tmp_path, tmp_path, 5)
    with pytest.raises(InvalidInput, match="was not found at"):
        run_hook(["./train.sh"], _env(tmp_path), tmp_path, tmp_path, 5)
    (tmp_path / "train.sh").write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(InvalidInput, match="is not executable"):
        run_hook(["./train.sh"], _env(tmp_path), tmp_path, tmp_path, 5)
    assert not (tmp_path / "hook.log").exists()


def test_a_failing_hook_is_rejected_with_its_last_stderr_line(tmp_path: Path) -> None:
    with pytest.raises(HookFailed, match="exited with 3: labels missing") as caught:
        run_hook(
            ["sh", "-c", "echo working; echo oops >&2; echo labels missing >&2; exit 3"],
            _env(tmp_path),
            tmp_path,
            tmp_path,
            5,
        )
    assert caught.value.hook_exit == 3 and caught.value.exit_code == 8
    assert (tmp_path / "hook.log").read_text() == "working\n"
    with pytest.raises(HookFailed, match="wrote nothing into MODELFLEET_OUTPUT_DIR"):
        run_hook(["true"], _env(tmp_path), tmp_path, tmp_path, 5)


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"ran past 0.5 s \(retrain.timeout_s\) and was killed"):
        run_hook(["sh", "-c", script], _env(tmp_path), tmp_path, tmp_path, timeout_s=0.5)
    assert time.monotonic() - start < 5
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie awaiting its reaper is dead too
        return stat.read().split()[2] != "Z"


def test_an_entry_point_runs_in_this_interpreter() -> None:
    argv = hook_argv(RetrainConfig(entry_point="mypkg.train:main"))
    assert argv[0] == sys.executable and "import_module('mypkg.train').main()" in argv[2]
    assert hook_argv(RetrainConfig(command=["python", "train.py"])) == ["python", "train.py"]
