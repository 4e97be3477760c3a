"""Log reading for `fleet logs`: tails from the end of big files, following appended text."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.fleet.status import follow_file, tail_lines


def test_tail_reads_only_the_last_lines_even_across_read_blocks(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i} " + "x" * 100 + "\n" for i in range(5000)), encoding="utf-8")
    last = tail_lines(log, 3)
    assert [line.split()[1] for line in last] == ["4997", "4998", "4999"]
    assert tail_lines(log, 0) == []
    assert tail_lines(tmp_path / "missing.log", 5) == []


@pytest.mark.timeout(10)
def test_follow_yields_what_is_appended_and_restarts_after_truncation(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old\n", encoding="utf-8")
    follower = follow_file(log, poll_s=0.01)
    with log.open("a", encoding="utf-8") as handle:
        handle.write("new 1\n")
    assert next(follower) == "new 1\n"
    log.write_text("r\n", encoding="utf-8")  # replaced by something shorter
    assert next(follower) == "r\n"
