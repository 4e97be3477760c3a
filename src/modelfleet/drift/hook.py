"""Run a retraining hook under its contract: a fixed environment in, a model source out, a time limit.

The hook (a command, or a Python `module:function` run in a child interpreter) gets:

- MODELFLEET_WINDOW_FILE: the captured window, one CapturedItem a JSON line (drift/window_io.py);
- MODELFLEET_LABELS_FILE: one `{"label": ...}` line per window line, or the empty string without labels;
- MODELFLEET_OUTPUT_DIR: an empty folder where it writes the new model source (one file or folder inside
  is the source `modelfleet build` reads; several entries: the folder itself is the source);
- MODELFLEET_MODEL (the fleet model) and MODELFLEET_PARENT_REF (NAME:VERSION it replaces).

It runs in its own process group with the fleet spec's folder as working directory, stdout and stderr to
`hook.log`/`hook.stderr` in the run's folder; past `timeout_s` the whole group is killed. The environment is
this process's, less MODELFLEET_API_KEY (a hook has no business with the fleet's key).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modelfleet.config.retrain import RetrainConfig
from modelfleet.errors import DeadlineExceeded, HookFailed, InvalidInput

STDERR_TAIL_BYTES = 2000


@dataclass(frozen=True)
class HookResult:
    command: list[str]
    exit_code: int
    duration_s: float
    stderr_tail: str
    source: Path  # what `build` reads


def hook_argv(config: RetrainConfig) -> list[str]:
    """The argv a config's hook runs as: its command, or this interpreter calling the entry point."""
    if config.command is not None:
        return list(config.command)
    assert config.entry_point is not None  # RetrainConfig requires one of the two
    module, function = config.entry_point.split(":")
    code = f"import importlib; importlib.import_module({module!r}).{function}()"
    return [sys.executable, "-c", code]


def check_executable(argv: list[str], cwd: Path) -> None:
    """Refuse a hook whose program is missing or not executable, before anything runs."""
    program = argv[0]
    if os.sep in program:
        path = Path(program) if Path(program).is_absolute() else cwd / program
        if not path.is_file():
            raise InvalidInput(f"retraining hook {program!r} was not found at {path} (retrain.command)")
        if not os.access(path, os.X_OK):
            raise InvalidInput(
                f"retraining hook {path} is not executable (chmod +x it, or run it through its interpreter "
                "in retrain.command)"
            )
    elif shutil.which(program) is None:
        raise InvalidInput(f"retraining hook {program!r} is not on PATH (retrain.command)")


def run_hook(
    argv: list[str], env_vars: dict[str, str], cwd: Path, run_dir: Path, timeout_s: float
) -> HookResult:
    """Run the hook to completion; HookFailed on a non-zero exit or no output, DeadlineExceeded past the limit."""
    check_executable(argv, cwd)
    output_dir = Path(env_vars["MODELFLEET_OUTPUT_DIR"])
    env = {key: value for key, value in os.environ.items() if key != "MODELFLEET_API_KEY"} | env_vars
    stderr_path = run_dir / "hook.stderr"
    start = time.monotonic()
    with (run_dir / "hook.log").open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            exit_code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise DeadlineExceeded(
                f"retraining hook ran past {timeout_s:g} s (retrain.timeout_s) and was killed; nothing promoted"
            ) from None
        finally:
            if process.poll() is None:  # interrupted while waiting: the hook must not outlive the run
                os.killpg(process.pid, signal.SIGKILL)
    duration_s = round(time.monotonic() - start, 3)
    tail = _tail(stderr_path)
    if exit_code != 0:
        last = tail.strip().splitlines()[-1] if tail.strip() else "no stderr"
        raise HookFailed(f"retraining hook exited with {exit_code}: {last}", exit_code)
    entries = list(output_dir.iterdir())
    if not entries:
        raise HookFailed("retraining hook exited 0 but wrote nothing into MODELFLEET_OUTPUT_DIR", 0)
    source = entries[0] if len(entries) == 1 else output_dir
    return HookResult(argv, exit_code, duration_s, tail, source)


def _tail(path: Path) -> str:
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - STDERR_TAIL_BYTES))
        return handle.read().decode("utf-8", errors="replace")


def stderr_tail(run_dir: Path) -> str:
    """The last bytes the hook wrote to stderr ('' when it never ran)."""
    path = run_dir / "hook.stderr"
    return _tail(path) if path.is_file() else ""
