"""`bench render-job`: a valid ConfigMap + Indexed Job whose pods split the load exactly."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from modelfleet.bench.kubejob import JobOptions, pod_specs, render_job
from modelfleet.config.bench import BenchSpec
from modelfleet.errors import InvalidInput
from modelfleet.kubeobjects import RUN_AS_ID, pod_security_context


def _spec(**overrides: object) -> BenchSpec:
    data: dict[str, object] = {
        "target": "http://models.default.svc:8000",
        "models": [{"name": "bert"}],
        "mode": "open",
        "points": [{"rate_per_s": 1000, "duration_s": 60}, {"rate_per_s": 3000, "requests": 10_001}],
        "slo": "p99<100ms",
    }
    data.update(overrides)
    return BenchSpec.model_validate(data)


def test_rendered_manifests_validate_against_kubernetes_schemas() -> None:
    documents = list(
        yaml.safe_load_all(render_job(_spec(), JobOptions(pods=4, image="ghcr.io/acme/modelfleet:1")))
    )
    assert [d["kind"] for d in documents] == ["ConfigMap", "Job"]
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)
    job = documents[1]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == 4
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "--output" in container["command"] and "-" in container["command"]
    assert "bench merge pods.log --slo 'p99<100ms'" in job["metadata"]["annotations"]["modelfleet.io/merge"]


def test_generator_pods_run_as_the_images_non_root_user_like_the_fleets_pods() -> None:
    job = list(
        yaml.safe_load_all(render_job(_spec(), JobOptions(pods=2, image="ghcr.io/acme/modelfleet:1")))
    )[1]
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == pod_security_context()  # the helper the fleet's Deployments use
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == RUN_AS_ID == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_pods_split_the_load_and_drop_gates() -> None:
    specs = pod_specs(_spec(), pods=3, procs_per_pod=2)
    assert sum(s["points"][0]["rate_per_s"] for s in specs) == pytest.approx(1000)
    assert sum(s["points"][1]["requests"] for s in specs) == 10_001
    assert all("slo" not in s for s in specs)
    assert len({s["seed"] for s in specs}) == 3
    for s in specs:
        BenchSpec.model_validate(s)  # each pod's spec is a valid spec on its own


def test_closed_loop_concurrency_split_and_limits() -> None:
    spec = _spec(mode="closed", points=[{"concurrency": 10, "duration_s": 5}])
    assert [s["points"][0]["concurrency"] for s in pod_specs(spec, 4, 1)] == [3, 3, 2, 2]
    with pytest.raises(InvalidInput, match="less than 12"):
        pod_specs(spec, 4, 3)
    with pytest.raises(InvalidInput, match="seq"):
        pod_specs(_spec(mode="seq", points=[]), 2, 1)


def test_samples_travel_in_the_config_map(tmp_path: Path) -> None:
    samples = tmp_path / "s.txt"
    samples.write_text("hello\nworld\n")
    config_map = next(
        yaml.safe_load_all(render_job(_spec(samples_file=samples), JobOptions(pods=2, image="i")))
    )
    assert config_map["data"]["samples.txt"] == "hello\nworld\n"
    assert "/etc/modelfleet-bench/samples.txt" in config_map["data"]["pod-1.yaml"]
