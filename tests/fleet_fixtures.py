"""Small real artifacts and fleet specs for the fleet tests.

The model is a real ONNX graph (scores = input · W + b, FP32 [-1, 4] → [-1, 3]) written with
onnx.helper, so it loads in milliseconds and needs no training. Kept out of conftest.py (another
area's file); fleet tests import it by module name.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from modelfleet.manifest import Manifest, Source, TensorField, hash_tree
from modelfleet.types import Datatype

FEATURES = 4
CLASSES = 3


def _onnx_bytes(seed: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(size=(FEATURES, CLASSES)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(CLASSES,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["scores"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, CLASSES])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def make_artifact(dest: Path, name: str = "linear", seed: int = 0) -> Path:
    """Write a real artifact folder (model.onnx + manifest.json) and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(_onnx_bytes(seed))
    manifest = Manifest(
        name=name,
        task="generic",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=Source(kind="onnx", path=f"memory://linear-seed-{seed}", sha256="0" * 64),
        inputs=[TensorField(name="input", datatype=Datatype.FP32, shape=[-1, FEATURES])],
        outputs=[TensorField(name="scores", datatype=Datatype.FP32, shape=[-1, CLASSES])],
        files=hash_tree(dest),
    )
    (dest / "manifest.json").write_bytes(manifest.to_json_bytes())
    return dest


def infer_body(rows: int = 2, seed: int = 1) -> dict[str, Any]:
    data = np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, FEATURES], "data": data.ravel().tolist()}
        ]
    }


def write_fleet_spec(path: Path, artifacts: dict[str, Path], **overrides: Any) -> Path:
    """A fleet spec for local tests: free router port, fast health checks and back-off."""
    spec: dict[str, Any] = {
        "name": "testfleet",
        "models": [
            {"name": name, "path": str(artifact), "warmup_runs": 1} for name, artifact in artifacts.items()
        ],
        "pools": [{"name": "cpu", "replicas": 1, "resources": {"memory_mib": 1024}}],
        "router": {"port": 0, "health_interval_s": 0.2},
        "auth": {"enabled": False},
        "local": {
            "health_interval_s": 0.2,
            "restart_backoff_initial_s": 0.2,
            "restart_backoff_max_s": 2.0,
            "stop_grace_s": 5.0,
            "startup_timeout_s": 60.0,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


CLI = [sys.executable, "-m", "modelfleet.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout_s: float = 60.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == status:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s} s (last: {last})")


def start_server(artifacts: list[Path], port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A real `modelfleet serve` process on 127.0.0.1:PORT."""
    args = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), *extra]
    for artifact in artifacts:
        args += ["--model", str(artifact)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_router(config_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "fleet", "router", str(config_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
