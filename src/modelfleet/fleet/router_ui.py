"""The router's dashboard: /ui, /ui/data and /ui/reports/NAME (observe/ui.py) for the whole fleet.

Each /ui/data poll gathers the router's own figures (requests, errors, latency per model, what clients
saw), a local fleet's state folder (processes, restarts, SLOs, the event log, read in a worker thread so
the event loop never waits on the disk) and each ready replica's /ui/data (queue wait, and memory when
there is no state folder), fetched with the caller's own key on the control pools, in parallel, each
within `ui.replica_timeout_s`: a slow replica costs its figures, never the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson

from modelfleet.config.operate import OperateSettings
from modelfleet.errors import ModelfleetError
from modelfleet.fleet.router_config import RouterSettings
from modelfleet.fleet.router_http import error_response, refusal
from modelfleet.fleet.routing import RoutingTable
from modelfleet.fleet.state import FleetPaths, read_state
from modelfleet.fleet.status import recent_events
from modelfleet.observe.ui import refused_page, ui_answer, ui_credentials
from modelfleet.observe.ui_data import (
    FleetInputs,
    ModelCounters,
    ServerFigures,
    event_rows,
    fleet_document,
    latest_reports,
    process_figures,
)
from modelfleet.security.auth import Authorizer, authorize_off_loop
from modelfleet.transport.client import FetchPool
from modelfleet.transport.server import Answer, internal_error
from modelfleet.transport.wire import Request, Response, encode_request

_LocalInputs = tuple[list[dict[str, Any]], dict[str, Any], list[Any], dict[str, Any], list[dict[str, Any]]]


def _local_inputs(settings: RouterSettings) -> _LocalInputs:
    """(process records, SLO per model, recent events, memory per process, report links): the disk's part."""
    reports = latest_reports(settings.ui.reports_dir)
    if settings.state_dir is None:
        return [], {}, [], {}, reports
    paths = FleetPaths(settings.state_dir)
    records = (
        [record.model_dump() for record in read_state(paths).processes] if paths.state_file.is_file() else []
    )
    objectives: dict[str, Any] = {}
    if paths.operate_file.is_file():
        operate = OperateSettings.model_validate_json(paths.operate_file.read_bytes())
        objectives = {objective.name: objective.model_dump() for objective in operate.models}
    events = [asdict(event) for event in recent_events(paths.events_file, settings.ui.max_events)]
    memory = {str(record["id"]): process_figures(record.get("pid")) for record in records}
    return records, objectives, events, memory, reports


def _replica_figures(body: bytes) -> ServerFigures | None:
    try:
        document = orjson.loads(body)
        figures = ServerFigures()
        for model in document["models"]:
            figures.models[str(model["name"])] = ModelCounters(
                queue_sum_s=float(model["queue_sum_s"]), queue_count=int(model["queue_count"])
            )
        process = document["processes"][0]
        figures.resident_memory_bytes = process.get("rss_bytes")
        uptime_s = process.get("uptime_s")
        figures.start_time_unix = None if uptime_s is None else float(document["at"]) - float(uptime_s)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None  # an older server, or not ours: shown without its figures
    return figures


class RouterDashboard:
    def __init__(
        self,
        settings: RouterSettings,
        table: RoutingTable,
        status: Callable[[], dict[str, Any]],
        control_pools: dict[str, FetchPool],
        hosts: dict[str, bytes],
        auth: Authorizer | None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.status = status
        self.control_pools = control_pools
        self.hosts = hosts
        self.auth = auth
        self._tasks: set[asyncio.Task[Response]] = set()

    def handle(self, request: Request, answer: Answer) -> None:
        """Answer a GET under /ui later (a key check, files and replicas to read)."""
        task = asyncio.get_running_loop().create_task(self._respond(request))
        self._tasks.add(task)

        def done(finished: asyncio.Task[Response]) -> None:
            self._tasks.discard(finished)
            if finished.cancelled():
                answer(error_response(503, "the router is shutting down", self.settings.retry_after_s))
            elif (exc := finished.exception()) is not None:
                answer(internal_error(exc))
            else:
                answer(finished.result())

        task.add_done_callback(done)

    def _credentials(self, request: Request) -> str | None:
        def text(name: bytes) -> str | None:
            value = request.header(name)
            return None if value is None else value.decode("latin-1")

        return ui_credentials(text(b"authorization"), text(b"x-api-key"), text(b"cookie"))

    async def _respond(self, request: Request) -> Response:
        path = request.path
        credentials = self._credentials(request)
        if self.auth is not None:
            try:
                await authorize_off_loop(self.auth, credentials, "read")
            except ModelfleetError as exc:
                if path.rstrip("/") != "/ui":
                    return refusal(exc)
                status, headers, body = refused_page(exc)
                return Response(status, headers, body)
        try:
            status, headers, body = await ui_answer(
                path, lambda: self._data(credentials), self.settings.ui.reports_dir
            )
        except ModelfleetError as exc:
            return error_response(exc.http_status, exc.message)
        return Response(status, headers, body)

    async def _data(self, credentials: str | None) -> dict[str, Any]:
        ui = self.settings.ui
        status = self.status()
        local = asyncio.to_thread(_local_inputs, self.settings)
        ready = [replica for replica in self.table.replicas if replica.ready]
        fetched = await asyncio.gather(local, *(self._replica(r.name, credentials) for r in ready))
        (records, objectives, events, memory, reports), answers = fetched[0], fetched[1:]
        figures = {
            replica.name: found for replica, found in zip(ready, answers, strict=True) if found is not None
        }
        if not records:  # no state folder (Kubernetes): the replicas the router knows, as they answered
            for replica in self.table.replicas:
                found = figures.get(replica.name)
                records.append(
                    {
                        "id": replica.name,
                        "kind": "server",
                        "state": "ready" if replica.ready else "unready",
                        "models": list(replica.models),
                        "started_at": None if found is None else found.start_time_unix,
                    }
                )
                if found is not None:
                    memory[replica.name] = (found.resident_memory_bytes, found.start_time_unix)
        inputs = FleetInputs(
            fleet=self.settings.fleet,
            status=status,
            processes=records,
            objectives=objectives,
            replica_figures=figures,
            events=event_rows(events),
            reports=reports,
            memory=memory,
        )
        return fleet_document(inputs, ui.refresh_s)

    async def _replica(self, name: str, credentials: str | None) -> ServerFigures | None:
        headers = [] if credentials is None else [(b"Authorization", credentials.encode("latin-1"))]
        if credentials is not None and not credentials.lower().startswith(("bearer ", "basic ")):
            headers = [(b"X-API-Key", credentials.encode("latin-1"))]
        data = encode_request(b"GET", b"/ui/data", self.hosts[name], headers, b"")
        status, response = await self.control_pools[name].fetch(data, self.settings.ui.replica_timeout_s)
        if status != 200 or response is None:
            return None
        return _replica_figures(response.body)
