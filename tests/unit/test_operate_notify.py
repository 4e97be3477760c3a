"""The notifier's pure parts: grouping by key within the window, the Alertmanager v4 payload, and the
notification settings' validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelfleet.config.operate import AlertsConfig, NotificationsConfig, SinkConfig
from modelfleet.operate.events import Event
from modelfleet.operate.notify import Grouper
from modelfleet.operate.sinks import ZERO_TIME, Notification, alertmanager_payload


def _event(status: str = "firing", key: str = "replica_restarted:cpu-0-0", at: float = 1000.0) -> Event:
    return Event(
        kind="replica_restarted",
        severity="warning",
        fleet="f",
        summary="cpu-0-0 killed by SIGKILL",
        key=key,
        status=status,  # type: ignore[arg-type]
        process="cpu-0-0",
        details={"signal": "SIGKILL", "uptime_s": 12.5},
        at=at,
    )


def test_a_crash_loop_is_one_notification_with_its_count_and_resolved_goes_out_at_once() -> None:
    grouper = Grouper(interval_s=30.0)
    [first] = grouper.add(0, _event(), now=0.0)
    assert first.count == 1
    for mark, now in ((1, 1.0), (2, 5.0), (3, 9.0)):
        assert grouper.add(mark, _event(at=1000 + now), now) == []
    assert grouper.due(29.0) == []
    [grouped] = grouper.due(30.0)
    assert (grouped.count, grouped.marks, grouped.started_at) == (3, [1, 2, 3], 1000.0)
    # Resolved: sent at once, with the condition's start kept for startsAt.
    [resolved] = grouper.add(4, _event("resolved", at=1040.0), now=40.0)
    assert resolved.event.status == "resolved" and resolved.started_at == 1000.0
    # Held events of the old status go out before a change of status.
    grouper.add(5, _event(at=1050.0), now=50.0)
    grouper.add(6, _event(at=1051.0), now=51.0)
    out = grouper.add(7, _event("resolved", at=1052.0), now=52.0)
    assert [(n.event.status, n.count) for n in out] == [("firing", 1), ("resolved", 1)]
    # Another key is its own group.
    assert len(grouper.add(8, _event(key="replica_restarted:cpu-0-1"), now=52.0)) == 1


def test_payload_is_alertmanager_webhook_version_4() -> None:
    payload = alertmanager_payload(Notification(_event(), 3, 990.0), "pager", "http://fleet.example")
    assert payload["version"] == "4" and payload["receiver"] == "pager" and payload["truncatedAlerts"] == 0
    [alert] = payload["alerts"]
    assert alert["labels"] == {
        "alertname": "ModelfleetReplicaRestarted",
        "fleet": "f",
        "severity": "warning",
        "kind": "replica_restarted",
        "process": "cpu-0-0",
    }
    assert alert["annotations"]["count"] == "3" and alert["annotations"]["signal"] == "SIGKILL"
    assert alert["annotations"]["uptime_s"] == "12.5"
    assert alert["startsAt"] == "1970-01-01T00:16:30.000Z" and alert["endsAt"] == ZERO_TIME
    assert len(alert["fingerprint"]) == 16 and payload["groupKey"].startswith("{}:{alertname=")
    assert payload["commonLabels"] == alert["labels"] and payload["externalURL"] == "http://fleet.example"
    resolved = alertmanager_payload(Notification(_event("resolved", at=1100.0), 1, 990.0), "pager", "")
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] == "1970-01-01T00:18:20.000Z"
    assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]  # the same alert, now resolved


def test_sink_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="is not an http"):
        SinkConfig(kind="webhook", url="file:///etc/passwd")
    with pytest.raises(ValidationError, match="needs `url`"):
        SinkConfig(kind="webhook")
    with pytest.raises(ValidationError, match="unknown event kind"):
        SinkConfig(kinds=["replica_exploded"])
    sink = SinkConfig(kind="webhook", url="https://hooks.example/x", severities=["critical"], kinds=["alert"])
    assert sink.name == "webhook" and sink.takes("alert", "critical")
    assert not sink.takes("alert", "warning") and not sink.takes("model_unavailable", "critical")
    assert [s.kind for s in NotificationsConfig().sinks] == ["log"]


def test_a_window_shorter_than_two_evaluations_would_never_evaluate() -> None:
    rows = [{"severity": "critical", "factor": 14.4, "long_window_s": 3600, "short_window_s": 20}]
    with pytest.raises(ValidationError, match="would never evaluate"):
        AlertsConfig.model_validate({"burn_rates": rows, "evaluation_interval_s": 15})
    with pytest.raises(ValidationError, match="is longer than long_window_s"):
        AlertsConfig.model_validate(
            {"burn_rates": [{"severity": "warning", "factor": 1, "long_window_s": 60, "short_window_s": 600}]}
        )
