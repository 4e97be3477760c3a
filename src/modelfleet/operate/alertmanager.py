"""The Alertmanager configuration snippet that routes a fleet's alerts to its webhook sinks.

Merge its `route.routes` entries and `receivers` into the cluster's alertmanager.yml (or the
kube-prometheus-stack chart's `alertmanager.config`). Every alert of the fleet carries the label
`fleet`, so one route per webhook sink matches on it (and on the sink's severities), with
`continue: true` so every sink gets its share, and `send_resolved: true` so receivers learn when a
condition clears. File and log sinks exist only in the local notifier and are not part of it.
"""

from __future__ import annotations

from typing import Any

from modelfleet.config.fleet import FleetSpec
from modelfleet.operate.rules import duration_text


def alertmanager_config(spec: FleetSpec) -> dict[str, Any]:
    notifications = spec.notifications
    routes: list[dict[str, Any]] = []
    receivers: list[dict[str, Any]] = []
    for sink in notifications.sinks:
        if sink.kind != "webhook":
            continue
        receiver = f"{spec.name}-{sink.name}"
        routes.append(
            {
                "receiver": receiver,
                "matchers": [f'fleet="{spec.name}"', f'severity=~"{"|".join(sink.severities)}"'],
                "group_by": ["alertname", "model"],
                "group_interval": duration_text(max(notifications.group_interval_s, 1.0)),
                "continue": True,
            }
        )
        receivers.append(
            {
                "name": receiver,
                "webhook_configs": [
                    {"url": sink.url, "send_resolved": True, "max_alerts": 0},
                ],
            }
        )
    return {"route": {"routes": routes}, "receivers": receivers}
