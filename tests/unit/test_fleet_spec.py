"""FleetSpec: validation with clear messages, defaults, paths relative to the spec file, the shipped examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelfleet.config.base import load_spec, parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import NotFound, SpecError
from modelfleet.fleet.sizing import load_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _spec(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "demo", "models": [{"name": "a", "path": "/models/a", "memory_mib": 100}]}
    data.update(overrides)
    return data


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = parse_spec(_spec(), FleetSpec)
    assert [pool.name for pool in spec.pools] == ["cpu"]
    assert spec.pool_of(spec.models[0]).name == "cpu"
    assert spec.auth.enabled is True
    assert spec.pools[0].replicas == 2
    assert spec.pools[0].autoscaling.min_replicas == 2
    assert spec.request_timeout_s == pytest.approx(11.0)  # largest model timeout + 1 s
    assert spec.image.reference == "ghcr.io/modelfleet/modelfleet:0.1.0"


def test_every_field_is_documented() -> None:
    def walk(model: Any, seen: set[type]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            for candidate in getattr(annotation, "__args__", (annotation,)):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    walk(candidate, seen)
                for inner in getattr(candidate, "__args__", ()):
                    if isinstance(inner, type) and hasattr(inner, "model_fields"):
                        walk(inner, seen)

    walk(FleetSpec, set())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Bad_Name"}, "fleet name 'Bad_Name' must be lower-case"),
        ({"models": [{"name": "a", "path": "/x", "ref": "a:1"}]}, "give exactly one of `path`"),
        ({"models": [{"name": "a"}]}, "give exactly one of `path`"),
        (
            {"models": [{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}]},
            "names must be unique, repeated: a",
        ),
        ({"models": [{"name": "a", "path": "/x", "pool": "gpu"}]}, "names pool 'gpu', which is not defined"),
        ({"models": [{"name": "bad name", "path": "/x"}]}, "is not of the form NAME"),
        ({"models": []}, "models"),
        ({"pools": []}, "give at least one pool"),
        ({"pools": [{"name": "cpu"}, {"name": "cpu"}]}, "names must be unique, repeated: cpu"),
        (
            {"pools": [{"name": "cpu", "autoscaling": {"min_replicas": 5, "max_replicas": 2}}]},
            "max_replicas (2) is below",
        ),
        (
            {"pools": [{"name": "cpu", "resources": {"cpu_cores": 2, "cpu_limit_cores": 1}}]},
            "a limit must be at least",
        ),
        ({"image": {"tag": "latest"}}, "tag 'latest' is not reproducible"),
        ({"image": {"digest": "sha256:abc"}}, "must look like sha256:<64 hex digits>"),
        ({"unknown_key": 1}, "unknown_key: Extra inputs are not permitted"),
        (
            {"models": [{"name": "a", "path": "/x", "batching": {"max_delay_s": -1}}]},
            "models.0.batching.max_delay_s",
        ),
    ],
)
def test_invalid_specs_fail_with_a_message_that_names_the_problem(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(_spec(**overrides), FleetSpec, "fleet.yaml")
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_paths_are_relative_to_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    spec_file = tmp_path / "specs" / "fleet.yaml"
    spec_file.write_text(
        "name: demo\nmodels:\n  - {name: a, path: ../artifacts/a, memory_mib: 10}\nauth: {keys_file: keys.json}\n",
        encoding="utf-8",
    )
    spec = load_spec(spec_file, FleetSpec)
    assert spec.models[0].path == (tmp_path / "artifacts" / "a").resolve()
    assert spec.auth.keys_file == (tmp_path / "specs" / "keys.json").resolve()


def test_missing_spec_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_spec(tmp_path / "nope.yaml", FleetSpec)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("fleet-*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_validate_and_plan(example: Path) -> None:
    plan = load_plan(example)
    assert plan.groups
    assert sorted(m for g in plan.groups for m in g.model_names) == sorted(plan.model_names)


def test_guidance_mirror_puts_sixteen_models_on_one_cpu_server_group() -> None:
    plan = load_plan(EXAMPLES / "fleet-eks-guidance.yaml")
    assert len(plan.fleet.models) == 16
    assert len(plan.groups) == 1
    group = plan.groups[0]
    assert len(group.models) == 16
    assert group.pool.instance_type == "c5.4xlarge"
    assert group.pool.resources.accelerator_count == 0
