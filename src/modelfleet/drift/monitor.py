"""The fleet's drift monitor: every `check_interval_s` per model, merge the replicas' windows and judge them.

Each replica answers `GET /v2/models/{name}/drift` with its window (a reservoir of what it served); the
monitor merges the windows of the version most replicas serve, takes the reference from a replica that has
one (a file or artifact reference with the model's outputs, or the served reference), judges the merged
window, appends every judged assessment to `drift_dir/<model>.jsonl`, turns a change of verdict into a
`drift_detected` event (firing, then resolved when a judged window no longer drifts) and hands every
assessment to its listeners (the retraining trigger). `poll_once(now)` is one round: tests drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from modelfleet import fileio
from modelfleet.config.base import load_spec
from modelfleet.config.drift import DriftConfig
from modelfleet.config.serve import ServeSpec
from modelfleet.drift.detect import assess, assessment_json
from modelfleet.drift.sampling import Window
from modelfleet.drift.types import DriftAssessment, DriftListener
from modelfleet.errors import ModelfleetError
from modelfleet.fleet.state import FleetPaths, FleetState
from modelfleet.operate.events import Event, append_event

log = logging.getLogger("modelfleet.drift")
_FETCH_TIMEOUT_S = 10.0
# The history keeps its newer half once it grows past this (one line is a few kB: months at 60 s checks).
HISTORY_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Replica:
    """A server replica the monitor may ask: its id, base URL and the models it serves."""

    id: str
    url: str
    models: tuple[str, ...]


def history_file(drift_dir: Path, model: str) -> Path:
    return drift_dir / f"{model}.jsonl"


def append_history(path: Path, assessment: DriftAssessment, max_bytes: int = HISTORY_MAX_BYTES) -> None:
    """One JSON line per judged assessment (O_APPEND, one write); past `max_bytes` the older half goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(assessment_json(assessment), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > max_bytes:
        data = path.read_bytes()
        cut = data.find(b"\n", len(data) // 2) + 1
        fileio.write_atomic(path, data[cut:])


def read_history(path: Path) -> list[dict[str, Any]]:
    """The judged assessments of a model, oldest first; an unreadable line is skipped."""
    if not path.is_file():
        return []
    found = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            document = orjson.loads(line)
            if isinstance(document, dict):
                found.append(document)
    return found


class DriftMonitor:
    """Judges every sampling model of a fleet from its replicas' windows; see the module docstring."""

    def __init__(
        self,
        fleet: str,
        configs: dict[str, DriftConfig],
        replicas: Callable[[], list[Replica]],
        drift_dir: Path,
        events_file: Path,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.fleet = fleet
        self.configs = {name: config for name, config in configs.items() if config.sampling}
        self.replicas = replicas
        self.drift_dir = drift_dir
        self.events_file = events_file
        self.client = client
        self.listeners: list[DriftListener] = []
        self._next_check: dict[str, float] = {}
        self._firing: set[str] = set()
        self._references: dict[tuple[str, str], Window] = {}

    def add_listener(self, listener: DriftListener) -> None:
        self.listeners.append(listener)

    @property
    def tick_s(self) -> float:
        """How often `run` calls `poll_once`: the shortest check interval (at most 5 s)."""
        return min([5.0, *(config.check_interval_s for config in self.configs.values())])

    async def run(self, client: httpx.AsyncClient) -> None:
        self.client = client
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.poll_once(loop.time())
            except Exception:  # one bad round must not end the monitor (nor the supervisor it runs in)
                log.exception("drift monitor round failed")
            await asyncio.sleep(self.tick_s)

    async def poll_once(self, now: float) -> list[DriftAssessment]:
        """Judge each model whose check is due at `now` (monotonic seconds); its assessments, judged or not."""
        made = []
        for model, config in self.configs.items():
            if now < self._next_check.get(model, -math.inf):
                continue
            self._next_check[model] = now + config.check_interval_s
            assessment = await self.check(model, config)
            self.record(assessment)
            made.append(assessment)
        return made

    async def check(self, model: str, config: DriftConfig) -> DriftAssessment:
        replicas = [r for r in self.replicas() if model in r.models]
        documents = await asyncio.gather(*(self._fetch(r, model, reference=False) for r in replicas))
        answered = [
            (r, d) for r, d in zip(replicas, documents, strict=True) if d is not None and d.get("sampling")
        ]
        if not answered:
            why = "no replica answered its drift window" if replicas else "no replica serves it"
            return DriftAssessment(model, None, 0, 0, judged=False, drifted=False, reason=why)
        version = Counter(str(d["version"]) for _, d in answered).most_common(1)[0][0]
        current = [(r, d) for r, d in answered if str(d["version"]) == version]
        window = Window.concat(Window.from_json(d.get("window") or {}) for _, d in current)
        reference = await self._reference(model, version, current)
        numeric = int(version) if version.isdigit() else None
        if reference is None:
            notes = {str(d.get("reference", {}).get("note") or "") for _, d in current} - {""}
            why = "; ".join(sorted(notes)) or f"no replica has its {config.reference.source} reference yet"
            return DriftAssessment(model, numeric, len(window), 0, judged=False, drifted=False, reason=why)
        assessment = await asyncio.to_thread(assess, model, numeric, reference, window, config)
        details = {**assessment.details, "replicas": [r.id for r, _ in current]}
        return DriftAssessment(
            assessment.model,
            assessment.version,
            assessment.window_items,
            assessment.reference_items,
            assessment.judged,
            assessment.drifted,
            assessment.reason,
            assessment.findings,
            assessment.at,
            details,
        )

    async def _reference(
        self, model: str, version: str, current: list[tuple[Replica, dict[str, Any]]]
    ) -> Window | None:
        cached = self._references.get((model, version))
        if cached is not None:
            return cached
        for replica, document in current:
            if not document.get("reference", {}).get("ready"):
                continue
            full = await self._fetch(replica, model, reference=True)
            if full is not None and full.get("reference_window"):
                reference = Window.from_json(full["reference_window"])
                # Keep only the current version's: a promotion starts over with the new one's reference.
                self._references = {k: v for k, v in self._references.items() if k[0] != model}
                self._references[(model, version)] = reference
                return reference
        return None

    async def _fetch(self, replica: Replica, model: str, reference: bool) -> dict[str, Any] | None:
        if self.client is None:
            raise RuntimeError("DriftMonitor needs an httpx client (run() or the constructor gives it)")
        query = "window=0&reference=1" if reference else "window=1"
        try:
            response = await self.client.get(
                f"{replica.url}/v2/models/{model}/drift?{query}", timeout=_FETCH_TIMEOUT_S
            )
        except (httpx.HTTPError, OSError):
            return None
        if response.status_code != 200:
            return None
        try:
            document = response.json()
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def record(self, assessment: DriftAssessment) -> None:
        """History (judged only), the drift_detected event on a change of verdict, then every listener."""
        model = assessment.model
        with contextlib.suppress(OSError):  # a full disk must not stop the supervisor this runs in
            if assessment.judged:
                append_history(history_file(self.drift_dir, model), assessment)
            if assessment.judged and assessment.drifted and model not in self._firing:
                self._firing.add(model)
                append_event(self.events_file, self._event(assessment, "firing"))
            elif assessment.judged and not assessment.drifted and model in self._firing:
                self._firing.discard(model)
                append_event(self.events_file, self._event(assessment, "resolved"))
        for listener in self.listeners:
            try:
                listener.on_assessment(assessment)
            except Exception:  # a listener's bug must not stop drift checks
                log.exception("drift listener %r failed", listener)

    def _event(self, assessment: DriftAssessment, status: str) -> Event:
        drifted = [f.name for f in assessment.findings if f.drifted]
        summary = (
            f"{assessment.model}: {assessment.reason}"
            if status == "firing"
            else f"{assessment.model}: no drift any more ({assessment.reason})"
        )
        return Event(
            kind="drift_detected",
            severity="warning",
            fleet=self.fleet,
            summary=summary,
            key=f"drift_detected:{assessment.model}",
            status="firing" if status == "firing" else "resolved",
            model=assessment.model,
            details={
                "version": assessment.version,
                "window_items": assessment.window_items,
                "reference_items": assessment.reference_items,
                "drifted": drifted,
            },
            at=assessment.at,
        )


def for_fleet(paths: FleetPaths, state: FleetState) -> DriftMonitor:
    """A local fleet's monitor: the models' drift settings from the replicas' serve specs, the replicas
    from the supervisor's live state (only those up and ready are asked)."""
    configs: dict[str, DriftConfig] = {}
    for record in state.processes:
        spec_file = paths.specs_dir / f"{record.id}.yaml"
        if record.kind != "server" or not spec_file.is_file():
            continue
        try:
            models = load_spec(spec_file, ServeSpec).models
        except ModelfleetError as exc:  # the server itself reports a bad spec; drift just skips it
            log.warning("drift monitor: %s", exc.message)
            continue
        for model in models:
            if model.name is not None:
                configs.setdefault(model.name, model.drift)

    def replicas() -> list[Replica]:
        return [
            Replica(r.id, r.url, tuple(r.models))
            for r in state.processes
            if r.kind == "server" and r.pid is not None and r.state == "ready"
        ]

    return DriftMonitor(state.fleet, configs, replicas, paths.drift_dir, paths.events_file)
