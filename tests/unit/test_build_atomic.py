"""The output folder appears whole or not at all, and is only replaced when asked."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from modelfleet.build.atomic import staged_output
from modelfleet.errors import Conflict, InvalidInput


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_success_renames_the_staging_folder_into_place(tmp_path: Path) -> None:
    output = tmp_path / "artifact"
    with staged_output(output, force=False) as stage:
        assert stage.parent == tmp_path
        assert stage.name.startswith("artifact.tmp-")
        assert not output.exists()  # nothing visible at the destination while writing
        (stage / "model.onnx").write_bytes(b"graph")
        (stage / "sub").mkdir()
        (stage / "sub" / "f.txt").write_text("x")
    assert _siblings(tmp_path) == ["artifact"]
    assert (output / "model.onnx").read_bytes() == b"graph"
    assert (output / "sub" / "f.txt").read_text() == "x"
    assert stat.S_IMODE(output.stat().st_mode) == 0o755


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    output = tmp_path / "a" / "b" / "artifact"
    with staged_output(output, force=False) as stage:
        (stage / "f").write_text("x")
    assert (output / "f").is_file()


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_any_failure_removes_the_staging_folder(tmp_path: Path, error: BaseException) -> None:
    output = tmp_path / "artifact"
    with pytest.raises(type(error)), staged_output(output, force=False) as stage:
        (stage / "model.onnx").write_bytes(b"half")
        raise error
    assert _siblings(tmp_path) == []


def test_existing_output_is_refused_without_force_and_left_untouched(tmp_path: Path) -> None:
    output = tmp_path / "artifact"
    output.mkdir()
    (output / "keep").write_text("old")
    with pytest.raises(Conflict, match="--force"), staged_output(output, force=False):
        pytest.fail("must not start writing")
    assert (output / "keep").read_text() == "old"
    assert _siblings(tmp_path) == ["artifact"]


def test_force_replaces_the_whole_folder(tmp_path: Path) -> None:
    output = tmp_path / "artifact"
    output.mkdir()
    (output / "stale").write_text("old")
    with staged_output(output, force=True) as stage:
        (stage / "fresh").write_text("new")
    assert _siblings(output) == ["fresh"]
    assert _siblings(tmp_path) == ["artifact"]  # no .old-* or .tmp-* left behind


def test_a_failed_forced_build_keeps_the_old_folder(tmp_path: Path) -> None:
    output = tmp_path / "artifact"
    output.mkdir()
    (output / "keep").write_text("old")
    with pytest.raises(RuntimeError), staged_output(output, force=True):
        raise RuntimeError("verification failed")
    assert (output / "keep").read_text() == "old"
    assert _siblings(tmp_path) == ["artifact"]


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "artifact"
    output.write_text("not a folder")
    with pytest.raises(InvalidInput, match="not a folder"), staged_output(output, force=True):
        pytest.fail("must not start writing")
