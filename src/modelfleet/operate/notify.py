"""The notifier: follows a fleet's event log and delivers grouped notifications to every sink.

It runs as an asyncio task beside the supervisor's other work and never holds it up: each sink has
its own bounded queue and worker, a slow or dead sink only fills its own queue (past `queue_max` the
oldest notification goes to the dead-letter file), and delivery is retried with doubling waits up to
the sink's `max_retries`, then dead-lettered. The log offset up to which every notification is
settled (delivered or dead-lettered) is saved in the state folder, so a restarted notifier neither
sends again what was delivered nor skips what was not.

Grouping (`Grouper`, pure, `now` passed in) is per sink and per event key: the first event of a key
goes out at once; more events of that key within `group_interval_s` are held and go out as one
notification with their count when the window ends (a crash loop is one notification, not a storm);
a change of status (firing to resolved, or back) goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelfleet import fileio
from modelfleet.config.operate import NotificationsConfig, SinkConfig
from modelfleet.operate.events import Event, read_events_at
from modelfleet.operate.sinks import FileSink, LogSink, Notification, Sink, WebhookSink, append_line


@dataclass(slots=True)
class _Group:
    status: str
    started_at: float
    sent_at: float
    held: list[tuple[int, Event]] = field(default_factory=list)


class Grouper:
    """Groups one sink's events by key within `interval_s`; `add` and `due` return what to send now."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._groups: dict[str, _Group] = {}

    def add(self, mark: int, event: Event, now: float) -> list[Notification]:
        group = self._groups.get(event.key)
        if group is None or group.status != event.status:
            out = self._flush(group, now) if group is not None else []
            started = group.started_at if group is not None and event.status == "resolved" else event.at
            self._groups[event.key] = _Group(event.status, started, now)
            out.append(Notification(event, 1, started, [mark]))
            return out
        if now - group.sent_at >= self.interval_s and not group.held:
            group.sent_at = now
            return [Notification(event, 1, group.started_at, [mark])]
        group.held.append((mark, event))
        return []

    def due(self, now: float) -> list[Notification]:
        out: list[Notification] = []
        for key, group in list(self._groups.items()):
            if group.held and now - group.sent_at >= self.interval_s:
                out.extend(self._flush(group, now))
            elif not group.held and now - group.sent_at >= 10 * self.interval_s + 60:
                del self._groups[key]  # quiet for long: forget it (bounded memory)
        return out

    def _flush(self, group: _Group, now: float) -> list[Notification]:
        if not group.held:
            return []
        marks = [mark for mark, _ in group.held]
        latest = group.held[-1][1]
        group.held = []
        group.sent_at = now
        return [Notification(latest, len(marks), group.started_at, marks)]


class _SinkWorker:
    def __init__(self, sink: Sink, config: NotificationsConfig, dead_letter: Path, settle: _Settle) -> None:
        self.sink = sink
        self.grouper = Grouper(config.group_interval_s)
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=config.queue_max)
        self._dead_letter = dead_letter
        self._settle = settle

    def put(self, notification: Notification) -> None:
        if self.queue.full():  # the sink is far behind: the oldest goes to the dead-letter file
            self._dead(self.queue.get_nowait(), "queue full (notifications.queue_max)")
        self.queue.put_nowait(notification)

    async def run(self) -> None:
        config = self.sink.config
        while True:
            notification = await self.queue.get()
            wait_s = config.retry_initial_s
            for attempt in range(config.max_retries + 1):
                try:
                    await self.sink.deliver(notification)
                except (OSError, httpx.HTTPError) as exc:
                    if attempt == config.max_retries:
                        self._dead(notification, f"{type(exc).__name__}: {exc}")
                        break
                    await asyncio.sleep(wait_s)
                    wait_s = min(wait_s * 2, config.retry_max_s)
                else:
                    self._settle(notification.marks)
                    break

    def _dead(self, notification: Notification, error: str) -> None:
        with contextlib.suppress(OSError):  # a full disk must not stop the other sinks
            append_line(
                self._dead_letter,
                {
                    "sink": self.sink.config.name,
                    "error": error,
                    "at": time.time(),
                    **notification.to_record(),
                },
            )
        self._settle(notification.marks)


class _Settle:
    """Which log offsets still have a notification in flight; the committed offset is the lowest."""

    def __init__(self) -> None:
        self.outstanding: Counter[int] = Counter()

    def hold(self, mark: int) -> None:
        self.outstanding[mark] += 1

    def __call__(self, marks: list[int]) -> None:
        for mark in marks:
            self.outstanding[mark] -= 1
            if self.outstanding[mark] <= 0:
                del self.outstanding[mark]

    def committed(self, read_offset: int) -> int:
        return min(self.outstanding) if self.outstanding else read_offset


def make_sink(config: SinkConfig, client: httpx.AsyncClient, external_url: str, log_file: Path) -> Sink:
    if config.kind == "webhook":
        return WebhookSink(config, client, external_url)
    if config.kind == "file":
        return FileSink(config)
    return LogSink(config, log_file)


class Notifier:
    """Follows `events_file` from the offset saved in `offset_file` and feeds every sink's worker."""

    def __init__(
        self,
        config: NotificationsConfig,
        events_file: Path,
        offset_file: Path,
        dead_letter_file: Path,
        log_file: Path,
    ) -> None:
        self.config = config
        self.events_file = events_file
        self.offset_file = offset_file
        self.dead_letter_file = dead_letter_file
        self.log_file = log_file

    def _saved_offset(self) -> int:
        try:
            offset = int(self.offset_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return 0
        size = self.events_file.stat().st_size if self.events_file.is_file() else 0
        return offset if 0 <= offset <= size else 0  # a new log (fleet up again) starts from its top

    async def run(self) -> None:
        """Deliver until cancelled."""
        settle = _Settle()
        async with httpx.AsyncClient() as client:
            workers = [
                _SinkWorker(make_sink(sink, client, self.config.external_url, self.log_file), self.config,
                            self.dead_letter_file, settle)
                for sink in self.config.sinks
            ]  # fmt: skip
            tasks = [asyncio.create_task(worker.run()) for worker in workers]
            offset = saved = self._saved_offset()
            try:
                while True:
                    events, offset = await asyncio.to_thread(read_events_at, self.events_file, offset)
                    now = time.time()
                    for mark, event in events:
                        for worker in workers:
                            if worker.sink.config.takes(event.kind, event.severity):
                                settle.hold(mark)
                                for notification in worker.grouper.add(mark, event, now):
                                    worker.put(notification)
                    for worker in workers:
                        for notification in worker.grouper.due(now):
                            worker.put(notification)
                    committed = settle.committed(offset)
                    if committed != saved:
                        await asyncio.to_thread(
                            fileio.write_atomic, self.offset_file, f"{committed}\n".encode()
                        )
                        saved = committed
                    await asyncio.sleep(self.config.poll_interval_s)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
