"""`registry add` and `registry import` on a full or read-only disk: one line, exit code 5, and the registry
verifies clean afterwards (no half-written blob, no temp file, no index row).

Disk full is simulated two ways: RLIMIT_FSIZE in the CLI's process (writes past it fail with EFBIG; CPython
ignores SIGXFSZ, and the child sets it ignored too), which works anywhere, and a 1 MiB tmpfs (a real ENOSPC)
where this process may mount. Read-only is a read-only bind mount of the registry folder. We run as root,
so file modes do not stop writes; the mount tests skip, saying why, where mounting is not allowed.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.logreg_model import make_artifact

from modelfleet.registry import Registry

PAD_BYTES = 2 << 20
FSIZE_LIMIT_BYTES = 512 << 10


@pytest.fixture(scope="module")
def big_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("storage") / "big", seed=0, pad_bytes=PAD_BYTES)


def _cli(
    home: Path, root: Path, *args: str, fsize_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env |= {"HOME": str(home), "MODELFLEET_ACTOR": "tester", "MODELFLEET_REGISTRY": str(root)}

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        assert fsize_limit is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "registry", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=limit if fsize_limit is not None else None,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _refused(result: subprocess.CompletedProcess[str], cause: str) -> None:
    assert result.returncode == 5, (result.returncode, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cause in result.stderr and "nothing was" in result.stderr, result.stderr


def _verify_clean(home: Path, root: Path, versions: int) -> None:
    result = _cli(home, root, "verify", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] and report["temp_files"] == 0 and report["checked_versions"] == versions, report
    assert not any((root / "tmp").iterdir())


def _bundle(tmp_path: Path, artifact: Path) -> Path:
    source = Registry(tmp_path / "source")
    source.add(artifact, actor="t")
    source.export_bundle(tmp_path / "big.tar")
    return tmp_path / "big.tar"


def test_add_and_import_past_the_file_size_limit(tmp_path: Path, big_artifact: Path) -> None:
    root = tmp_path / "registry"
    Registry(root)  # exists beforehand, as a registry in use would
    _refused(_cli(tmp_path, root, "add", str(big_artifact), fsize_limit=FSIZE_LIMIT_BYTES), "is full")
    _verify_clean(tmp_path, root, versions=0)
    bundle = _bundle(tmp_path, big_artifact)
    _refused(_cli(tmp_path, root, "import", str(bundle), fsize_limit=FSIZE_LIMIT_BYTES), "is full")
    _verify_clean(tmp_path, root, versions=0)
    # With room again both work, and the audit trail holds the refusals with their outcome.
    assert _cli(tmp_path, root, "import", str(bundle)).returncode == 0
    _verify_clean(tmp_path, root, versions=1)
    events = [json.loads(line) for line in (root / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["outcome"]) for e in events] == [
        ("registry.add", "failed: StorageError"),
        ("registry.import", "failed: StorageError"),
        ("registry.import", "ok"),
    ]


@contextlib.contextmanager
def _mounted(*commands: list[str], target: Path) -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    done = 0
    try:
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
            if result.returncode != 0:
                pytest.skip(
                    f"cannot {' '.join(command[:3])} here ({result.stderr.strip()}); needs CAP_SYS_ADMIN"
                )
            done += 1
        yield
    finally:
        if done:
            subprocess.run(["umount", str(target)], capture_output=True, timeout=30, check=False)


def test_add_and_import_on_a_full_file_system(tmp_path: Path, big_artifact: Path) -> None:
    small = tmp_path / "small"
    with _mounted(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], target=small):
        root = small / "registry"
        Registry(root)
        _refused(_cli(tmp_path, root, "add", str(big_artifact)), "is full")
        _verify_clean(tmp_path, root, versions=0)
        _refused(_cli(tmp_path, root, "import", str(_bundle(tmp_path, big_artifact))), "free")
        _verify_clean(tmp_path, root, versions=0)


def test_add_and_import_on_a_read_only_registry(tmp_path: Path, big_artifact: Path) -> None:
    root = tmp_path / "registry"
    Registry(root).add(make_artifact(tmp_path / "small", seed=1), actor="t")
    view = tmp_path / "read-only"
    with _mounted(
        ["mount", "--bind", str(root), str(view)],
        ["mount", "-o", "remount,ro,bind", str(view)],
        target=view,
    ):
        _refused(_cli(tmp_path, view, "add", str(big_artifact)), "is read-only")
        _refused(_cli(tmp_path, view, "import", str(_bundle(tmp_path, big_artifact))), "is read-only")
    _verify_clean(tmp_path, root, versions=1)
