"""Reference HTTP servers with a known behaviour, for testing and benchmarking `modelfleet bench`.

Two kinds, both on raw asyncio + httptools (fast enough that the server is not what we measure):

- ``noop``: answers every request at once with ``200 {}``. The capacity benchmark drives it.
- ``v2``: a small Open Inference Protocol (V2) model server. ``GET /v2/models/{m}`` returns metadata;
  ``POST /v2/models/{m}/infer`` holds one lock for the whole server and sleeps ``--service-ms`` before
  answering, so capacity is exactly ``1000 / service_ms`` requests per second and the true service
  time is known. The server measures each service time itself; ``GET /stats`` returns them so tests
  compare what the client reports with what the server saw, not with a number assumed in advance.

Models: ``echo`` (BYTES ``[-1]`` input ``text``), ``vector`` (FP32 ``[1, 4]`` input ``x``) and
``flaky`` (every ``--fail-every``-th request answers 500). Unknown models answer 404.

Run it: ``python benchmarks/bench_refserver.py --kind v2 --service-ms 20 --port 0``; the first line on
stdout is ``listening PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from typing import Any

import httptools

_MODELS: dict[str, dict[str, Any]] = {
    "echo": {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "length", "datatype": "INT64", "shape": [-1]}],
    },
    "vector": {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1]}],
    },
    "flaky": {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "length", "datatype": "INT64", "shape": [-1]}],
    },
}

_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 500: b"Internal Server Error"}


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n"
        % (status, _REASONS.get(status, b"Error"), len(body), connection)
        + body
    )


_NOOP_RESPONSE = _response(200, b"{}", True)


class ServerState:
    def __init__(self, kind: str, service_s: float, fail_every: int) -> None:
        self.kind = kind
        self.service_s = service_s
        self.fail_every = fail_every
        self.lock = asyncio.Lock()
        self.service_times_s: list[float] = []
        self.requests = 0
        self.flaky_count = 0


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check here.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        self.url, self.body = b"", []
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive()
        self.state.requests += 1
        if self.state.kind == "noop":
            if self.transport is None:
                return
            self.transport.write(_NOOP_RESPONSE if keep_alive else _response(200, b"{}", False))
            if not keep_alive:
                self.transport.close()
            return
        asyncio.get_running_loop().create_task(self._handle_v2(method, url.decode(), body, keep_alive))

    async def _handle_v2(self, method: bytes, path: str, body: bytes, keep_alive: bool) -> None:
        status, payload = await _route_v2(self.state, method, path, body)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_response(status, json.dumps(payload).encode(), keep_alive))
            if not keep_alive:
                self.transport.close()


async def _route_v2(state: ServerState, method: bytes, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    parts = path.split("?")[0].strip("/").split("/")
    if parts == ["stats"]:
        times = state.service_times_s
        return 200, {
            "requests": state.requests,
            "served": len(times),
            "median_service_s": statistics.median(times) if times else None,
            "mean_service_s": statistics.fmean(times) if times else None,
        }
    if parts == ["v2", "health", "ready"]:
        return 200, {"ready": True}
    if len(parts) < 3 or parts[:2] != ["v2", "models"]:
        return 404, {"error": f"no route {path}"}
    name = parts[2]
    if name not in _MODELS:
        return 404, {"error": f"model {name!r} is not loaded"}
    rest = parts[3:]
    if len(rest) >= 2 and rest[0] == "versions":
        rest = rest[2:]
    if not rest and method == b"GET":
        return 200, {"name": name, "versions": ["1"], "platform": "reference", **_MODELS[name]}
    if rest == ["ready"]:
        return 200, {"name": name, "ready": True}
    if rest != ["infer"] or method != b"POST":
        return 405, {"error": "use POST /v2/models/{name}/infer"}
    try:
        request = json.loads(body)
        first = request["inputs"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return 400, {"error": "body is not a V2 inference request"}
    if name == "flaky":
        state.flaky_count += 1
        if state.fail_every and state.flaky_count % state.fail_every == 0:
            return 500, {"error": "flaky model failed on purpose"}
    async with state.lock:
        began = time.perf_counter()
        await asyncio.sleep(state.service_s)
        state.service_times_s.append(time.perf_counter() - began)
    rows = first.get("shape", [1])[0]
    return 200, {
        "model_name": name,
        "outputs": [
            {
                "name": _MODELS[name]["outputs"][0]["name"],
                "datatype": "INT64",
                "shape": [rows],
                "data": [1] * rows,
            }
        ],
    }


async def serve(kind: str, host: str, port: int, service_s: float, fail_every: int) -> None:
    state = ServerState(kind, service_s, fail_every)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _HttpProtocol(state), host, port, backlog=4096, reuse_address=True
    )
    bound_port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"listening {bound_port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["noop", "v2"], default="v2")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--service-ms", type=float, default=20.0, help="Service time per V2 infer request.")
    parser.add_argument("--fail-every", type=int, default=0, help="The flaky model fails every N-th request.")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the server also runs without it
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.kind, args.host, args.port, args.service_ms / 1000.0, args.fail_every))


if __name__ == "__main__":
    main()
