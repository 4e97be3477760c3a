"""Crafted bundles: member sizes are checked against the index before and while they are copied."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from tests.support.logreg_model import make_artifact

from modelfleet.errors import IntegrityError, StorageError
from modelfleet.registry import Registry

INDEX = "modelfleet-bundle.json"


def _good_bundle(tmp_path: Path) -> tuple[Path, dict[str, object], str]:
    source = Registry(tmp_path / "source")
    version = source.add(make_artifact(tmp_path / "artifact"), actor="a")
    source.export_bundle(tmp_path / "good.tar")
    with tarfile.open(tmp_path / "good.tar") as tar:
        index = json.loads(tar.extractfile(INDEX).read())  # type: ignore[union-attr]
    return tmp_path / "good.tar", index, version.file_hashes()["model.onnx"]


def _write(path: Path, index: dict[str, object], members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in [(INDEX, json.dumps(index).encode()), *members]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _members(bundle: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(bundle) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != INDEX]  # type: ignore[union-attr]


def _untouched(registry: Registry) -> None:
    assert registry.list_models() == []
    assert not any((registry.root / "blobs").rglob("*")), "no blob may be written"
    assert not any((registry.root / "tmp").iterdir()), "no temp file may be left"
    assert registry.verify().ok


def test_a_member_larger_than_its_index_entry_is_refused_before_a_byte_is_stored(tmp_path: Path) -> None:
    good, index, model_sha = _good_bundle(tmp_path)
    members = [(n, d + b"\0" * (4 << 20) if n == f"blobs/{model_sha}" else d) for n, d in _members(good)]
    members.sort(key=lambda m: m[0] != f"blobs/{model_sha}")  # the oversized one first
    target = Registry(tmp_path / "target")
    with pytest.raises(IntegrityError, match=r"holds [\d,]+ bytes, its index says [\d,]+"):
        target.import_bundle(_write(tmp_path / "big.tar", index, members))
    _untouched(target)


def test_a_member_the_index_does_not_name_or_a_repeated_one_is_refused(tmp_path: Path) -> None:
    good, index, model_sha = _good_bundle(tmp_path)
    members = _members(good)
    target = Registry(tmp_path / "target")
    stranger = [(f"blobs/{'0' * 64}", b"x" * 1024), *members]
    with pytest.raises(IntegrityError, match="is not named by the bundle's index"):
        target.import_bundle(_write(tmp_path / "stranger.tar", index, stranger))
    twice = [m for m in members if m[0] == f"blobs/{model_sha}"] * 2
    with pytest.raises(IntegrityError, match="appears twice"):
        target.import_bundle(_write(tmp_path / "twice.tar", index, twice))
    assert target.list_models() == []


def test_an_index_claiming_more_bytes_than_the_disk_has_is_refused_at_once(tmp_path: Path) -> None:
    _, index, _ = _good_bundle(tmp_path)
    versions = index["versions"]
    assert isinstance(versions, list)
    for entry in versions[0]["files"]:
        entry["size_bytes"] = 1 << 50  # a petabyte per file
    target = Registry(tmp_path / "target")
    with pytest.raises(StorageError, match=r"too little free space \(its blobs need [\d,]+ bytes") as raised:
        target.import_bundle(_write(tmp_path / "petabyte.tar", index, []))
    assert raised.value.exit_code == 5
    _untouched(target)
