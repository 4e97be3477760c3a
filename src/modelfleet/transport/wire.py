"""HTTP/1.1 messages as the router and the pool pass them: raw byte headers, whole bodies, pre-joined writes.

Bodies are never decoded here: the router forwards the exact bytes it received, with only hop-by-hop
headers replaced (RFC 9110 §7.6.1). A message costs one join of byte strings to encode.
"""

from __future__ import annotations

from http import HTTPStatus

# Headers that describe one connection, not the message; whoever writes the message writes its own.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
Headers = list[tuple[bytes, bytes]]
JSON_HEADERS: Headers = [(b"Content-Type", b"application/json")]
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("latin-1") for status in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")


def encode_response(
    status: int, headers: Headers, body: bytes, keep_alive: bool, head: bool = False
) -> bytes:
    parts = [status_line(status)]
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"Content-Length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)


# A request to send: one buffer, or a head and a large body written one after the other (no copy).
Body = bytes | bytearray
Payload = bytes | tuple[bytes, Body]
# Bodies from this size on are not joined to their head: a join copies the body, and with the copy the
# router's peak memory for one large request was three times its size (measured with a 20 MB body).
SEPARATE_BODY_BYTES = 64 * 1024


def encode_request(method: bytes, target: bytes, host: bytes, headers: Headers, body: Body) -> Payload:
    parts: list[Body] = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
    if len(body) >= SEPARATE_BODY_BYTES:
        return b"".join(parts), body
    parts.append(body)
    return b"".join(parts)


def find_header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case); the length check first skips most names without lowering."""
    size = len(name)
    for key, value in headers:
        if len(key) == size and key.lower() == name:
            return value
    return None


class Request:
    """One parsed client request. ``target`` is the raw request target (path and query)."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "target")

    def __init__(self, method: bytes, target: bytes, headers: Headers, body: Body, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        query_at = target.find(b"?")
        self.path = (target if query_at < 0 else target[:query_at]).decode("latin-1")
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        return find_header(self.headers, name)


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        return find_header(self.headers, name)
