"""Run a serve spec: one process, or N worker processes sharing the port with SO_REUSEPORT.

SIGTERM makes readiness false at once, lets in-flight requests finish (up to graceful_shutdown_s),
then exits 0 — what Kubernetes expects of a pod being replaced.

With N workers the parent restarts a worker that exits, after the shared back-off of
`modelfleet.supervision` (`WORKER_RESTARTS`); a worker that fails with a permanent error (bad spec,
missing or corrupt model) stops the pool, and the parent exits with the worker's exit code.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from modelfleet.config.serve import ServeSpec
from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.fileio import write_atomic
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http_limits import HeadLimits, protocol_class
from modelfleet.server.metrics import mark_worker_dead
from modelfleet.supervision import GiveUp, RestartPolicy

log = logging.getLogger("modelfleet.server")
# A worker restart takes its models' load time on top of this; the cap stays short because the pod is
# not ready (every worker reports ready only when all are) until the worker is back.
WORKER_RESTARTS = RestartPolicy(initial_s=0.5, max_s=10.0, stable_after_s=60.0)


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _Result:
    def __init__(self) -> None:
        self.error: ModelfleetError | None = None


class _WorkerSlots:
    """One shared byte per worker process: 1 once its models are loaded, 0 while (re)starting.

    With SO_REUSEPORT the kernel hands each new connection to any worker, so a probe answered by a
    loaded worker says nothing of the others: every worker reports ready only when all of them are.
    """

    def __init__(self, flags: Any, index: int) -> None:
        self._flags = flags
        self._index = index

    def mark(self, loaded: bool) -> None:
        self._flags[self._index] = 1 if loaded else 0

    def all_loaded(self) -> bool:
        return all(self._flags)


def _run_uvicorn(
    spec: ServeSpec,
    sock: socket.socket,
    on_started: Callable[[], None] | None = None,
    slots: _WorkerSlots | None = None,
    metrics_dir: Path | None = None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> _Result:
    import prometheus_client

    from modelfleet.server.app import create_app

    # `_created` series double the exposition and no dashboard uses them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

    result = _Result()
    server_box: list[uvicorn.Server] = []

    def on_fatal(error: ModelfleetError) -> None:
        result.error = error
        if server_box:
            server_box[0].should_exit = True

    app = create_app(
        spec,
        on_fatal=on_fatal,
        peers_ready=slots.all_loaded if slots is not None else None,
        metrics_dir=metrics_dir,
    )
    limits = spec.server
    config = uvicorn.Config(
        app,
        # uvicorn's httptools protocol plus the head limits and timeouts it lacks (see http_limits).
        http=protocol_class(
            HeadLimits(
                max_url_bytes=limits.max_url_bytes,
                max_header_bytes=limits.max_header_bytes,
                max_headers=limits.max_headers,
                header_timeout_s=limits.header_timeout_s,
                max_connections=limits.max_connections,
            )
        ),
        ws="none",
        timeout_keep_alive=limits.keep_alive_timeout_s,  # type: ignore[arg-type]
        lifespan="on",
        access_log=spec.server.access_log,
        log_level="warning",
        timeout_graceful_shutdown=int(spec.server.graceful_shutdown_s) or None,
        ssl_certfile=str(spec.server.tls_cert_file) if spec.server.tls_cert_file else None,
        ssl_keyfile=str(spec.server.tls_key_file) if spec.server.tls_key_file else None,
        backlog=4096,
        server_header=False,
        date_header=False,
    )
    server = _DrainingServer(config, app.dataplane)
    server_box.append(server)
    sock.listen(4096)

    async def main() -> None:
        grpc_front = await _start_grpc(spec, app, reuse_port=slots is not None)
        if grpc_front is not None and on_grpc_listening is not None:
            on_grpc_listening(grpc_front.port)
        watcher = asyncio.get_running_loop().create_task(
            _announce_when_started(server, on_started, app.dataplane, slots)
        )
        await server.serve(sockets=[sock])
        watcher.cancel()
        if grpc_front is not None:  # uvicorn has drained HTTP; gRPC calls still running get the same grace
            await grpc_front.stop(spec.server.graceful_shutdown_s)
        if slots is not None:
            slots.mark(False)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(main())
    return result


async def _start_grpc(spec: ServeSpec, app: Any, reuse_port: bool) -> Any:
    """The server's gRPC port (server.grpc_port), started on this event loop; None when it has none."""
    if spec.server.grpc_port is None:
        return None
    from modelfleet.server.grpc_service import grpc_front, tls_pair

    front = grpc_front(app, spec.server, reuse_port)
    front.bind(spec.server.host, spec.server.grpc_port, tls_pair(spec.server))
    await front.start()
    return front


async def _announce_when_started(
    server: Any, on_started: Callable[[], None] | None, dataplane: DataPlane, slots: _WorkerSlots | None
) -> None:
    while not server.started:
        await asyncio.sleep(0.01)
    if on_started is not None:
        on_started()
    if slots is not None:
        await dataplane.wait_loaded()
        slots.mark(dataplane.load_error is None)


class _DrainingServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM turns readiness off, drains, and exits 0.

    uvicorn re-raises a caught SIGTERM after shutdown, so the process would die "killed by signal";
    a drained shutdown is a clean one, and Kubernetes and supervisors should see exit code 0.
    """

    def __init__(self, config: uvicorn.Config, dataplane: DataPlane) -> None:
        super().__init__(config)
        self._dataplane = dataplane

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._dataplane.draining = True
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(
    spec: ServeSpec,
    on_listening: Callable[[str, int], None] | None = None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT. Returns the process exit code.

    ``on_grpc_listening`` gets the gRPC port (server.grpc_port; a free one for 0) once it listens."""
    if spec.server.workers == 1:
        sock = bind_socket(spec.server.host, spec.server.port, reuse_port=False)
        port = sock.getsockname()[1]

        def started() -> None:
            if on_listening is not None:
                on_listening(spec.server.host, port)

        result = _run_uvicorn(spec, sock, started, on_grpc_listening=on_grpc_listening)
        if result.error is not None:
            raise result.error
        return 0
    return _serve_workers(spec, on_listening, on_grpc_listening)


def _worker_main(spec_json: str, port: int, loaded_flags: Any, index: int, metrics_dir: str) -> None:
    logging.basicConfig(level=logging.WARNING, format="modelfleet[%(process)d]: %(message)s")
    spec = ServeSpec.model_validate_json(spec_json)
    sock = bind_socket(spec.server.host, port, reuse_port=True)
    result = _run_uvicorn(spec, sock, slots=_WorkerSlots(loaded_flags, index), metrics_dir=Path(metrics_dir))
    if result.error is not None:
        sys.stderr.write(f"error: {result.error.message}\n")
        sys.exit(result.error.exit_code)
    sys.exit(0)


@dataclass
class _Worker:
    """One worker slot of the pool: its process (None while waiting to restart) and restart count."""

    process: BaseProcess | None
    failures: int = 0
    ready_since: float | None = None  # monotonic time its loaded flag was first seen set
    restart_at: float = 0.0


def _serve_workers(
    spec: ServeSpec,
    on_listening: Callable[[str, int], None] | None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> int:
    # The parent holds the port (bound, never listening) so `port: 0` resolves once for every worker.
    reservation = bind_socket(spec.server.host, spec.server.port, reuse_port=True)
    port = reservation.getsockname()[1]
    # The gRPC port likewise: every worker's grpcio server joins it with SO_REUSEPORT.
    grpc_reservation = None
    if spec.server.grpc_port is not None:
        grpc_reservation = bind_socket(spec.server.host, spec.server.grpc_port, reuse_port=True)
        spec = spec.model_copy(
            update={"server": spec.server.model_copy(update={"grpc_port": grpc_reservation.getsockname()[1]})}
        )
    # Every worker writes its metrics into one folder and /metrics merges them. prometheus_client picks
    # its file-backed values from PROMETHEUS_MULTIPROC_DIR when a process imports it (its only switch),
    # so the workers inherit the variable; the folder itself reaches them as an argument.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    own_metrics_dir = not metrics_dir
    if own_metrics_dir:
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelfleet-metrics-")

    context = multiprocessing.get_context("spawn")
    spec_json = spec.model_dump_json()
    # A plain flag, not a threading.Event: Event.set() takes the Event's non-reentrant lock, and a signal handler
    # runs in the main thread, which may hold that very lock inside Event.wait(): the parent then hangs forever.
    stopping: list[int] = []
    loaded_flags = context.RawArray("b", spec.server.workers)

    def start_worker(index: int) -> BaseProcess:
        loaded_flags[index] = 0
        process = context.Process(
            target=_worker_main, args=(spec_json, port, loaded_flags, index, metrics_dir), daemon=False
        )
        process.start()
        return process

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers = [_Worker(start_worker(index)) for index in range(spec.server.workers)]
    if on_listening is not None:
        on_listening(spec.server.host, port)
    if on_grpc_listening is not None and spec.server.grpc_port is not None:
        on_grpc_listening(spec.server.grpc_port)
    exit_code = 0
    try:
        while not stopping:
            exit_code = _tend_workers(workers, loaded_flags, start_worker, Path(metrics_dir))
            if exit_code:
                break
            time.sleep(0.2)
    finally:
        running = [worker.process for worker in workers if worker.process is not None]
        for process in running:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + spec.server.graceful_shutdown_s + 5
        for process in running:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reservation.close()
        if grpc_reservation is not None:
            grpc_reservation.close()
        if own_metrics_dir:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return exit_code


def _tend_workers(
    workers: list[_Worker], loaded_flags: Any, start_worker: Callable[[int], BaseProcess], metrics_dir: Path
) -> int:
    """One pass of the pool's supervision: restart what is due, note exits. Returns an exit code to stop with, or 0."""
    now = time.monotonic()
    for index, worker in enumerate(workers):
        process = worker.process
        if process is None:
            if now >= worker.restart_at:
                worker.process, worker.ready_since = start_worker(index), None
            continue
        if process.is_alive():
            if worker.ready_since is None and loaded_flags[index]:
                worker.ready_since = now
            continue
        loaded_flags[index] = 0  # a killed worker cannot clear its own flag
        mark_worker_dead(process.pid or 0, metrics_dir)
        code = process.exitcode
        uptime_s = 0.0 if worker.ready_since is None else now - worker.ready_since
        decision = WORKER_RESTARTS.after_exit(
            None if code is None or code < 0 else code, uptime_s, worker.failures
        )
        if isinstance(decision, GiveUp):
            log.error(
                "worker %d exited with code %d, which a restart cannot mend; stopping", process.pid, code
            )
            return decision.exit_code
        log.warning("worker %d exited with code %s; restarting in %.1fs", process.pid, code, decision.delay_s)
        worker.process, worker.failures = None, decision.failures
        worker.restart_at = now + decision.delay_s
    return 0


def write_port_file(path: Path, port: int) -> None:
    write_atomic(path, f"{port}\n".encode())
