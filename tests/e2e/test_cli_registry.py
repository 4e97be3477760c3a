"""`modelfleet registry ...` in a subprocess: outputs, JSON, exit codes, audit trail, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.support.logreg_model import make_artifact, run_model, sample_inputs


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cli-artifacts")
    return make_artifact(base / "v1", seed=0), make_artifact(base / "v2", seed=1)


def _run(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    full_env |= {"HOME": str(home), "MODELFLEET_ACTOR": "tester", "COLUMNS": "200"} | (env or {})
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "registry", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_register_promote_rollback_and_audit(tmp_path: Path, artifacts: tuple[Path, Path]) -> None:
    (tmp_path / "train.csv").write_text("x,y\n1,2\n")
    added = _json(
        _run(
            tmp_path,
            "add",
            str(artifacts[0]),
            "--param",
            "C=0.5",
            "--param",
            "solver=lbfgs",
            "--training-data",
            str(tmp_path / "train.csv"),
            "--source-uri",
            "s3://bucket/iris",
            "--json",
        )
    )
    assert added["name"] == "iris" and added["version"] == 1 and added["actor"] == "tester"
    assert added["lineage"]["training_params"] == {"C": 0.5, "solver": "lbfgs"}
    assert len(added["lineage"]["training_data_sha256"]) == 64
    second = _run(tmp_path, "add", str(artifacts[1]), "--parent", "1")
    assert second.returncode == 0 and "registered iris:2" in second.stdout

    duplicate = _run(tmp_path, "add", str(artifacts[0]))
    assert duplicate.returncode == 6 and "iris:1 already holds exactly this artifact" in duplicate.stderr

    assert _run(tmp_path, "promote", "iris:1", "--reason", "first").returncode == 0
    promoted = _json(_run(tmp_path, "promote", "iris:2", "--reason", "better", "--json"))
    assert (promoted["from_version"], promoted["to_version"]) == (1, 2)
    rolled = _run(tmp_path, "rollback", "iris", "--reason", "latency regression")
    assert rolled.returncode == 0 and "iris@production: version 2 → version 1 (rollback)" in rolled.stdout
    assert _run(tmp_path, "rollback", "iris", "--reason", "again").returncode == 6
    assert _run(tmp_path, "promote", "iris:2").returncode == 2  # --reason is required

    models = _json(_run(tmp_path, "list", "--json"))
    assert models == [
        {**models[0], "name": "iris", "latest_version": 2, "version_count": 2, "aliases": {"production": 1}}
    ]
    shown = _json(_run(tmp_path, "show", "iris@production", "--json"))
    assert shown["version"] == 1 and shown["aliases"] == ["production"]
    human = _run(tmp_path, "show", "iris:2")
    assert "iris:2" in human.stdout and "model.onnx" in human.stdout and "parent: 1" in human.stdout
    history = _json(_run(tmp_path, "history", "iris", "--json"))
    assert [(e["action"], e["reason"]) for e in history] == [
        ("promote", "first"),
        ("promote", "better"),
        ("rollback", "latency regression"),
    ]

    audit = [
        json.loads(line)
        for line in (tmp_path / ".modelfleet" / "registry" / "audit.jsonl").read_text().splitlines()
    ]
    # The registry records every write attempt with its outcome, the refused ones too.
    assert [(e["event"], e["outcome"]) for e in audit] == [
        ("registry.add", "ok"),
        ("registry.add", "ok"),
        ("registry.add", "failed: Conflict"),
        ("registry.promote", "ok"),
        ("registry.promote", "ok"),
        ("registry.rollback", "ok"),
        ("registry.rollback", "failed: Conflict"),
    ]
    assert all(e["actor"] == "tester" for e in audit)
    assert (audit[0]["model"], audit[0]["version"]) == ("iris", 1)
    assert (audit[4]["from_version"], audit[4]["to_version"], audit[4]["reason"]) == (1, 2, "better")
    assert "already holds exactly this artifact" in audit[2]["error"]


def test_errors_have_documented_exit_codes(tmp_path: Path, artifacts: tuple[Path, Path]) -> None:
    assert _run(tmp_path, "add", str(artifacts[0])).returncode == 0
    cases = [
        (("show", "nope"), 3, "not in the registry"),
        (("show", "iris:9"), 3, "no version 9"),
        (("show", "bad ref!"), 2, "is not of the form"),
        (("add", str(tmp_path / "nothing")), 3, "manifest.json is missing"),
        (("alias", "iris:1", "9bad"), 2, "not valid"),
        (("import", str(tmp_path / "missing.tar")), 3, "does not exist"),
    ]
    for args, code, message in cases:
        result = _run(tmp_path, *args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_tampering_is_found_by_verify_and_refused_by_checkout(
    tmp_path: Path, artifacts: tuple[Path, Path]
) -> None:
    root = tmp_path / "reg"
    env = {"MODELFLEET_REGISTRY": str(root)}
    added = _json(_run(tmp_path, "add", str(artifacts[0]), "--json", env=env))
    ok = _json(_run(tmp_path, "verify", "--json", env=env))
    assert ok["ok"] and ok["checked_blobs"] == 2
    sha = next(f["sha256"] for f in added["files"] if f["path"] == "model.onnx")
    blob = root / "blobs" / sha[:2] / sha
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[10] ^= 0x40
    blob.write_bytes(bytes(data))

    verify = _run(tmp_path, "verify", env=env)
    assert verify.returncode == 4 and "corrupt: iris:1/model.onnx" in verify.stdout
    checkout = _run(tmp_path, "checkout", "iris:1", "--out", str(tmp_path / "out"), env=env)
    assert checkout.returncode == 4
    assert "iris:1: file model.onnx failed verification" in checkout.stderr
    assert not (tmp_path / "out").exists()


def test_export_delete_import_round_trip_with_signatures_and_encryption(
    tmp_path: Path, artifacts: tuple[Path, Path]
) -> None:
    source = {"MODELFLEET_REGISTRY": str(tmp_path / "source")}
    _run(tmp_path, "add", str(artifacts[0]), env=source)
    _run(tmp_path, "add", str(artifacts[1]), env=source)
    _run(tmp_path, "promote", "iris:2", "--reason", "go", env=source)
    keys = _run(
        tmp_path,
        "gen-signing-key",
        "--private",
        str(tmp_path / "sign.pem"),
        "--public",
        str(tmp_path / "sign.pub"),
    )
    assert keys.returncode == 0
    assert _run(tmp_path, "sign", "iris:2", "--key", str(tmp_path / "sign.pem"), env=source).returncode == 0
    before = {v["version"]: v for v in _json(_run(tmp_path, "list", "iris", "--json", env=source))}
    exported = _json(
        _run(tmp_path, "export", "iris", "--out", str(tmp_path / "iris.tar"), "--json", env=source)
    )
    assert exported["scope"] == "model" and exported["versions"] == ["iris:1", "iris:2"]

    # Restore into an encrypted registry (key from a file, via the environment).
    assert _run(tmp_path, "gen-encryption-key", str(tmp_path / "registry.key")).returncode == 0
    target = {
        "MODELFLEET_REGISTRY": str(tmp_path / "target"),
        "MODELFLEET_REGISTRY_KEY_FILE": str(tmp_path / "registry.key"),
    }
    imported = _json(_run(tmp_path, "import", str(tmp_path / "iris.tar"), "--json", env=target))
    assert imported["versions_added"] == ["iris:1", "iris:2"] and imported["aliases_set"] == [
        "iris@production"
    ]
    after = {v["version"]: v for v in _json(_run(tmp_path, "list", "iris", "--json", env=target))}
    for number, version in before.items():
        assert after[number]["files"] == version["files"]
        assert after[number]["manifest_sha256"] == version["manifest_sha256"]
    trusted = ("--trusted-key", str(tmp_path / "sign.pub"))
    assert _json(_run(tmp_path, "verify", "iris:2", *trusted, "--json", env=target))["ok"]
    everything = _run(tmp_path, "verify", *trusted, env=target)
    assert everything.returncode == 4 and "iris:1: no valid signature by a trusted key" in everything.stdout
    out = tmp_path / "served"
    checkout = _run(tmp_path, "checkout", "iris@production", "--out", str(out), *trusted, env=target)
    assert checkout.returncode == 0, checkout.stderr
    inputs = sample_inputs()
    for want, got in zip(run_model(artifacts[1], inputs), run_model(out, inputs), strict=True):
        np.testing.assert_array_equal(want, got)
    unsigned = _run(tmp_path, "checkout", "iris:1", "--out", str(tmp_path / "v1"), *trusted, env=target)
    assert unsigned.returncode == 4 and "no valid signature" in unsigned.stderr

    no_key = _run(tmp_path, "list", env={"MODELFLEET_REGISTRY": str(tmp_path / "target")})
    assert no_key.returncode == 2 and "is encrypted" in no_key.stderr
    gc = _json(_run(tmp_path, "gc", "--json", env=target))
    assert gc["removed_blobs"] == 0


def test_a_bundle_member_larger_than_its_index_says_is_one_line_exit_4(
    tmp_path: Path, artifacts: tuple[Path, Path]
) -> None:
    import io
    import tarfile

    source = {"MODELFLEET_REGISTRY": str(tmp_path / "source")}
    added = _json(_run(tmp_path, "add", str(artifacts[0]), "--json", env=source))
    assert _run(tmp_path, "export", "--out", str(tmp_path / "good.tar"), env=source).returncode == 0
    model_sha = next(f["sha256"] for f in added["files"] if f["path"] == "model.onnx")
    with tarfile.open(tmp_path / "good.tar") as good, tarfile.open(tmp_path / "big.tar", "w") as big:
        for member in good.getmembers():
            data = good.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == f"blobs/{model_sha}":
                data += b"\0" * (1 << 20)
                member.size = len(data)
            big.addfile(member, io.BytesIO(data))
    target = {"MODELFLEET_REGISTRY": str(tmp_path / "target")}
    result = _run(tmp_path, "import", str(tmp_path / "big.tar"), env=target)
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "its index says" in result.stderr
    assert _json(_run(tmp_path, "verify", "--json", env=target))["checked_versions"] == 0
