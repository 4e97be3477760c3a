"""fleet_warnings: what a valid fleet spec leaves open, for a local run and for a cluster."""

from __future__ import annotations

from typing import Any

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.fleet.warnings import fleet_warnings

DIGEST = "sha256:" + "a" * 64


def _spec(**overrides: Any) -> FleetSpec:
    data: dict[str, Any] = {
        "name": "demo",
        "models": [{"name": "a", "path": "/models/a", "memory_mib": 100}],
        "auth": {"enabled": True, "keys_file": "/etc/keys.json"},
        "image": {"digest": DIGEST},
    }
    data.update(overrides)
    return parse_spec(data, FleetSpec)


def test_a_fully_set_up_spec_has_nothing_to_say_locally() -> None:
    assert fleet_warnings(_spec(), kubernetes=False) == []


def test_open_access_names_the_router_address() -> None:
    spec = _spec(auth={"enabled": False}, router={"host": "0.0.0.0"})
    [note] = fleet_warnings(spec, kubernetes=False)
    assert note.startswith("auth is off") and "(0.0.0.0)" in note
    assert fleet_warnings(spec, kubernetes=True)[0] == note


def test_auth_without_a_key_store_matters_only_locally() -> None:
    spec = _spec(auth={"enabled": True})
    assert any("needs a key store" in note for note in fleet_warnings(spec, kubernetes=False))
    on_cluster = fleet_warnings(spec, kubernetes=True)
    assert not any("key store" in note for note in on_cluster)
    assert on_cluster == ["pods mount Secret demo-auth (key `keys`); create it before applying"]


def test_kubernetes_notes_unpinned_images_and_the_secrets_to_create() -> None:
    spec = _spec(
        image={"tag": "1.2.3"},
        auth={"enabled": True, "secret_name": "demo-keys"},
        kubernetes={"monitoring": {"service_monitor": True, "scrape_secret_name": "prom"}},
    )
    notes = fleet_warnings(spec, kubernetes=True)
    assert len(notes) == 3
    assert "not pinned by digest" in notes[0] and ":1.2.3" in notes[0]
    assert "Secret demo-keys (key `keys`)" in notes[1]
    assert "Secret prom (key `api-key`)" in notes[2]
    assert not any("digest" in note for note in fleet_warnings(spec, kubernetes=False))


def test_the_scrape_secret_is_not_needed_when_metrics_are_open() -> None:
    spec = _spec(
        auth={"enabled": True, "secret_name": "demo-keys", "protect_metrics": False},
        kubernetes={"monitoring": {"service_monitor": True, "scrape_secret_name": "prom"}},
    )
    assert not any("Prometheus" in note for note in fleet_warnings(spec, kubernetes=True))


def test_registry_models_without_a_size_are_named() -> None:
    models = [
        {"name": "a", "path": "/models/a", "memory_mib": 100},
        {"name": "b", "ref": "b@production"},
        {"name": "c", "ref": "c@production", "memory_mib": 300},
    ]
    [note] = fleet_warnings(_spec(models=models), kubernetes=False)
    assert note.endswith("sized at a default estimate: b")
