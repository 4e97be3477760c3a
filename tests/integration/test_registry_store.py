"""The registry end to end in process: real sklearn→ONNX artifacts, real SQLite, real blob files."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from tests.support.logreg_model import make_artifact, run_model, sample_inputs

from modelfleet.errors import Conflict, IntegrityError, InvalidInput, NotFound
from modelfleet.manifest import sha256_file
from modelfleet.registry import Registry, generate_signing_key, load_private_key, load_public_key


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("artifacts")
    return (
        make_artifact(base / "v1", seed=0),
        make_artifact(base / "v2", seed=1),
        make_artifact(base / "v3", seed=2),
    )


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def _blob_path(registry: Registry, sha256: str) -> Path:
    return registry.root / "blobs" / sha256[:2] / sha256


def _tamper(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_add_numbers_versions_and_records_lineage(
    registry: Registry, artifacts: tuple[Path, Path, Path]
) -> None:
    first = registry.add(
        artifacts[0],
        actor="ana",
        source_uri="git+https://example.com/models@abc",
        training_data_sha256="d" * 64,
        training_params={"C": 1.0, "max_iter": 200},
    )
    second = registry.add(artifacts[1], actor="ben", parent_version=1)
    assert (first.ref, second.ref) == ("iris:1", "iris:2")
    assert {f.path for f in first.files} == {"model.onnx", "manifest.json"}
    assert first.file_hashes()["model.onnx"] == sha256_file(artifacts[0] / "model.onnx")
    assert first.manifest_sha256 == sha256_file(artifacts[0] / "manifest.json")
    lineage = first.lineage
    assert lineage.source.kind == "sklearn" and lineage.source_uri == "git+https://example.com/models@abc"
    assert lineage.training_data_sha256 == "d" * 64 and lineage.training_params == {"C": 1.0, "max_iter": 200}
    assert lineage.verification[0]["metric"] == "label_agreement"
    assert lineage.build_options["task"] == "classification"
    assert "python" in lineage.registry_libraries and lineage.build_libraries["skl2onnx"] == "test"
    assert second.lineage.parent_version == 1 and second.actor == "ben"
    assert registry.get("iris").version == 2
    assert registry.get("iris:1") == first
    assert [m.name for m in registry.list_models()] == ["iris"]
    assert [v.version for v in registry.list_versions("iris")] == [1, 2]


def test_same_bytes_are_stored_once_and_duplicates_refused(
    registry: Registry, artifacts: tuple[Path, Path, Path]
) -> None:
    registry.add(artifacts[0], actor="a")
    with pytest.raises(Conflict, match="iris:1 already holds exactly this artifact"):
        registry.add(artifacts[0], actor="a")
    other = registry.add(artifacts[0], actor="a", name="iris-copy")
    assert other.ref == "iris-copy:1"
    blobs = [p for p in (registry.root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 2  # model.onnx and manifest.json, shared by both models


def test_versions_are_immutable_even_through_sql(
    registry: Registry, artifacts: tuple[Path, Path, Path]
) -> None:
    registry.add(artifacts[0], actor="a")
    conn = sqlite3.connect(registry.root / "index.sqlite")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            conn.execute("UPDATE files SET sha256 = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            conn.execute("DELETE FROM versions")
    finally:
        conn.close()


def test_bad_references_and_missing_things(
    registry: Registry, artifacts: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    registry.add(artifacts[0], actor="a")
    with pytest.raises(NotFound, match="no version 7"):
        registry.get("iris:7")
    with pytest.raises(NotFound, match="no alias 'production'"):
        registry.get("iris@production")
    with pytest.raises(NotFound, match="not in the registry"):
        registry.get("nope")
    with pytest.raises(InvalidInput):
        registry.get("bad ref!")
    with pytest.raises(NotFound, match="parent version"):
        registry.add(artifacts[1], actor="a", parent_version=9)
    with pytest.raises(NotFound, match=r"manifest\.json is missing"):
        registry.add(tmp_path, actor="a")


def test_an_artifact_whose_file_changed_after_build_is_refused(
    registry: Registry, artifacts: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifacts[0], broken)
    _tamper(broken / "model.onnx")
    with pytest.raises(IntegrityError, match=r"file model\.onnx does not match its manifest"):
        registry.add(broken, actor="a")
    assert registry.list_models() == []


def test_promote_and_rollback_keep_history_and_previous_versions(
    registry: Registry, artifacts: tuple[Path, Path, Path]
) -> None:
    for artifact in artifacts:
        registry.add(artifact, actor="a")
    registry.alias("iris:3", "staging", actor="a", reason="candidate")
    registry.promote("iris:1", actor="a", reason="first release")
    registry.promote("iris:2", actor="a", reason="better recall")
    event = registry.promote("iris@staging", actor="b", reason="canary passed")
    assert (event.from_version, event.to_version, event.action) == (2, 3, "promote")
    assert registry.get("iris@production").version == 3
    assert registry.rollback("iris", actor="c", reason="p99 regression").to_version == 2
    assert registry.rollback("iris", actor="c", reason="still bad").to_version == 1
    with pytest.raises(Conflict, match="no earlier version"):
        registry.rollback("iris", actor="c", reason="again")
    with pytest.raises(Conflict, match="already points at version 1"):
        registry.promote("iris:1", actor="a", reason="again")
    with pytest.raises(InvalidInput, match="say why"):
        registry.promote("iris:2", actor="a", reason=" ")
    history = registry.history("iris", "production")
    assert [(e.action, e.from_version, e.to_version, e.reason) for e in history] == [
        ("promote", None, 1, "first release"),
        ("promote", 1, 2, "better recall"),
        ("promote", 2, 3, "canary passed"),
        ("rollback", 3, 2, "p99 regression"),
        ("rollback", 2, 1, "still bad"),
    ]
    assert [v.version for v in registry.list_versions("iris")] == [1, 2, 3]  # nothing is ever dropped
    assert registry.get("iris:1").aliases == ["production"]


def test_materialize_verifies_and_reuses_a_checkout(
    registry: Registry, artifacts: tuple[Path, Path, Path]
) -> None:
    registry.add(artifacts[0], actor="a")
    registry.promote("iris:1", actor="a", reason="go")
    folder = registry.materialize("iris@production")
    assert folder == registry.root / "checkouts" / "iris" / "1"
    assert sha256_file(folder / "model.onnx") == sha256_file(artifacts[0] / "model.onnx")
    inputs = sample_inputs()
    np.testing.assert_array_equal(run_model(folder, inputs)[1], run_model(artifacts[0], inputs)[1])
    assert registry.materialize("iris:1") == folder  # cached and re-verified
    # A damaged cache is rebuilt from the (verified) blobs rather than served.
    _tamper(folder / "model.onnx")
    assert registry.materialize("iris:1") == folder
    assert sha256_file(folder / "model.onnx") == sha256_file(artifacts[0] / "model.onnx")


def test_a_tampered_blob_refuses_to_load_naming_the_file(
    registry: Registry, artifacts: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    version = registry.add(artifacts[0], actor="a")
    _tamper(_blob_path(registry, version.file_hashes()["model.onnx"]))
    with pytest.raises(IntegrityError, match=r"iris:1: file model\.onnx failed verification"):
        registry.materialize("iris:1")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        registry.materialize("iris:1", tmp_path / "out")
    assert not (registry.root / "checkouts" / "iris" / "1").exists()
    assert not (tmp_path / "out").exists()
    report = registry.verify()
    assert not report.ok
    assert [(p.problem, p.used_by) for p in report.problems] == [("corrupt", ["iris:1/model.onnx"])]


def test_explicit_destination_that_differs_is_not_overwritten(
    registry: Registry, artifacts: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    registry.add(artifacts[0], actor="a")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(IntegrityError, match="is not a checkout of iris:1"):
        registry.materialize("iris:1", dest)
    assert (dest / "notes.txt").read_text() == "keep me"


def test_signatures_are_required_when_trusted_keys_are_given(
    registry: Registry, artifacts: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    registry.add(artifacts[0], actor="a")
    generate_signing_key(tmp_path / "release.pem", tmp_path / "release.pub")
    generate_signing_key(tmp_path / "other.pem", tmp_path / "other.pub")
    trusted = [load_public_key(tmp_path / "release.pub")]
    with pytest.raises(IntegrityError, match="no valid signature by a trusted key"):
        registry.materialize("iris:1", trusted_keys=trusted)
    registry.sign("iris:1", load_private_key(tmp_path / "other.pem"), actor="mallory")
    with pytest.raises(IntegrityError, match="no valid signature by a trusted key"):
        registry.materialize("iris:1", trusted_keys=trusted)
    record = registry.sign("iris:1", load_private_key(tmp_path / "release.pem"), actor="release-bot")
    assert registry.verify_signature("iris:1", trusted).key_id == record.key_id
    assert registry.materialize("iris:1", trusted_keys=trusted).is_dir()
    assert registry.verify(trusted_keys=trusted).ok
    with pytest.raises(IntegrityError, match="no trusted public key"):
        registry.materialize("iris:1", trusted_keys=[])


def test_a_forged_signature_row_is_reported_by_verify(
    registry: Registry, artifacts: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    registry.add(artifacts[0], actor="a")
    registry.add(artifacts[1], actor="a")
    generate_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
    record = registry.sign("iris:2", load_private_key(tmp_path / "k.pem"), actor="a")
    conn = sqlite3.connect(registry.root / "index.sqlite")
    with conn:  # copy version 2's signature onto version 1
        conn.execute(
            "INSERT INTO signatures VALUES ('iris', 1, ?, ?, ?, 'now', 'forger')",
            (record.key_id, record.public_key_b64, record.signature_b64),
        )
    conn.close()
    report = registry.verify()
    assert report.signature_problems == [
        f"iris:1: signature by key {record.key_id} does not match the version's files"
    ]
    with pytest.raises(IntegrityError):
        registry.materialize("iris:1", trusted_keys=[load_public_key(tmp_path / "k.pub")])


def test_verify_and_gc_distinguish_missing_orphan_and_referenced_blobs(
    registry: Registry, artifacts: tuple[Path, Path, Path]
) -> None:
    version = registry.add(artifacts[0], actor="a")
    orphan = registry.root / "blobs" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left over")
    (registry.root / "tmp" / "0123.part").write_bytes(b"half a blob")
    report = registry.verify()
    assert report.ok and report.orphan_blobs == 1 and report.temp_files == 1
    assert report.checked_blobs == 2 and report.checked_bytes == version.size_bytes
    dry = registry.gc(dry_run=True)
    assert (dry.removed_blobs, dry.removed_temp_files) == (1, 1) and orphan.exists()
    done = registry.gc()
    assert (done.removed_blobs, done.removed_temp_files) == (1, 1) and done.freed_bytes > 0
    assert not orphan.exists()
    assert registry.verify().ok and registry.materialize("iris:1").is_dir()  # referenced blobs untouched
    _blob_path(registry, version.file_hashes()["model.onnx"]).unlink()
    report = registry.verify("iris")
    assert [(p.problem, p.used_by) for p in report.problems] == [("missing", ["iris:1/model.onnx"])]


def test_export_delete_import_reproduces_hashes_and_outputs(
    tmp_path: Path, artifacts: tuple[Path, Path, Path]
) -> None:
    source = Registry(tmp_path / "source")
    source.add(artifacts[0], actor="a", training_params={"C": 1.0})
    source.add(artifacts[1], actor="a", parent_version=1)
    source.promote("iris:1", actor="a", reason="first")
    source.promote("iris:2", actor="a", reason="second")
    generate_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
    source.sign("iris:2", load_private_key(tmp_path / "k.pem"), actor="a")
    before = {v.ref: v for v in source.list_versions("iris")}
    inputs = sample_inputs(32)
    expected = run_model(source.materialize("iris@production", tmp_path / "before"), inputs)
    report = source.export_bundle(tmp_path / "backup.tar.gz")
    assert report.scope == "all" and report.versions == ["iris:1", "iris:2"] and report.blobs == 4
    shutil.rmtree(tmp_path / "source")

    restored = Registry(tmp_path / "source")
    result = restored.import_bundle(tmp_path / "backup.tar.gz")
    assert result.versions_added == ["iris:1", "iris:2"] and result.aliases_set == ["iris@production"]
    assert result.events_added == 2 and result.blobs_written == 4
    after = {v.ref: v for v in restored.list_versions("iris")}
    for ref, version in before.items():
        assert after[ref].file_hashes() == version.file_hashes()
        assert after[ref].manifest_sha256 == version.manifest_sha256
        assert after[ref].lineage == version.lineage
        assert after[ref].signatures == version.signatures
    assert [e.reason for e in restored.history("iris")] == ["first", "second"]
    assert restored.verify(trusted_keys=None).ok
    assert restored.verify_signature("iris:2", [load_public_key(tmp_path / "k.pub")])
    folder = restored.materialize("iris@production", tmp_path / "after")
    for want, got in zip(expected, run_model(folder, inputs), strict=True):
        np.testing.assert_array_equal(want, got)
    again = restored.import_bundle(tmp_path / "backup.tar.gz")
    assert (
        again.versions_present == ["iris:1", "iris:2"]
        and again.versions_added == []
        and again.blobs_written == 0
    )


def test_single_version_bundle_and_conflicting_import(
    tmp_path: Path, artifacts: tuple[Path, Path, Path]
) -> None:
    one = Registry(tmp_path / "one")
    one.add(artifacts[0], actor="a")
    one.add(artifacts[1], actor="a")
    one.promote("iris:2", actor="a", reason="r")
    report = one.export_bundle(tmp_path / "v2.tar", "iris@production")
    assert report.scope == "version" and report.versions == ["iris:2"]
    with pytest.raises(Conflict, match="already exists"):
        one.export_bundle(tmp_path / "v2.tar", "iris:2")

    other = Registry(tmp_path / "other")
    other.import_bundle(tmp_path / "v2.tar")
    assert [v.version for v in other.list_versions("iris")] == [2]
    assert other.add(artifacts[2], actor="a").version == 3  # numbering continues after imported versions

    clash = Registry(tmp_path / "clash")
    clash.add(artifacts[2], actor="a")
    clash.add(artifacts[0], actor="a")  # iris:2 here holds different bytes
    with pytest.raises(Conflict, match="iris:2 already exists here with different files"):
        clash.import_bundle(tmp_path / "v2.tar")
    assert [v.manifest_sha256 for v in clash.list_versions("iris")][1] == sha256_file(
        artifacts[0] / "manifest.json"
    )


def test_a_corrupt_or_hostile_bundle_is_refused(tmp_path: Path, artifacts: tuple[Path, Path, Path]) -> None:
    import io
    import tarfile

    source = Registry(tmp_path / "source")
    version = source.add(artifacts[0], actor="a")
    source.export_bundle(tmp_path / "good.tar")
    model_sha = version.file_hashes()["model.onnx"]

    # Same members, but one blob's bytes changed in transit.
    with tarfile.open(tmp_path / "good.tar") as good, tarfile.open(tmp_path / "bad.tar", "w") as bad:
        for member in good.getmembers():
            data = good.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == f"blobs/{model_sha}":
                data = bytes([data[0] ^ 1]) + data[1:]
            bad.addfile(member, io.BytesIO(data))
    target = Registry(tmp_path / "target")
    with pytest.raises(IntegrityError, match=r"iris:1/model\.onnx is corrupt"):
        target.import_bundle(tmp_path / "bad.tar")
    assert target.list_models() == []

    # An index that names a path outside the checkout folder.
    with tarfile.open(tmp_path / "good.tar") as good:
        index = good.extractfile("modelfleet-bundle.json").read()  # type: ignore[union-attr]
    evil = index.replace(b'"path": "model.onnx"', b'"path": "../../escape.onnx"')
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("modelfleet-bundle.json")
        info.size = len(evil)
        tar.addfile(info, io.BytesIO(evil))
    with pytest.raises(InvalidInput, match="not a plain relative path"):
        target.import_bundle(tmp_path / "evil.tar")

    (tmp_path / "junk.tar").write_bytes(b"not a tar file at all")
    with pytest.raises(InvalidInput):
        target.import_bundle(tmp_path / "junk.tar")


def test_encrypted_registry_is_useless_without_its_key(
    tmp_path: Path, artifacts: tuple[Path, Path, Path]
) -> None:
    key = os.urandom(32)
    registry = Registry(tmp_path / "enc", key, cache_dir=tmp_path / "cache")
    version = registry.add(artifacts[0], actor="a")
    model_bytes = (artifacts[0] / "model.onnx").read_bytes()
    stored = _blob_path(registry, version.file_hashes()["model.onnx"]).read_bytes()
    assert model_bytes[:64] not in stored and len(stored) > len(model_bytes)
    folder = registry.materialize("iris:1")
    assert folder.is_relative_to(tmp_path / "cache")
    assert (folder / "model.onnx").read_bytes() == model_bytes

    copy = tmp_path / "stolen"
    shutil.copytree(tmp_path / "enc", copy)
    with pytest.raises(InvalidInput, match="is encrypted; give its key"):
        Registry(copy)
    with pytest.raises(InvalidInput, match="not the key of registry"):
        Registry(copy, os.urandom(32))
    Registry(tmp_path / "plain-then-key")  # creates a plain one
    with pytest.raises(InvalidInput, match="is not encrypted"):
        Registry(tmp_path / "plain-then-key", key)
    assert Registry(copy, key).verify().ok


def test_default_checkouts_of_an_encrypted_registry_stay_out_of_the_store(
    tmp_path: Path, artifacts: tuple[Path, Path, Path]
) -> None:
    registry = Registry(tmp_path / "enc", os.urandom(32))
    registry.add(artifacts[0], actor="a")
    folder = registry.materialize("iris:1")
    try:
        assert not folder.is_relative_to(tmp_path / "enc")
        assert (folder.parent.parent.parent.stat().st_mode & 0o777) == 0o700
    finally:
        shutil.rmtree(folder.parent.parent, ignore_errors=True)


def test_a_folder_that_is_not_a_registry_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file.txt").write_text("x")
    with pytest.raises(InvalidInput, match="not a modelfleet registry"):
        Registry(tmp_path / "stuff")


def test_the_library_records_every_write_with_actor_and_outcome(
    tmp_path: Path, artifacts: tuple[Path, Path, Path]
) -> None:
    import json

    from modelfleet.security.audit import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    registry = Registry(tmp_path / "registry", audit=log)
    registry.add(artifacts[0], actor="ci")
    registry.add(artifacts[1], actor="ci")
    registry.promote("iris:1", actor="ana", reason="first")
    with pytest.raises(Conflict):
        registry.promote("iris:1", actor="ana", reason="again")
    with pytest.raises(InvalidInput):
        registry.promote("iris:2", actor="ana", reason=" ")
    registry.alias("iris:2", "staging", actor="ben")
    registry.rollback("iris", alias="staging", to_version=1, actor="ben", reason="flaky")
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    generate_signing_key(private, public)
    registry.sign("iris:1", load_private_key(private), actor="ana")
    registry.export_bundle(tmp_path / "all.tar", actor="ops")
    registry.gc(actor="ops")
    registry.gc(dry_run=True)  # counts only: not a write
    Registry(tmp_path / "other", audit=log).import_bundle(tmp_path / "all.tar", actor="ops")

    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [(r["event"], r["actor"], r["outcome"]) for r in records] == [
        ("registry.add", "ci", "ok"),
        ("registry.add", "ci", "ok"),
        ("registry.promote", "ana", "ok"),
        ("registry.promote", "ana", "failed: Conflict"),
        ("registry.promote", "ana", "failed: InvalidInput"),
        ("registry.alias", "ben", "ok"),
        ("registry.rollback", "ben", "ok"),
        ("registry.sign", "ana", "ok"),
        ("registry.export", "ops", "ok"),
        ("registry.gc", "ops", "ok"),
        ("registry.import", "ops", "ok"),
    ]
    assert (records[1]["model"], records[1]["version"]) == ("iris", 2)
    assert (records[2]["from_version"], records[2]["to_version"], records[2]["reason"]) == (None, 1, "first")
    assert "already points at version 1" in records[3]["error"]
    assert records[7]["key_id"] and records[10]["versions_added"] == ["iris:1", "iris:2"]
    assert not (tmp_path / "registry" / "audit.jsonl").exists()  # the log given replaced the default


def test_by_default_the_trail_is_kept_in_the_registry_folder(
    tmp_path: Path, artifacts: tuple[Path, Path, Path]
) -> None:
    import json

    registry = Registry(tmp_path / "registry")
    registry.add(artifacts[0], actor="script")
    registry.promote("iris:1", actor="script", reason="go")
    lines = (tmp_path / "registry" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["registry.add", "registry.promote"]
