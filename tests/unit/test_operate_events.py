"""The event log: one line per event, read back in order, followed from an offset."""

from __future__ import annotations

from pathlib import Path

from modelfleet.operate.events import MAX_EVENT_LINE_BYTES, Event, append_event, read_events


def _event(n: int, **extra: object) -> Event:
    return Event(kind="replica_restarted", severity="warning", fleet="f", summary=f"e{n}", key="k", **extra)  # type: ignore[arg-type]


def test_events_are_read_back_in_order_and_followed_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "state" / "events.jsonl"
    append_event(log, _event(1))
    append_event(log, _event(2, details={"signal": "SIGKILL"}))
    events, offset = read_events(log)
    assert [e.summary for e in events] == ["e1", "e2"] and events[1].details == {"signal": "SIGKILL"}
    append_event(log, _event(3))
    with log.open("ab") as handle:
        handle.write(b'{"kind": "alert", "sev')  # a line still being written
    more, offset_after = read_events(log, offset)
    assert [e.summary for e in more] == ["e3"]
    assert read_events(log, offset_after) == ([], offset_after)


def test_a_huge_event_is_cut_to_one_bounded_line_and_garbage_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    append_event(log, _event(1, details={"blob": "x" * (2 * MAX_EVENT_LINE_BYTES)}))
    with log.open("ab") as handle:
        handle.write(b"not json\n[1, 2]\n")
    append_event(log, _event(2))
    events, _ = read_events(log)
    assert [e.summary for e in events] == ["e1", "e2"] and events[0].details == {"truncated": True}
    assert max(len(line) for line in log.read_bytes().splitlines()) < MAX_EVENT_LINE_BYTES
