"""The fleet's Grafana dashboard against a JSON schema of Grafana's dashboard model (the fields it uses),
and the PromQL metric-name extraction the integration check (tests/integration/test_ui_fleet.py) relies on."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from tests.support.grafana import GRAFANA_DASHBOARD_SCHEMA, metric_names

from modelfleet.config.fleet import FleetModelConfig, FleetSpec
from modelfleet.operate.dashboard import MAX_MODEL_PANELS, grafana_dashboard

_VALIDATOR = jsonschema.Draft202012Validator(GRAFANA_DASHBOARD_SCHEMA)


def _dashboard(models: int) -> dict[str, Any]:
    spec = FleetSpec(
        name="shop",
        models=[FleetModelConfig(name=f"m{i}", path=f"/models/m{i}") for i in range(models)],
    )
    return grafana_dashboard(spec)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(GRAFANA_DASHBOARD_SCHEMA)


@pytest.mark.parametrize("models", [1, MAX_MODEL_PANELS + 5])
def test_the_rendered_dashboard_matches_the_schema(models: int) -> None:
    dashboard = _dashboard(models)
    assert list(_VALIDATOR.iter_errors(dashboard)) == []
    per_model = [panel for panel in dashboard["panels"] if panel["title"].startswith("m")]
    assert len(per_model) == 2 * min(models, MAX_MODEL_PANELS)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert ids == list(range(1, len(ids) + 1))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("panels", 0, "gridPos", "w"), 25),  # wider than Grafana's 24 columns
        (("panels", 0, "targets"), []),
        (("panels", 0, "datasource", "type"), "loki"),
        (("uid",), "has spaces"),
    ],
)
def test_the_schema_rejects_a_broken_dashboard(path: tuple[Any, ...], value: Any) -> None:
    dashboard = copy.deepcopy(_dashboard(1))
    holder: Any = dashboard
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    assert list(_VALIDATOR.iter_errors(dashboard)) != []


def test_metric_names_are_the_selectors_only() -> None:
    expr = (
        'sum by (model) (rate(a_total{fleet="x",code=~"5.."}[5m])) / on (model) group_left (pod) '
        "b_bucket offset 5m + vector(1) and histogram_quantile(0.99, c:rule)"
    )
    assert metric_names(expr) == {"a_total", "b_bucket", "c:rule"}
    assert metric_names('1 - avg by (instance) (rate(x{mode="idle"}[5m]))') == {"x"}
