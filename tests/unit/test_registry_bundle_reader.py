"""The bounded member reader stops at the index's size: not one byte more is handed on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from modelfleet.errors import IntegrityError
from modelfleet.registry.bundle import _Bounded


def test_reads_exactly_the_recorded_size() -> None:
    reader = _Bounded(io.BytesIO(b"abcdef"), 6, Path("b.tar"), "0" * 64)
    assert reader.read(4) + reader.read(4) + reader.read(4) == b"abcdef"


def test_more_bytes_than_recorded_fail_at_the_first_extra_byte() -> None:
    source = io.BytesIO(b"abcdef" + b"x" * 10_000)
    reader = _Bounded(source, 6, Path("b.tar"), "0" * 64)
    with pytest.raises(IntegrityError, match="more bytes than its index says"):
        while reader.read(1 << 20):
            pass
    assert source.tell() == 7  # it asked for at most one byte past the size
