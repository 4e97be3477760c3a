"""A Ctrl-C whose KeyboardInterrupt a library swallows still stops a build from publishing."""

from __future__ import annotations

import gc
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelfleet import interrupt
from modelfleet.build.atomic import staged_output


@pytest.fixture
def installed() -> Iterator[None]:
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt.install()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        interrupt.install()  # clears the flag for the tests after this one (the handler is not ours now)


class _SwallowsInterrupts:
    def __del__(self) -> None:
        # Python prints and drops any exception raised in __del__: the KeyboardInterrupt the handler
        # raises here never reaches the code that was running, as with regex's pattern cleanup in a build.
        signal.raise_signal(signal.SIGINT)


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # the swallowed one, on purpose
def test_a_swallowed_ctrl_c_stops_the_publish_and_leaves_nothing(installed: None, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), staged_output(tmp_path / "out", force=False) as stage:
        (stage / "model.onnx").write_bytes(b"half")
        _SwallowsInterrupts()
        gc.collect()
        assert interrupt.requested()  # the interrupt was swallowed, and the build went on
    assert list(tmp_path.iterdir()) == []


def test_without_ctrl_c_the_output_is_published(installed: None, tmp_path: Path) -> None:
    with staged_output(tmp_path / "out", force=False) as stage:
        (stage / "model.onnx").write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert not interrupt.requested()


def test_an_ignored_sigint_stays_ignored() -> None:
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        interrupt.install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
