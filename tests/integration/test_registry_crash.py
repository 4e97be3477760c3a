"""kill -9 during `modelfleet registry add` leaves the registry consistent, `verify` clean, nothing half-registered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.support.logreg_model import make_artifact, run_model, sample_inputs

from modelfleet.registry import Registry

PAD_BYTES = 32 * 1024 * 1024  # big enough that copying it takes a while to interrupt


@pytest.fixture(scope="module")
def big_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("big") / "artifact", pad_bytes=PAD_BYTES)


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"MODELFLEET_REGISTRY": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "registry", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _kill_add_when(root: Path, artifact: Path, condition: Callable[[], bool]) -> bool:
    """Start `registry add`, SIGKILL it as soon as ``condition`` holds; True if it was killed mid-way."""
    env = os.environ | {"MODELFLEET_REGISTRY": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "modelfleet.cli.main", "registry", "add", str(artifact)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if condition():
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        returncode = process.wait(timeout=30)
    return returncode == -signal.SIGKILL


def _part_written_temp_file(temp_dir: Path) -> bool:
    for path in temp_dir.iterdir():
        try:
            if 1024 * 1024 <= path.stat().st_size <= PAD_BYTES // 2:
                return True
        except FileNotFoundError:  # renamed into place between the listing and the stat
            continue
    return False


def _assert_consistent(root: Path) -> list[dict[str, object]]:
    verify = _cli(root, "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] and report["problems"] == [] and report["temp_files"] == 0  # opening cleaned them
    listing = _cli(root, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    models: list[dict[str, object]] = json.loads(listing.stdout)
    return models


def test_kill_during_blob_write_leaves_no_version_and_a_clean_verify(
    tmp_path: Path, big_artifact: Path
) -> None:
    root = tmp_path / "registry"
    Registry(root)
    temp_dir = root / "tmp"
    # Killed while the big blob is part-written: a temp file that has grown past 1 MiB but is far from done. A bare
    # "any temp file" fires on the small files too, whose temp copy can be renamed away before the kill lands.
    killed = _kill_add_when(root, big_artifact, lambda: _part_written_temp_file(temp_dir))
    assert killed, "the add finished before it could be interrupted; raise PAD_BYTES"
    assert any(temp_dir.iterdir())  # the interrupted write left its temp file behind ...
    assert _assert_consistent(root) == []  # ... no version exists, verify is clean, the temp file is gone
    assert not any(temp_dir.iterdir())

    # The same add, run to completion, registers a complete, loadable version.
    done = _cli(root, "add", str(big_artifact))
    assert done.returncode == 0, done.stderr
    models = _assert_consistent(root)
    assert [(m["name"], m["latest_version"]) for m in models] == [("iris", 1)]
    folder = Registry(root).materialize("iris:1")
    inputs = sample_inputs()
    np.testing.assert_array_equal(run_model(folder, inputs)[1], run_model(big_artifact, inputs)[1])


def test_kill_after_the_big_blob_landed_leaves_none_or_a_complete_version(
    tmp_path: Path, big_artifact: Path
) -> None:
    root = tmp_path / "registry"
    Registry(root)
    from modelfleet.manifest import read_manifest

    weights_sha = read_manifest(big_artifact).files["weights.bin"]
    weights_blob = root / "blobs" / weights_sha[:2] / weights_sha
    killed = _kill_add_when(root, big_artifact, weights_blob.exists)
    models = _assert_consistent(root)
    assert killed or len(models) == 1
    assert [m["latest_version"] for m in models] in ([], [1])
    registry = Registry(root)
    if registry.list_models():
        version = registry.get("iris:1")  # if it exists, it is complete
        assert {f.path for f in version.files} == {"manifest.json", "model.onnx", "weights.bin"}
    else:
        # Blobs landed but the version was never registered: they are unreferenced, and gc removes only them.
        assert registry.verify().orphan_blobs >= 1
        assert registry.gc().removed_blobs >= 1
        assert registry.verify().orphan_blobs == 0
        assert _cli(root, "add", str(big_artifact)).returncode == 0
    final = Registry(root)
    assert final.verify().ok
    assert final.get("iris:1").size_bytes > PAD_BYTES
