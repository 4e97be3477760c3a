"""`modelfleet fleet` operate commands in a subprocess: bad notification and alert settings fail with one
line and exit code 2; the Alertmanager snippet routes the fleet's alerts to its webhooks, resolved too."""

from __future__ import annotations

from pathlib import Path

import yaml
from tests.e2e.test_cli_fleet import assert_one_line_error, run


def _spec(tmp_path: Path, **extra: object) -> Path:
    spec = {
        "name": "ops",
        "models": [{"name": "a", "path": str(tmp_path)}],
        "auth": {"enabled": False},
        **extra,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_a_sink_url_that_is_not_http_is_a_one_line_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, notifications={"sinks": [{"kind": "webhook", "url": "ftp://hooks.example/x"}]})
    assert_one_line_error(run("fleet", "validate", str(spec)), 2, "is not an http(s) URL")
    assert "notifications.sinks[].url" in run("fleet", "validate", str(spec)).stderr


def test_a_rule_that_would_never_evaluate_is_a_one_line_error(tmp_path: Path) -> None:
    rows = [{"severity": "critical", "factor": 14.4, "long_window_s": 3600, "short_window_s": 20}]
    spec = _spec(tmp_path, alerts={"burn_rates": rows, "evaluation_interval_s": 15})
    assert_one_line_error(run("fleet", "validate", str(spec)), 2, "the rule would never evaluate")


def test_alertmanager_snippet_routes_to_webhook_sinks_with_send_resolved(tmp_path: Path) -> None:
    sinks = [
        {"kind": "webhook", "name": "pager", "url": "https://pager.example/hook", "severities": ["critical"]},
        {"kind": "file", "path": "notes.jsonl"},
    ]
    result = run("fleet", "render", str(_spec(tmp_path, notifications={"sinks": sinks})), "--alertmanager")
    assert result.returncode == 0, result.stderr
    snippet = yaml.safe_load(result.stdout)
    assert snippet["receivers"] == [
        {
            "name": "ops-pager",
            "webhook_configs": [
                {"url": "https://pager.example/hook", "send_resolved": True, "max_alerts": 0}
            ],
        }
    ]
    [route] = snippet["route"]["routes"]
    assert route["receiver"] == "ops-pager" and route["continue"] is True
    assert route["matchers"] == ['fleet="ops"', 'severity=~"critical"']
