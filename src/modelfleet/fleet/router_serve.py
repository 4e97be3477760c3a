"""The router process: listen (HTTP, and V2 gRPC when configured), serve until SIGTERM, then drain.

Kept apart from the Router itself (fleet/router.py: routing, answers, retries), which tests and the gRPC
front drive without a process around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from modelfleet.fleet.router import Router
from modelfleet.fleet.router_config import RouterSettings
from modelfleet.fleet.router_http import server_limits
from modelfleet.security.tls import server_ssl_context
from modelfleet.transport.server import Connections, ServerProtocol

_DRAIN_TIMEOUT_S = 10.0


async def serve_router(
    settings: RouterSettings,
    stop: asyncio.Event | None = None,
    on_listening: Any = None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives; then stop accepting and finish what is in flight.

    With ``settings.grpc_port`` the V2 gRPC front (fleet/router_grpc.py) shares this router's table;
    ``on_grpc_listening`` receives its port."""
    router = Router(settings)
    loop = asyncio.get_running_loop()
    connections = Connections(server_limits(settings))
    router.metrics.refusals = connections.refused
    tls = (
        None
        if settings.tls_cert_file is None or settings.tls_key_file is None
        else server_ssl_context(settings.tls_cert_file, settings.tls_key_file)
    )
    server = await loop.create_server(
        lambda: ServerProtocol(router.dispatch, connections),
        settings.host,
        settings.port,
        backlog=2048,
        reuse_address=True,
        ssl=tls,
    )
    connections.start()
    router.start()
    grpc_front = None
    if settings.grpc_port is not None:
        from modelfleet.fleet.router_grpc import RouterGrpc

        grpc_front = RouterGrpc(router)
        grpc_front.bind()
        await grpc_front.start()
        if on_grpc_listening is not None:
            on_grpc_listening(grpc_front.port)
    if on_listening is not None:
        on_listening(server.sockets[0].getsockname()[1])
    stop_event = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop_event.set)
    try:
        await stop_event.wait()
    finally:
        server.close()
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            for connection in list(connections.open):
                connection.close_if_idle()
            if not connections.open:
                break
            await asyncio.sleep(0.05)
        connections.stop()
        if grpc_front is not None:
            await grpc_front.stop(_DRAIN_TIMEOUT_S)
        await router.stop()


def run_router(
    settings: RouterSettings,
    on_listening: Callable[[int], None] | None = None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> None:
    """Blocking entry point for `modelfleet fleet router`: uvloop when installed. ``on_listening``
    receives the bound port (the one chosen for ``port: 0``) once the router accepts connections,
    ``on_grpc_listening`` the gRPC front's (``grpc_port``)."""
    main = serve_router(settings, on_listening=on_listening, on_grpc_listening=on_grpc_listening)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
    else:
        uvloop.run(main)
