"""Availability events: what happened to a fleet, recorded once, read by notifiers, `fleet events` and reviews.

Every part that sees an event (the supervisor, the router, the alert evaluator, a rollout) appends it to
the fleet's event log, a JSON-lines file in its state folder (`FleetPaths.events_file`; this module
imports nothing of the fleet, so the supervisor and the router can use it); notification is a reader of that log, so a
sink that is down never blocks the part that saw the event, and nothing is lost when a notifier restarts.
One line per event, written with a single O_APPEND write: concurrent writers on one machine never
interleave lines (POSIX appends of one write are atomic on local file systems).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

EventKind = Literal[
    "replica_restarted",  # a process died and was restarted (healed)
    "model_unavailable",  # a model has no ready replica (status resolved when one is back)
    "model_load_failed",  # a model failed to load (repository load or alias switch)
    "alert",  # an SLO or symptom alert fired or resolved
    "rollout_started",
    "rollout_advanced",
    "rollout_rolled_back",
    "rollout_finished",
    "drift_detected",
    "retraining",
]
Severity = Literal["info", "warning", "critical"]
Status = Literal["firing", "resolved"]
# A line longer than this is cut in its details: the log stays readable line by line whatever a caller puts in.
MAX_EVENT_LINE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    """One availability event.

    `key` groups and de-duplicates: events with the same key are one condition (a crash loop of one
    process, one alert on one model), so notifiers send it once with a count and send `resolved` when
    an event with that key and status "resolved" follows.
    """

    kind: EventKind
    severity: Severity
    fleet: str
    summary: str
    key: str
    status: Status = "firing"
    model: str | None = None
    process: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)  # Unix seconds

    def to_json_line(self) -> bytes:
        line = json.dumps(asdict(self), sort_keys=True, default=str).encode() + b"\n"
        if len(line) > MAX_EVENT_LINE_BYTES:
            cut = {**asdict(self), "details": {"truncated": True}}
            line = json.dumps(cut, sort_keys=True, default=str).encode() + b"\n"
        return line

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def append_event(path: Path, event: Event) -> None:
    """Append one event to the log at `path` (created if missing) in one write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, event.to_json_line())
    finally:
        os.close(fd)


def read_events(path: Path, offset_bytes: int = 0) -> tuple[list[Event], int]:
    """Events from byte `offset_bytes` on, and the offset after the last whole line (to follow the log).

    A line being written (no newline yet) is left for the next read; an unreadable line is skipped.
    """
    found, end = read_events_at(path, offset_bytes)
    return [event for _, event in found], end


def _parse(data: bytes) -> Iterator[Event]:
    for line in data.splitlines():
        try:
            raw = json.loads(line)
            if isinstance(raw, dict):
                yield Event.from_dict(raw)
        except (ValueError, TypeError):
            continue


def read_events_at(path: Path, offset_bytes: int = 0) -> tuple[list[tuple[int, Event]], int]:
    """As `read_events`, each event with the byte offset its line starts at (where a reader resumes)."""
    if not path.is_file():
        return [], offset_bytes
    with path.open("rb") as handle:
        handle.seek(offset_bytes)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    found: list[tuple[int, Event]] = []
    start = 0
    while start < end:
        stop = data.index(b"\n", start) + 1
        for event in _parse(data[start:stop]):
            found.append((offset_bytes + start, event))
        start = stop
    return found, offset_bytes + end
