"""The per-request CSV read back: slices, outcomes, exact percentiles, event-aligned windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.bench.loadgen import CSV_HEADER
from modelfleet.bench.requestlog import latency_figures, read_request_log, read_request_logs
from modelfleet.errors import InvalidInput


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text(CSV_HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def _row(
    point: int, endpoint: str, intended: float, latency_ms: float, status: int | None, outcome: str
) -> str:
    finished = intended + latency_ms / 1000
    written = "" if outcome == "timeout" else f"{intended:.6f}"
    service = "" if outcome == "timeout" else f"{latency_ms:.3f}"
    return (
        f"{point},0,{endpoint},1,{intended:.6f},{written},{finished:.6f},{latency_ms:.3f},{service},"
        f"{status if status else ''},{outcome}"
    )


def test_reads_the_generators_columns_and_slices_them(tmp_path: Path) -> None:
    rows = [_row(0, "a", i * 0.01, 10.0 + i, 200, "ok") for i in range(100)]  # 10..109 ms
    rows += [_row(1, "a", 2.0 + i * 0.01, 1.0, 503, "http_503") for i in range(50)]
    rows += [_row(1, "b", 2.5, 10_000.0, None, "timeout")]
    log = read_request_log(_write(tmp_path / "r.csv", rows))

    assert len(log) == 151
    assert log.outcomes() == {"http_503": 50, "ok": 100, "timeout": 1}
    assert log.select(point=1, endpoint="a").outcomes() == {"http_503": 50}
    timeout = log.select(outcome="timeout")
    assert timeout.status.tolist() == [0] and timeout.written_s[0] != timeout.written_s[0]  # NaN
    ok = log.select(ok=True).latency()
    assert (ok.count, ok.p50_ms, ok.p99_ms, ok.max_ms) == (100, 59.0, 108.0, 109.0)
    # half-open intended-time ranges
    assert len(log.select(intended_from_s=0.5, intended_until_s=0.6)) == 10


def test_windows_align_to_any_start_and_count_every_outcome(tmp_path: Path) -> None:
    rows = [_row(0, "a", 10.0 + i * 0.1, 5.0 if i < 10 else 50.0, 200, "ok") for i in range(20)]
    rows += [_row(0, "a", 10.05, 0.5, 503, "http_503")]
    log = read_request_log(_write(tmp_path / "r.csv", rows))

    windows = log.windows(1.0, start_s=10.0, end_s=12.5)
    assert [(w.start_s, w.end_s) for w in windows] == [(10.0, 11.0), (11.0, 12.0), (12.0, 12.5)]
    assert windows[0].outcomes == {"http_503": 1, "ok": 10} and windows[0].ok.p99_ms == 5.0
    assert windows[1].ok.p99_ms == 50.0
    assert windows[2].ok.count == 0 and windows[2].ok.p99_ms is None
    by_finish = log.windows(1.0, start_s=10.0, end_s=12.0, by="finished")
    assert sum(sum(w.outcomes.values()) for w in by_finish) == 21


def test_several_files_concatenate_and_bad_files_are_refused(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.csv", [_row(0, "a", 0.0, 1.0, 200, "ok")])
    second = _write(tmp_path / "b.csv", [_row(0, "a", 0.0, 3.0, 200, "ok")])
    assert read_request_logs([first, second]).latency().max_ms == 3.0
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not a per-request CSV"):
        read_request_log(tmp_path / "bad.csv")
    short = tmp_path / "short.csv"
    short.write_text(CSV_HEADER + "0,0,a\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"short\.csv:2"):
        read_request_log(short)
    assert latency_figures([]).p99_ms is None
