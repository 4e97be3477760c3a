"""Where notifications go: an Alertmanager-compatible webhook, a JSON-lines file, the supervisor's log.

A notification is one condition (one event key) with how many events it stands for. The webhook gets
the payload Alertmanager's webhook receiver sends (version 4: version, groupKey, truncatedAlerts,
status, receiver, groupLabels, commonLabels, commonAnnotations, externalURL, and alerts with status,
labels, annotations, startsAt, endsAt, generatorURL, fingerprint), one alert per notification, so
anything that takes Alertmanager webhooks takes ours. A sink raises on failure; the notifier retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from modelfleet.config.operate import SinkConfig
from modelfleet.operate.events import Event

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing
_MAX_ANNOTATIONS = 20
_MAX_ANNOTATION_CHARS = 1000


@dataclass(slots=True)
class Notification:
    """One condition to tell a sink about: the latest event of its key and how many it stands for."""

    event: Event
    count: int
    started_at: float  # when the condition began firing (Unix seconds)
    marks: list[int] = field(default_factory=list)  # log offsets of the events it carries

    @property
    def alertname(self) -> str:
        name = self.event.details.get("alertname")
        if isinstance(name, str) and name:
            return name
        return "Modelfleet" + "".join(part.capitalize() for part in self.event.kind.split("_"))

    def labels(self) -> dict[str, str]:
        event = self.event
        labels = {
            "alertname": self.alertname,
            "fleet": event.fleet,
            "severity": event.severity,
            "kind": event.kind,
        }
        if event.model is not None:
            labels["model"] = event.model
        if event.process is not None:
            labels["process"] = event.process
        extra = event.details.get("labels")
        if isinstance(extra, dict):
            labels.update({str(k): str(v) for k, v in extra.items() if k not in labels})
        return labels

    def annotations(self) -> dict[str, str]:
        annotations = {"summary": self.event.summary, "count": str(self.count), "key": self.event.key}
        for name, value in list(self.event.details.items())[:_MAX_ANNOTATIONS]:
            if name in ("labels", "alertname"):
                continue
            annotations[name] = (value if isinstance(value, str) else json.dumps(value))[
                :_MAX_ANNOTATION_CHARS
            ]
        return annotations

    def to_record(self) -> dict[str, Any]:
        """The JSON-lines file's line: the event, the count, and the labels a webhook would get."""
        return {"notification": {**asdict(self.event), "count": self.count, "started_at": self.started_at},
                "labels": self.labels()}  # fmt: skip


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_payload(notification: Notification, receiver: str, external_url: str) -> dict[str, Any]:
    """The Alertmanager webhook payload (version 4) for one notification, grouped by its alert's labels."""
    labels = notification.labels()
    annotations = notification.annotations()
    event = notification.event
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    group = ", ".join(f"{name}={json.dumps(value)}" for name, value in sorted(labels.items()))
    alert = {
        "status": event.status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _iso(notification.started_at),
        "endsAt": _iso(event.at) if event.status == "resolved" else ZERO_TIME,
        "generatorURL": external_url,
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": f"{{}}:{{{group}}}",
        "truncatedAlerts": 0,
        "status": event.status,
        "receiver": receiver,
        "groupLabels": labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
    }


class Sink(Protocol):
    config: SinkConfig

    async def deliver(self, notification: Notification) -> None: ...


def append_line(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")


class WebhookSink:
    def __init__(self, config: SinkConfig, client: httpx.AsyncClient, external_url: str) -> None:
        self.config = config
        self._client = client
        self._external_url = external_url

    async def deliver(self, notification: Notification) -> None:
        assert self.config.url is not None  # the config requires it for a webhook
        payload = alertmanager_payload(notification, self.config.name, self._external_url)
        response = await self._client.post(self.config.url, json=payload, timeout=self.config.timeout_s)
        if response.status_code >= 300:
            raise OSError(f"{self.config.url} answered HTTP {response.status_code}")


class FileSink:
    def __init__(self, config: SinkConfig) -> None:
        assert config.path is not None  # the config requires it for a file sink
        self.config = config
        self._path = config.path

    async def deliver(self, notification: Notification) -> None:
        await asyncio.to_thread(append_line, self._path, notification.to_record())


class LogSink:
    """One line per notification in a log file (the supervisor's own)."""

    def __init__(self, config: SinkConfig, log_file: Path) -> None:
        self.config = config
        self._log_file = log_file

    async def deliver(self, notification: Notification) -> None:
        event = notification.event
        times = f" (x{notification.count})" if notification.count > 1 else ""
        line = f"--- modelfleet notify {_iso(event.at)}: [{event.severity}] {event.status} {event.kind}: {event.summary}{times}\n"
        await asyncio.to_thread(_append_text, self._log_file, line)


def _append_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
