"""Serving from the registry: `name@alias`, integrity and signatures, and a hot switch with zero failed requests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tests.support.logreg_model import make_artifact
from tests.support.servers import serve

from modelfleet.registry import Registry
from modelfleet.registry.signing import generate_signing_key, load_private_key

BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.3, -1.2, 1.5, 0.1]}]}


def _spec(tmp_path: Path, registry_root: Path, ref: str, **registry: object) -> Path:
    spec = {
        "models": [{"ref": ref}],
        "registry": {"root": str(registry_root), "watch_interval_s": 0.2, **registry},
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _corrupt_blob(registry: Registry, ref: str, file_name: str) -> None:
    entry = next(e for e in registry.get(ref).files if e.path == file_name)
    blob = registry._blobs.path_for(entry.sha256)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    store = Registry(tmp_path / "registry")
    for seed in (0, 1, 2):
        store.add(make_artifact(tmp_path / f"artifact-{seed}", name="iris", seed=seed), actor="test")
    store.promote("iris:1", actor="test", reason="first release")
    return store


async def _load_until(url: str, stop: threading.Event, concurrency: int = 6) -> list[tuple[int, str]]:
    outcomes: list[tuple[int, str]] = []

    async def loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await client.post(url, json=BODY)
            version = (
                response.json().get("model_version", "") if response.status_code == 200 else response.text
            )
            outcomes.append((response.status_code, version))

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(loop(client) for _ in range(concurrency)))
    return outcomes


def test_alias_move_switches_versions_under_load_with_zero_failures(
    tmp_path: Path, registry: Registry
) -> None:
    with serve(["--spec", str(_spec(tmp_path, registry.root, "iris@production"))], tmp_path) as server:
        metadata = httpx.get(f"{server.url}/v2/models/iris").json()
        assert metadata["versions"] == ["1"]
        onnx_entry = next(e for e in registry.get("iris:1").files if e.path == "model.onnx")
        assert metadata["parameters"]["sha256"] == onnx_entry.sha256

        stop = threading.Event()

        def promote_then_stop() -> None:
            time.sleep(1.0)
            registry.promote("iris:2", actor="test", reason="better model")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if httpx.get(f"{server.url}/v2/models/iris").json()["versions"] == ["2"]:
                    break
                time.sleep(0.1)
            time.sleep(1.0)  # keep the load on after the switch
            stop.set()

        mover = threading.Thread(target=promote_then_stop)
        mover.start()
        outcomes = asyncio.run(_load_until(f"{server.url}/v2/models/iris/infer", stop))
        mover.join()
        failures = [o for o in outcomes if o[0] != 200]
        assert not failures, failures[:5]
        versions = [version for _, version in outcomes]
        assert versions[0] == "1" and versions[-1] == "2"
        assert len(outcomes) > 50
        index = httpx.post(f"{server.url}/v2/repository/index").json()
        assert [(e["name"], e["version"], e["state"]) for e in index] == [("iris", "2", "READY")]


def test_a_version_that_fails_verification_never_replaces_the_serving_one(
    tmp_path: Path, registry: Registry
) -> None:
    with serve(["--spec", str(_spec(tmp_path, registry.root, "iris@production"))], tmp_path) as server:
        _corrupt_blob(registry, "iris:3", "model.onnx")
        registry.promote("iris:3", actor="test", reason="bad build")
        deadline = time.monotonic() + 20
        reason = ""
        while time.monotonic() < deadline and "failed" not in reason:
            index = httpx.post(f"{server.url}/v2/repository/index").json()
            reason = index[0]["reason"]
            time.sleep(0.1)
        assert "version 3 failed" in reason and "model.onnx" in reason
        assert index[0]["version"] == "1" and index[0]["state"] == "READY"
        response = httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY)
        assert response.status_code == 200 and response.json()["model_version"] == "1"


def test_tampered_blob_refuses_to_load_at_startup_naming_the_file(tmp_path: Path, registry: Registry) -> None:
    _corrupt_blob(registry, "iris:1", "model.onnx")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelfleet.cli.main",
            "serve",
            "--spec",
            str(_spec(tmp_path, registry.root, "iris@production")),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 4, result.stderr
    assert "model.onnx" in result.stderr and "Traceback" not in result.stderr


def test_required_signature(tmp_path: Path, registry: Registry) -> None:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    generate_signing_key(private, public)
    spec = _spec(tmp_path, registry.root, "iris@production", trusted_public_keys=[str(public)])
    unsigned = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "serve", "--spec", str(spec), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unsigned.returncode == 4 and "signature" in unsigned.stderr
    registry.sign("iris:1", load_private_key(private), actor="test")
    with serve(["--spec", str(spec)], tmp_path) as server:
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY).status_code == 200


def test_a_model_registered_under_another_name_is_served_and_followed_under_that_name(
    tmp_path: Path, registry: Registry
) -> None:
    for seed in (0, 1):  # the manifests say `iris`; the registry knows them as `emb`
        registry.add(
            make_artifact(tmp_path / f"renamed-{seed}", name="iris", seed=seed), actor="t", name="emb"
        )
    registry.promote("emb:1", actor="test", reason="first release")
    root = str(registry.root)
    with serve(["--ref", "emb@production", "--registry", root], tmp_path) as server:
        assert httpx.get(f"{server.url}/v2/models/iris").status_code == 404
        metadata = httpx.get(f"{server.url}/v2/models/emb").json()
        assert metadata["name"] == "emb" and metadata["versions"] == ["1"]
        response = httpx.post(f"{server.url}/v2/models/emb/infer", json=BODY)
        assert response.status_code == 200 and response.json()["model_name"] == "emb"
        registry.promote("emb:2", actor="test", reason="better model")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(f"{server.url}/v2/models/emb").json()["versions"] == ["2"]:
                break
            time.sleep(0.1)
        response = httpx.post(f"{server.url}/v2/models/emb/infer", json=BODY)
        assert response.status_code == 200 and response.json()["model_version"] == "2"


def test_a_lazy_model_follows_its_alias_loaded_or_not(tmp_path: Path, registry: Registry) -> None:
    spec_path = _spec(tmp_path, registry.root, "iris@production")
    spec = yaml.safe_load(spec_path.read_text())
    spec["residency"] = {"memory_budget_bytes": 512 * 2**20}
    spec_path.write_text(yaml.safe_dump(spec))

    def index_until(server_url: str, wanted: list[tuple[str, str, str]]) -> None:
        deadline = time.monotonic() + 20
        while True:
            index = httpx.post(f"{server_url}/v2/repository/index").json()
            seen = [(e["name"], e["version"], e["state"]) for e in index]
            if seen == wanted or time.monotonic() > deadline:
                assert seen == wanted
                return
            time.sleep(0.1)

    with serve(["--spec", str(spec_path)], tmp_path) as server:
        index_until(server.url, [("iris", "1", "UNAVAILABLE")])
        # Not loaded: the move registers the new version in place of the old, nothing is loaded.
        registry.promote("iris:2", actor="test", reason="better model")
        index_until(server.url, [("iris", "2", "UNAVAILABLE")])
        response = httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY, timeout=30)
        assert response.status_code == 200 and response.json()["model_version"] == "2"  # its cold load
        # Loaded: the next version loads beside it and takes over, and stays registered for evictions.
        registry.promote("iris:3", actor="test", reason="even better")
        index_until(server.url, [("iris", "3", "READY")])
        response = httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY, timeout=30)
        assert response.status_code == 200 and response.json()["model_version"] == "3"
