"""Safe rollouts on a local fleet: canary steps gated against the baseline, automatic rollback, promotion.

`run_rollout` (what `modelfleet fleet rollout` wraps) moves one fleet model, served from a registry alias
(`ref: NAME@ALIAS`), to another version of the same registry model:

1. it starts canary servers for the new version, as many as the model's group has replicas
   (operate/canary_server.py), and waits until they are ready;
2. with `shadow_percent`, a shadow step first: the router mirrors that share of the baseline's requests to
   the canary and compares answers, and clients get only the baseline's;
3. each canary step writes the router's split file (fleet/router_config.TrafficSplit) with the step's
   share, waits until the router applies it, then holds it for `interval_s`, reading the router's
   per-version figures every `gates.check_interval_s` and judging the canary's window against the
   baseline's over the same window (operate/rollout_gate.py);
4. on a breach it removes the split at once (all traffic back to the baseline), stops the canary and
   appends `rollout_rolled_back`; after the last step (100 %) it promotes: the alias moves to the new
   version (registry `promote`), the canary keeps the traffic until every fleet replica serves that
   version (their alias watch), then the split is removed and `rollout_finished` appended.

Every outcome is stored in the registry's rollout history (registry/rollouts.py) and in the fleet's state
folder (`rollouts/MODEL.json`); events go to the fleet's event log (operate/events.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelfleet.config.fleet import FleetModelConfig
from modelfleet.config.rollout import RolloutOptions
from modelfleet.config.serve import registry_root
from modelfleet.errors import Conflict, InvalidInput, ModelfleetError, NotFound, Unavailable
from modelfleet.fleet.local import resolve_fleet, supervisor_alive
from modelfleet.fleet.plan import FleetPlan
from modelfleet.fleet.router_config import CanaryRoute, TrafficSplit, read_traffic_split, write_traffic_split
from modelfleet.fleet.sizing import load_fleet_spec, plan_from_spec
from modelfleet.fleet.split import Window, window
from modelfleet.fleet.state import FleetPaths, FleetState, read_state, router_trust, write_atomic
from modelfleet.operate.canary_server import CanaryServer, start_canaries
from modelfleet.operate.events import Event, EventKind, Severity, Status, append_event
from modelfleet.operate.rollout_gate import Verdict, judge
from modelfleet.registry.models import ModelVersion, RolloutOutcome, RolloutRecord, RolloutStep
from modelfleet.registry.recording import default_actor
from modelfleet.registry.rollouts import record_rollout
from modelfleet.registry.store import Registry, utc_now
from modelfleet.types import ModelRef, Progress

_HTTP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RolloutTarget:
    """What a rollout was asked to do, resolved and checked: no side effect has happened yet."""

    paths: FleetPaths
    state: FleetState
    plan: FleetPlan
    model: FleetModelConfig
    registry: Registry
    alias: str
    baseline: ModelVersion
    target: ModelVersion


def prepare_rollout(
    fleet: str | Path,
    model: str,
    to_ref: str,
    *,
    state_root: Path | None = None,
    registry_dir: Path | None = None,
) -> RolloutTarget:
    """Check the request against the running fleet and the registry (one clear error for each mistake)."""
    paths = resolve_fleet(fleet, state_root)
    state = read_state(paths)
    if not supervisor_alive(state, paths) or state.status != "running":
        raise Unavailable(
            f"fleet {state.fleet} is not running (status {state.status}); start it with `fleet up`"
        )
    plan = plan_from_spec(load_fleet_spec(Path(state.spec_path)))
    config = next((entry for entry in plan.fleet.models if entry.name == model), None)
    if config is None:
        known = ", ".join(entry.name for entry in plan.fleet.models)
        raise NotFound(f"model {model!r} is not in fleet {state.fleet} (models: {known})")
    current = None if config.ref is None else ModelRef.parse(config.ref)
    if current is None or current.alias is None:
        raise InvalidInput(
            f"model {model!r} is served from {config.path or config.ref}; a rollout moves a registry alias, so "
            "serve the model as `ref: NAME@ALIAS` (e.g. NAME@production)"
        )
    try:
        wanted = ModelRef.parse(to_ref)
    except ValueError as exc:
        raise InvalidInput(f"--to: {exc}") from None
    registry = Registry(registry_root(registry_dir), create=False)
    baseline = registry.get(str(current))
    target = registry.get(str(wanted))
    if target.name != baseline.name:
        raise InvalidInput(
            f"--to {to_ref} is a version of {target.name!r}, but fleet model {model!r} serves registry model "
            f"{baseline.name!r}; give {baseline.name}:VERSION or {baseline.name}@ALIAS"
        )
    if target.version == baseline.version:
        raise Conflict(f"{current} already points at version {target.version}: nothing to roll out")
    return RolloutTarget(paths, state, plan, config, registry, current.alias, baseline, target)


class _Router:
    """The router's /fleet/status, read for one model's split figures."""

    def __init__(self, paths: FleetPaths, state: FleetState, api_key: str | None) -> None:
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._client = httpx.Client(headers=headers, timeout=_HTTP_TIMEOUT_S, verify=router_trust(paths))
        self._url = f"{state.router_url}/fleet/status"
        self.headers = headers

    def split(self, model: str) -> dict[str, Any] | None:
        split = self.status().get("splits", {}).get(model)
        return split if isinstance(split, dict) else None

    def ready_replicas(self, model: str) -> int:
        """How many of the fleet's own replicas of ``model`` the router sees ready."""
        return int(self.status().get("models", {}).get(model, {}).get("ready_replicas", 0))

    def status(self) -> dict[str, Any]:
        try:
            response = self._client.get(self._url)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the fleet's router did not answer {self._url}: {exc}") from None
        if response.status_code in (401, 403):
            raise InvalidInput(
                f"the router refused its figures (HTTP {response.status_code}): a rollout needs an API key with "
                "the read scope (--api-key or MODELFLEET_API_KEY)"
            )
        if response.status_code != 200:
            raise Unavailable(f"the fleet's router answered {self._url} with HTTP {response.status_code}")
        document = response.json()
        return document if isinstance(document, dict) else {}

    def close(self) -> None:
        self._client.close()


class _Rollout:
    """One rollout's run: state the steps share (router, canary, split file, events, the record so far)."""

    def __init__(
        self, job: RolloutTarget, options: RolloutOptions, actor: str, router: _Router, report: Progress
    ):
        self.job, self.options, self.gates = job, options, options.gates
        self.actor, self.router, self.report = actor, router, report
        self.id = uuid.uuid4().hex[:12]
        self.steps: list[RolloutStep] = []
        self.canaries: list[CanaryServer] = []
        self.first: dict[str, Any] | None = None  # the split's figures when the first step began
        self.last_baseline: Window | None = None  # the baseline's window in the last step that had one
        self.shadow: dict[str, Any] | None = None
        self.name = job.model.name

    # events and the split -------------------------------------------------------------------------

    def event(self, kind: EventKind, severity: Severity, summary: str, **details: Any) -> None:
        status: Status = "resolved" if kind == "rollout_finished" else "firing"
        append_event(
            self.job.paths.events_file,
            Event(
                kind=kind,
                severity=severity,
                fleet=self.job.state.fleet,
                summary=summary,
                key=f"rollout/{self.job.state.fleet}/{self.name}/{self.id}",
                status=status,
                model=self.name,
                details={
                    "rollout": self.id,
                    "from_version": self.job.baseline.version,
                    "to_version": self.job.target.version,
                    **details,
                },
            ),
        )

    def set_split(self, canary_percent: float, shadow_percent: float) -> None:
        route = CanaryRoute(
            model=self.name,
            baseline_version=str(self.job.baseline.version),
            canary_version=str(self.job.target.version),
            canary_percent=canary_percent,
            shadow_percent=shadow_percent,
            upstreams=[canary.upstream for canary in self.canaries],
        )
        self._write([*self._other_routes(), route])
        self._wait_applied(
            lambda split: (
                split is not None
                and split["canary_percent"] == canary_percent
                and split["shadow_percent"] == shadow_percent
            )
        )

    def clear_split(self) -> None:
        """All traffic back to the fleet's own replicas: the route goes, the router stops using the canary."""
        self._write(self._other_routes())
        self._wait_applied(lambda split: split is None)

    def _other_routes(self) -> list[CanaryRoute]:
        with contextlib.suppress(ModelfleetError):
            return [r for r in read_traffic_split(self.job.paths.split_file).routes if r.model != self.name]
        return []

    def _write(self, routes: list[CanaryRoute]) -> None:
        write_traffic_split(TrafficSplit(routes=routes), self.job.paths.split_file)

    def _wait_applied(self, applied: Any) -> None:
        deadline = time.monotonic() + self.gates.apply_timeout_s
        while not applied(self.router.split(self.name)):
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"the router did not apply the traffic split within {self.gates.apply_timeout_s:g} s "
                    "(gates.apply_timeout_s); see `modelfleet fleet logs FLEET -p router`"
                )
            time.sleep(0.05)

    # steps ---------------------------------------------------------------------------------------

    def hold(
        self, phase: str, canary_percent: float, shadow_percent: float
    ) -> tuple[RolloutStep, float | None]:
        """Hold one step; the step and, on a breach, the monotonic time the breach was seen."""
        begin = self.router.split(self.name)
        if begin is None:
            raise Unavailable("the router dropped the rollout's traffic split (was the split file changed?)")
        if self.first is None:
            self.first = begin
        started_at, start = utc_now(), time.monotonic()
        interval_s = self.options.interval_s
        while True:
            time.sleep(self.gates.check_interval_s)
            now = self.router.split(self.name)
            if now is None:
                raise Unavailable(
                    "the router dropped the rollout's traffic split (was the split file changed?)"
                )
            self.shadow = now["shadow"]
            own = baseline = window(begin["baseline"], now["baseline"])
            if own.requests < self.gates.min_requests:
                # At 100 % the baseline has no traffic: its window in the last step that had one stands in.
                baseline = self.last_baseline or window(self.first["baseline"], now["baseline"])
            canary = (
                _shadow_window(begin, now) if phase == "shadow" else window(begin["canary"], now["canary"])
            )
            verdict = judge(baseline, canary, self.gates)
            if now["canary_ready_replicas"] == 0:
                verdict = Verdict(False, "the canary has no ready replica (it crashed or stopped answering)")
            elapsed_s = time.monotonic() - start
            finished = verdict.passed is False or (verdict.passed and elapsed_s >= interval_s)
            if not finished and elapsed_s >= 2 * interval_s:
                verdict = Verdict(False, f"no verdict within twice the interval: {verdict.reason}")
                finished = True
            if finished:
                if own.requests >= self.gates.min_requests:
                    self.last_baseline = own
                step = RolloutStep(
                    phase=phase,
                    canary_percent=canary_percent,
                    shadow_percent=shadow_percent,
                    started_at=started_at,
                    duration_s=round(elapsed_s, 3),
                    baseline=_figures(baseline),
                    canary=_figures(canary),
                    verdict=verdict.reason,
                )
                return step, None if verdict.passed else time.monotonic()

    def promote(self) -> None:
        job = self.job
        job.registry.promote(
            job.target.ref,
            actor=self.actor,
            alias=job.alias,
            reason=f"rollout {self.id} through fleet {job.state.fleet}: every step passed",
        )
        self.report(
            f"{job.baseline.name}@{job.alias} → version {job.target.version}; waiting for the fleet's replicas"
        )
        wanted = str(job.target.version)
        servers = [r for r in job.state.processes if r.kind == "server" and self.name in r.models]
        deadline = time.monotonic() + self.gates.promote_timeout_s
        with httpx.Client(headers=self.router.headers, timeout=_HTTP_TIMEOUT_S) as client:
            pending = list(servers)
            while pending:
                pending = [r for r in pending if _serving(client, r.url, self.name) != wanted]
                # The canary keeps its share until the router, too, sees every switched replica ready
                # (a server reports not ready while it loads the new version beside the old).
                if not pending and self.router.ready_replicas(self.name) < len(servers):
                    pending = servers
                if pending and time.monotonic() > deadline:
                    raise Unavailable(
                        f"the alias moved to version {wanted} but {', '.join(r.id for r in pending)} did not "
                        f"serve it within {self.gates.promote_timeout_s:g} s (gates.promote_timeout_s); the "
                        "canary was stopped and the split removed: check the servers' logs"
                    )
                if pending:
                    time.sleep(0.2)


def _serving(client: httpx.Client, url: str, model: str) -> str | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
        response = client.get(f"{url}/v2/models/{model}")
        if response.status_code == 200:
            return str(response.json()["versions"][0])
    return None


def _shadow_window(begin: dict[str, Any], now: dict[str, Any]) -> Window:
    """The canary's mirrored answers in the window: a failure is an error; no latency is judged."""
    then, current = begin["shadow"], now["shadow"]
    done = (current["compared"] + current["failed"]) - (then["compared"] + then["failed"])
    return Window(requests=done, errors=current["failed"] - then["failed"], p99_s=None)


def _figures(part: Window) -> dict[str, Any]:
    return {
        "requests": part.requests,
        "errors": part.errors,
        "error_rate": round(part.error_rate, 6),
        "p99_ms": None if part.p99_s is None else round(part.p99_s * 1000, 3),
    }


@contextlib.contextmanager
def _one_rollout_per_model(paths: FleetPaths, model: str) -> Iterator[None]:
    lock_file = paths.root / "rollouts" / f"{model}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"a rollout of {model!r} is already running on this fleet") from None
        yield


def run_rollout(
    fleet: str | Path,
    model: str,
    to_ref: str,
    options: RolloutOptions | None = None,
    *,
    state_root: Path | None = None,
    registry_dir: Path | None = None,
    api_key: str | None = None,
    actor: str | None = None,
    progress: Progress | None = None,
) -> RolloutRecord:
    """Roll ``model`` of a running local fleet out to ``to_ref``; the record says how it ended.

    A breach is not an exception: the record's outcome is ``rolled_back``. Bad input, a fleet that is not
    running or a canary that never becomes ready raise (InvalidInput, NotFound, Unavailable, Conflict),
    after the fleet has been put back as it was and the attempt recorded.
    """
    options = options or RolloutOptions()
    report = progress or (lambda _line: None)
    job = prepare_rollout(fleet, model, to_ref, state_root=state_root, registry_dir=registry_dir)
    with _one_rollout_per_model(job.paths, model):
        router = _Router(job.paths, job.state, api_key)
        run = _Rollout(job, options, actor or default_actor(), router, report)
        try:
            return _run(run)
        finally:
            router.close()


def _run(run: _Rollout) -> RolloutRecord:
    job, options = run.job, run.options
    started_at, start = utc_now(), time.monotonic()
    outcome: RolloutOutcome = "failed"
    reason, rollback_s = "", None
    error: BaseException | None = None
    phases = [("shadow", 0.0)] if options.shadow_percent > 0 else []
    phases += [("canary", share) for share in options.schedule_percent]
    try:
        run.canaries = start_canaries(job.paths, job.plan, job.model, job.target.ref)
        run.event(
            "rollout_started",
            "info",
            f"rollout of {run.name} to {job.target.ref} started",
            schedule_percent=options.schedule_percent,
            shadow_percent=options.shadow_percent,
        )
        urls = ", ".join(canary.upstream.url for canary in run.canaries)
        run.report(f"canary {job.target.ref} starting on {urls}")
        for canary in run.canaries:
            canary.wait_ready(run.gates.canary_ready_timeout_s)
        for phase, share in phases:
            run.set_split(share, options.shadow_percent)
            run.report(f"{phase} step: {share:g} % to {job.target.ref}, shadow {options.shadow_percent:g} %")
            step, breach_at = run.hold(phase, share, options.shadow_percent)
            run.steps.append(step)
            if breach_at is not None:
                run.clear_split()
                rollback_s = round(time.monotonic() - breach_at, 3)
                outcome, reason = "rolled_back", step.verdict
                run.event(
                    "rollout_rolled_back",
                    "critical",
                    f"rollout of {run.name} to {job.target.ref} rolled back: {reason}",
                    step_percent=share,
                    rollback_s=rollback_s,
                    canary=step.canary,
                    baseline=step.baseline,
                )
                run.report(f"rolled back in {rollback_s:g} s: {reason}")
                break
            run.event(
                "rollout_advanced",
                "info",
                f"rollout of {run.name}: {share:g} % step passed",
                step_percent=share,
                canary=step.canary,
                baseline=step.baseline,
            )
        else:
            run.promote()
            run.clear_split()
            outcome, reason = "promoted", "every step passed"
            run.event("rollout_finished", "info", f"{run.name} now serves {job.target.ref}")
    except (ModelfleetError, KeyboardInterrupt) as exc:
        error = exc
        outcome = "aborted" if isinstance(exc, KeyboardInterrupt) else "failed"
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else exc.message
        with contextlib.suppress(ModelfleetError):
            if run.canaries:
                run.clear_split()
        run.event(
            "rollout_rolled_back",
            "critical",
            f"rollout of {run.name} to {job.target.ref} {outcome}: {reason}",
        )
    finally:
        for canary in run.canaries:
            canary.stop()
    record = RolloutRecord(
        id=run.id,
        name=job.baseline.name,
        alias=job.alias,
        fleet=job.state.fleet,
        fleet_model=run.name,
        from_version=job.baseline.version,
        to_version=job.target.version,
        actor=run.actor,
        outcome=outcome,
        reason=reason,
        started_at=started_at,
        finished_at=utc_now(),
        duration_s=round(time.monotonic() - start, 3),
        schedule_percent=options.schedule_percent,
        steps=run.steps,
        rollback_s=rollback_s,
        shadow=run.shadow if options.shadow_percent > 0 else None,
    )
    write_atomic(job.paths.root / "rollouts" / f"{run.name}.json", record.model_dump_json(indent=2) + "\n")
    record_rollout(job.registry, record)
    if error is not None:
        raise error
    return record
