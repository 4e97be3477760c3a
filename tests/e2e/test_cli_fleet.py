"""The `modelfleet fleet` and `modelfleet image` commands in a subprocess, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from tests.support.fleet_specs import write_fleet_spec
from tests.support.linear_model import infer_body, make_artifact

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.timeout(180)


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout_s,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr
    assert result.stderr.strip().startswith("error:")


def test_validate_shows_the_plan_and_json(tmp_path: Path) -> None:
    result = run("fleet", "validate", str(EXAMPLES / "fleet-eks-guidance.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid fleet eks-guidance with 16 model(s) in 1 server group(s)" in result.stdout
    as_json = run("fleet", "validate", str(EXAMPLES / "fleet-local.yaml"), "--json")
    data = json.loads(as_json.stdout)
    assert data["valid"] is True and data["groups"][0]["models"] == ["minilm", "minilm-int8"]
    assert any("auth is off" in note for note in data["warnings"])


def test_bad_specs_give_one_line_errors_and_documented_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nmodels:\n  - {name: a, path: /x, pool: gpu}\n", encoding="utf-8")
    assert_one_line_error(run("fleet", "validate", str(bad)), 2, "names pool 'gpu', which is not defined")
    assert_one_line_error(run("fleet", "validate", str(tmp_path / "missing.yaml")), 3, "does not exist")
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("name: [unclosed\n", encoding="utf-8")
    assert_one_line_error(run("fleet", "render", str(broken_yaml)), 2, "not valid YAML")


def test_render_writes_a_kustomize_base_and_prints_yaml(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = run("fleet", "render", str(EXAMPLES / "fleet-gpu.yaml"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "kustomization.yaml").is_file() and (out / "deployment-search-gpu-0.yaml").is_file()
    assert "kubectl apply -k" in result.stderr
    stream = run("fleet", "render", str(EXAMPLES / "fleet-eks-guidance.yaml"))
    kinds = [doc["kind"] for doc in yaml.safe_load_all(stream.stdout)]
    assert kinds[0] == "Namespace" and "HorizontalPodAutoscaler" in kinds
    assert "not pinned by digest" in stream.stderr


@pytest.mark.parametrize("command", [["apply", "--dry-run"], ["diff"], ["delete", "--yes"]])
def test_cluster_commands_without_a_cluster_exit_5_with_one_line(tmp_path: Path, command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "nothing-here")}
    result = run("fleet", command[0], str(EXAMPLES / "fleet-local.yaml"), *command[1:], env=env)
    assert_one_line_error(result, 5, "no usable Kubernetes configuration")


def test_cluster_commands_against_an_unreachable_api_exit_5(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kind",
                "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:9"}}],
                "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        ),
        encoding="utf-8",
    )
    result = run("fleet", "apply", str(EXAMPLES / "fleet-local.yaml"), "--kubeconfig", str(kubeconfig))
    assert_one_line_error(result, 5, "cannot reach the Kubernetes API at https://127.0.0.1:9")


def test_image_context_assembles_a_build_folder(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "artifact", "linear")
    spec = write_fleet_spec(tmp_path / "fleet.yaml", {"linear": artifact})
    out = tmp_path / "ctx"
    result = run("image", "context", str(spec), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data["models"]) == ["linear"]
    assert (out / "Dockerfile").is_file() and (out / "models" / "linear" / "manifest.json").is_file()
    again = run("image", "context", str(spec), "-o", str(out))
    assert_one_line_error(again, 6, "pass --force")


def test_status_of_a_fleet_with_auth_sends_the_api_key_it_is_given(tmp_path: Path) -> None:
    from modelfleet.security.keys import KeyStore

    keys_file = tmp_path / "keys.json"
    key = KeyStore(keys_file).create("status", ["read"], actor="test").key
    artifacts = {"alpha": make_artifact(tmp_path / "alpha", "alpha", 1)}
    spec = write_fleet_spec(
        tmp_path / "fleet.yaml", artifacts, auth={"enabled": True, "keys_file": str(keys_file)}
    )
    up = run("fleet", "up", str(spec), cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        without = run("fleet", "status", "testfleet", "--json", cwd=tmp_path)
        assert without.returncode == 0, without.stderr
        assert json.loads(without.stdout)["router_ready"] is False
        assert "--api-key" in without.stderr and "MODELFLEET_API_KEY" in without.stderr
        flag = run("fleet", "status", "testfleet", "--json", "--api-key", key, cwd=tmp_path)
        data = json.loads(flag.stdout)
        assert data["router_ready"] is True and data["router_error"] is None
        assert "warning" not in flag.stderr
        env = {**os.environ, "MODELFLEET_API_KEY": key}
        human = run("fleet", "status", "testfleet", cwd=tmp_path, env=env)
        assert human.returncode == 0 and "(ready)" in human.stdout, human.stderr
        assert key not in human.stdout + human.stderr
    finally:
        down = run("fleet", "down", "testfleet", cwd=tmp_path)
    assert down.returncode == 0, down.stderr


def test_up_status_logs_down_from_separate_invocations(tmp_path: Path) -> None:
    artifacts = {"alpha": make_artifact(tmp_path / "alpha", "alpha", 1)}
    spec = write_fleet_spec(tmp_path / "fleet.yaml", artifacts)
    up = run("fleet", "up", str(spec), cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        router_url = up.stdout.strip()
        assert router_url.startswith("http://127.0.0.1:")
        assert "auth is off" in up.stderr
        response = httpx.post(f"{router_url}/v2/models/alpha/infer", json=infer_body())
        assert response.status_code == 200
        status = run("fleet", "status", "testfleet", "--json", cwd=tmp_path)
        data = json.loads(status.stdout)
        assert data["status"] == "running" and data["router_ready"] is True
        assert data["models"][0]["name"] == "alpha" and data["models"][0]["requests"] == 1
        human = run("fleet", "status", str(spec), cwd=tmp_path)
        assert "fleet testfleet: running" in human.stdout and "cpu-0-0" in human.stdout
        logs = run("fleet", "logs", "testfleet", "--process", "cpu-0-0", "-n", "5", cwd=tmp_path)
        assert logs.returncode == 0 and "serving 1 model(s)" in logs.stdout
        bench = run(
            "bench",
            "run",
            "--fleet",
            str(spec),
            "--mode",
            "closed",
            "--concurrency",
            "2",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
            "--quiet",
            "--json",
            "-o",
            str(tmp_path / "fleet-bench.json"),
            cwd=tmp_path,
        )
        assert bench.returncode == 0, bench.stderr
        result = json.loads((tmp_path / "fleet-bench.json").read_text())
        assert router_url in json.dumps(result) and "alpha" in json.dumps(result)
        unknown = run("fleet", "logs", "testfleet", "--process", "nope", cwd=tmp_path)
        assert_one_line_error(unknown, 3, "has no process 'nope'")
        assert_one_line_error(
            run("fleet", "logs", "testfleet", "--follow", cwd=tmp_path), 2, "--follow needs one process"
        )
    finally:
        down = run("fleet", "down", "testfleet", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "fleet testfleet stopped" in down.stdout
    after = json.loads(run("fleet", "status", "testfleet", "--json", cwd=tmp_path).stdout)
    assert after["status"] == "stopped"
    assert_one_line_error(run("fleet", "status", "other", cwd=tmp_path), 3, "has no local state")
