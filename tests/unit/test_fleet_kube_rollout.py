"""A rollout rendered for Kubernetes: a canary group and the router's weighted ConfigMap, schema-valid.
No cluster runs here: validity is the Kubernetes 1.30 OpenAPI schema (kubernetes-validate)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.fleet.kube_rollout import render_rollout
from modelfleet.fleet.kubernetes import render_fleet
from modelfleet.fleet.plan import FleetPlan, plan_fleet

KUBERNETES_VERSION = "1.30.0"


def _plan() -> FleetPlan:
    spec = parse_spec(
        {
            "name": "demo",
            "models": [{"name": "a", "path": "/m/a"}, {"name": "emb", "ref": "minilm@production"}],
        },
        FleetSpec,
    )
    return plan_fleet(spec, {m.name: 200 for m in spec.models})


def _router_files(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    configmap = next(o for o in objects if o["metadata"]["name"] == "demo-router-config")
    return json.loads(configmap["data"]["router.json"]), json.loads(configmap["data"]["split.json"])


def test_rollout_objects_are_schema_valid_and_weight_the_router() -> None:
    objects = render_rollout(_plan(), "emb", "minilm:2", 10.0, shadow_percent=5.0)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "demo-canary-1-serve"),
        ("Deployment", "demo-canary-1"),
        ("Service", "demo-canary-1"),
        ("ConfigMap", "demo-router-config"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    deployment = objects[1]
    assert deployment["spec"]["replicas"] == 1
    assert "ref: minilm:2" in objects[0]["data"]["serve.yaml"]
    router, split = _router_files(objects)
    assert router["split_file"] == "/etc/modelfleet/split.json"
    [route] = split["routes"]
    assert (route["model"], route["canary_percent"], route["shadow_percent"]) == ("emb", 10.0, 5.0)
    assert route["upstreams"][0]["url"] == "http://demo-canary-1.modelfleet.svc.cluster.local:8000"


def test_the_fleet_render_carries_an_empty_split_outside_the_config_hash() -> None:
    fleet = render_fleet(_plan())
    _, split = _router_files(fleet)
    assert split == {"routes": []}
    rollout_router = render_rollout(_plan(), "emb", "minilm:2", 50.0)[-1]
    fleet_router = next(o for o in fleet if o["metadata"]["name"] == "demo-router-config")
    # Same router.json: changing weights re-applies the ConfigMap and restarts no router pod.
    assert rollout_router["data"]["router.json"] == fleet_router["data"]["router.json"]
    assert rollout_router["data"]["split.json"] != fleet_router["data"]["split.json"]


@pytest.mark.parametrize(
    ("model", "to_ref", "share", "error", "message"),
    [
        ("nope", "minilm:2", 10.0, NotFound, "model 'nope' is not in fleet demo"),
        ("a", "a:2", 10.0, InvalidInput, "serve the model as `ref: NAME@ALIAS`"),
        ("emb", "other:2", 10.0, InvalidInput, "is not a version of registry model 'minilm'"),
        ("emb", "minilm:", 10.0, InvalidInput, "--to"),
        ("emb", "minilm:2", 0.0, InvalidInput, r"\(0, 100\]"),
    ],
)
def test_bad_rollouts_are_refused(
    model: str, to_ref: str, share: float, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        render_rollout(_plan(), model, to_ref, share)
