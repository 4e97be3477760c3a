"""What a 503 asks a closed-loop user to wait (modelfleet.bench.loadgen.retry_wait_s)."""

from __future__ import annotations

import pytest

from modelfleet.bench.loadgen import retry_wait_s
from modelfleet.transport.wire import Response


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (
            [(b"Retry-After", b"1")],
            b'{"error": "x", "retry_after_s": 0.0042}',
            0.0042,
        ),  # the body's precision
        ([(b"Retry-After", b"2")], b'{"error": "x"}', 2.0),  # the header's seconds
        ([(b"retry-after", b"0.25")], b"", 0.25),  # gRPC's retry-after-ms, as the bench's gRPC pool passes it
        ([(b"Retry-After", b"120")], b"", 5.0),  # capped
        ([(b"Retry-After", b"Wed, 21 Oct 2026 07:28:00 GMT")], b"", 0.0),  # a date: not waited for
        ([], b'{"retry_after_s": -3}', 0.0),
        ([], b'{"retry_after_s": 1e999}', 0.0),
        ([], b"not json", 0.0),
    ],
)
def test_retry_wait_reads_the_body_then_the_header_within_the_cap(
    headers: list[tuple[bytes, bytes]], body: bytes, expected: float
) -> None:
    assert retry_wait_s(Response(503, headers, body), max_wait_s=5.0) == pytest.approx(expected)
