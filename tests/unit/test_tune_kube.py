"""Tune trials rendered for Kubernetes: server Deployments on each instance type plus load Jobs, schema-valid."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml
from tests.support.linear_model import make_artifact

from modelfleet.config.tune import TuneSpec
from modelfleet.tune.kube import NO_CLUSTER, render_trials

KUBERNETES_VERSION = "1.30"


def test_each_trial_renders_valid_objects_on_its_instance_type(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "linear")
    spec = TuneSpec(
        artifacts=[artifact],
        target_rate_per_s=500,
        hardware=[{"cpus": 1, "instance_type": "c7i.large"}, {"cpus": 2, "instance_type": "m7i.large"}],
        space={"max_batch_size": [1, 8]},
        capacity={"start_rate_per_s": 100, "max_rate_per_s": 800},
    )
    files = render_trials(spec, image="ghcr.io/acme/modelfleet:1.2")
    assert len(files) == 4
    for name, text in files.items():
        assert NO_CLUSTER in text
        objects = [d for d in yaml.safe_load_all(text) if d]
        kinds = [o["kind"] for o in objects]
        assert {"Deployment", "Service", "ConfigMap", "Job"} <= set(kinds)
        assert "NetworkPolicy" not in kinds and not any("router" in o["metadata"]["name"] for o in objects)
        for obj in objects:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        instance = deployment["spec"]["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"]
        assert instance in name
        assert (
            deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/modelfleet:1.2"
        )
        service = next(o for o in objects if o["kind"] == "Service")
        pod_spec = yaml.safe_load(
            next(o for o in objects if o["kind"] == "ConfigMap" and "pod-0.yaml" in o["data"])["data"][
                "pod-0.yaml"
            ]
        )
        assert pod_spec["target"].startswith(f"http://{service['metadata']['name']}.modelfleet-tune.svc:")
        assert [p["rate_per_s"] for p in pod_spec["points"]] == [100, 200, 400, 800]
