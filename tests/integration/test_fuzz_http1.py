"""Generated request bytes against the router's HTTP/1 server protocol on a real loopback socket.

Each case is a request head built from pieces that break parsers (odd methods and targets, control
bytes in names and values, Content-Length and Transfer-Encoding in every combination, malformed chunk
framing, truncated bodies), then a half-close. Whatever arrives, the protocol answers with well-formed
HTTP/1.1 responses of a non-5xx status or closes the connection, never raises, and keeps serving.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.transport_server import LIMITS, Served

pytestmark = pytest.mark.timeout(240)

_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")
_TOKEN = st.sampled_from(
    [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PRI", b"G\x00T"]
)
_NOISE = st.binary(max_size=24)
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=24).map(
    lambda text: text.encode("utf-8")
)
_LENGTHS = st.sampled_from([b"0", b"5", b"-1", b"1e3", b" 7", b"99999999999999999999", b"4, 4", b"0x10"])
_ENCODINGS = st.sampled_from(
    [b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"CHUNKED", b"chunked "]
)
_header = st.one_of(
    st.tuples(st.just(b"Content-Length"), _LENGTHS | _NOISE),
    st.tuples(st.just(b"Transfer-Encoding"), _ENCODINGS | _NOISE),
    st.tuples(st.sampled_from([b"Host", b"Connection", b"Expect", b"Content-Type"]), _TEXT),
    st.tuples(_TEXT | _NOISE, _TEXT | _NOISE),
)
_chunked = st.lists(
    st.tuples(st.sampled_from([b"0", b"3", b"ff", b"zz", b"-1", b"3;ext=1"]), _NOISE), max_size=3
).map(lambda chunks: b"".join(size + b"\r\n" + data + b"\r\n" for size, data in chunks))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(_TOKEN | _NOISE)
    target = draw(
        st.sampled_from([b"/v2/health/ready", b"/later/x", b"*", b"http://h/x"])
        | (_TEXT.map(lambda t: b"/" + t))
    )
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b""]))
    headers = draw(st.lists(_header, max_size=6))
    separator = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    body = draw(_chunked | _NOISE)
    head = method + b" " + target + b" " + version + separator
    head += b"".join(name + b": " + value + separator for name, value in headers)
    return head + separator + body


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served(LIMITS)
    yield server
    server.close()


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def _statuses(received: bytes) -> list[int]:
    return [int(match.group(1)) for match in _STATUS_LINE.finditer(received)]


def test_generated_requests_get_well_formed_answers_or_a_close(served: Served) -> None:
    cases = 0

    @settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(requests())
    def run(data: bytes) -> None:
        nonlocal cases
        cases += 1
        received = _exchange(served.port, data)
        if received:
            assert received.startswith(b"HTTP/1.1 "), received[:200]
        assert all(status < 500 for status in _statuses(received)), received[:300]

    run()
    # The protocol is still serving: an ordinary request after every generated one is answered.
    assert _statuses(_exchange(served.port, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]
    deadline = time.monotonic() + 5
    while served.connections.open and time.monotonic() < deadline:  # every half-closed connection ends
        time.sleep(0.05)
    assert not served.connections.open
    assert cases >= 2000
