"""The chaos benchmark's registry faults: a full disk, a file-size limit and a read-only registry
while `modelfleet registry add` and `registry import` write, then `registry verify`.

* disk full: the registry lives on a 8 MiB tmpfs mounted in a private mount namespace (`unshare -m`),
  so writes fail with ENOSPC exactly as on a full disk; afterwards the tmpfs is grown and verified.
* file-size limit: RLIMIT_FSIZE in the command's process (writes past it fail with EFBIG; Python
  ignores SIGXFSZ, so the process is not killed). Runs without any mount.
* read-only: the registry folder is bind-mounted read-only over itself in a private mount namespace
  (root ignores file modes, so chmod would not stop it); afterwards the mount is removed and verified.

Each registry first holds one small version, so `verify` afterwards checks a registry with content.
`python benchmarks/_chaos_registry.py inside JSON` is the part that runs inside the namespace.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CLI = [sys.executable, "-m", "modelfleet.cli.main"]
_TMPFS_BYTES = 8 << 20
_FSIZE_LIMIT_BYTES = 4 << 20
_COMMAND_TIMEOUT_S = 120.0


def documented_exit_codes(registry_doc: Path) -> dict[int, str]:
    """The exit-code table of docs/registry.md: code → meaning."""
    text = registry_doc.read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[-1].split("\n## ", 1)[0]
    return {int(m[1]): m[2].strip() for m in re.finditer(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$", section, re.M)}


def _cli(args: list[str], preexec: Callable[[], None] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*_CLI, *args], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, preexec_fn=preexec
        )
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = -1, "", f"timed out after {exc.timeout:g} s"
    lines = [line for line in stderr.splitlines() if line.strip()]
    return {
        "command": "modelfleet " + " ".join(a if len(a) < 80 else a[:77] + "..." for a in args),
        "exit_code": code,
        "stderr_lines": lines[:8],
        "stderr_line_count": len(lines),
        "traceback": "Traceback" in stderr,
        "stdout": stdout[-2000:],
        "seconds": round(time.monotonic() - started, 2),
    }


def _verify(root: Path) -> dict[str, Any]:
    result = _cli(["registry", "verify", "--root", str(root), "--json"])
    try:
        report = json.loads(result["stdout"])
    except ValueError:
        report = {}
    listing = _cli(["registry", "list", "--root", str(root), "--json"])
    return {
        "exit_code": result["exit_code"],
        "ok": bool(report.get("ok")),
        "checked_versions": report.get("checked_versions"),
        "temp_files": report.get("temp_files"),
        "orphan_blobs": report.get("orphan_blobs"),
        "problems": (report.get("problems") or []) + (report.get("index_problems") or []),
        "stderr": result["stderr_lines"],
        "list": listing["stdout"][-1000:],
    }


def _fault_command(kind: str, root: Path, artifact: Path, bundle: Path) -> list[str]:
    if kind == "add":
        return ["registry", "add", str(artifact), "--root", str(root)]
    return ["registry", "import", str(bundle), "--root", str(root)]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def inside(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in a private mount namespace: mount, seed, fault, lift, verify."""
    root, small = Path(job["root"]), Path(job["small"])
    artifact, bundle = Path(job["artifact"]), Path(job["bundle"])
    root.mkdir(parents=True, exist_ok=True)
    if job["fault"] == "disk full":
        _run(["mount", "-t", "tmpfs", "-o", f"size={_TMPFS_BYTES}", "tmpfs", str(root)])
    seed = _cli(["registry", "add", str(small), "--root", str(root)])
    if job["fault"] == "read-only":
        _run(["mount", "--bind", str(root), str(root)])
        _run(["mount", "-o", "remount,bind,ro", str(root)])
    result = _cli(_fault_command(job["command"], root, artifact, bundle))
    if job["fault"] == "disk full":
        _run(["mount", "-o", "remount,size=1g", str(root)])
    else:
        _run(["umount", str(root)])
    return {"seed_exit_code": seed["exit_code"], "result": result, "verify": _verify(root)}


def run_cases(
    work: Path, small: Path, artifact: Path, quick: bool, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Every fault × command; returns the cases and whether mounts were possible here."""
    bundle_registry = work / "bundle-registry"
    bundle = work / "bundle.tar"
    if not bundle.exists():
        made = _cli(["registry", "add", str(artifact), "--root", str(bundle_registry)])
        exported = _cli(["registry", "export", "--out", str(bundle), "--root", str(bundle_registry)])
        if exported["exit_code"] != 0:
            raise RuntimeError(f"cannot make the bundle: {made['stderr_lines']} {exported['stderr_lines']}")
    can_mount = shutil.which("unshare") is not None and (
        subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    )
    cases = []
    for fault in ("disk full", "file-size limit", "read-only"):
        for command in ("add", "import"):
            root = work / f"registry-{fault.replace(' ', '-')}-{command}"
            shutil.rmtree(root, ignore_errors=True)
            progress(f"registry: {fault} during `registry {command}`")
            case: dict[str, Any] = {"fault": fault, "command": f"registry {command}"}
            if fault == "file-size limit":
                seed = _cli(["registry", "add", str(small), "--root", str(root)])

                def limit() -> None:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (_FSIZE_LIMIT_BYTES, _FSIZE_LIMIT_BYTES))

                case["result"] = _cli(_fault_command(command, root, artifact, bundle), preexec=limit)
                case["seed_exit_code"] = seed["exit_code"]
                case["verify"] = _verify(root)
            elif not can_mount:
                case["not_run"] = "mounts are not permitted here (unshare -m failed)"
            else:
                job = {"fault": fault, "command": command, "root": str(root), "small": str(small),
                       "artifact": str(artifact), "bundle": str(bundle)}  # fmt: skip
                done = subprocess.run(
                    ["unshare", "-m", "--propagation", "private", sys.executable, __file__, "inside", json.dumps(job)],
                    capture_output=True, text=True, timeout=4 * _COMMAND_TIMEOUT_S, env=os.environ.copy(),
                )  # fmt: skip
                if done.returncode != 0:
                    case["not_run"] = f"namespace driver failed: {done.stderr.strip()[-300:]}"
                else:
                    case.update(json.loads(done.stdout))
            cases.append(case)
    return {
        "can_mount": can_mount,
        "cases": cases,
        "tmpfs_bytes": _TMPFS_BYTES,
        "fsize_limit_bytes": _FSIZE_LIMIT_BYTES,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "inside":
        print(json.dumps(inside(json.loads(sys.argv[2]))))
    else:
        sys.exit(__doc__)
