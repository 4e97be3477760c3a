"""The retraining pipeline of one fleet model: snapshot → hook → build → register → gates → promote or reject.

`run_retrain` (what `modelfleet retrain FLEET MODEL` and the triggers call):

1. snapshot the captured window (`capture_dir/<model>/capture-*.jsonl`, drift/capture.py) and its labels into the run's folder
   `retrain_dir/<run>/`, the most recent `holdout_fraction` held out (drift/window_io.py);
2. run the hook under its contract (drift/hook.py): a timeout kills it, a non-zero exit rejects the run;
3. build its model source into `retrain_dir/<run>/artifact` (build_artifact, outputs verified);
4. register it with lineage: parent version, trigger, data window, hook command and exit;
5. judge it against the current version on the held-out items, both run in process (drift/gates.py);
6. pass: promote through a rollout (operate/rollout.py) when the fleet runs, else move the alias;
   fail: rejected with the reason, the current version keeps serving.

One run per model at a time (a lock file in retrain_dir); a run that finds the lock taken is recorded as
`skipped`. Every run, however it ends, is stored in the registry model's retraining history
(registry/retraining.py), in `retrain_dir/<run>/record.json`, and as `retraining` events in the fleet's
event log, which the notifier sends on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelfleet.build.options import BuildOptions
from modelfleet.build.pipeline import build_artifact
from modelfleet.config.fleet import FleetModelConfig
from modelfleet.config.retrain import RetrainConfig
from modelfleet.config.serve import registry_root
from modelfleet.drift import window_io
from modelfleet.drift.gates import GateResult, evaluate
from modelfleet.drift.hook import HookResult, hook_argv, run_hook, stderr_tail
from modelfleet.errors import Conflict, HookFailed, InvalidInput, ModelfleetError, NotFound
from modelfleet.fleet.local import supervisor_alive
from modelfleet.fleet.sizing import load_fleet_spec
from modelfleet.fleet.state import FleetPaths, read_state, write_atomic
from modelfleet.operate.events import Event, Severity, append_event
from modelfleet.operate.rollout import run_rollout
from modelfleet.registry.models import (
    ModelVersion,
    RetrainingLineage,
    RetrainOutcome,
    RetrainRecord,
    RetrainStep,
)
from modelfleet.registry.recording import default_actor
from modelfleet.registry.retraining import record_retraining
from modelfleet.registry.store import Registry, utc_now
from modelfleet.types import ModelRef, Progress

TriggerKind = Literal["drift", "error_rate", "schedule", "manual"]
LAST_RUN_SUFFIX = ".last.json"


@dataclass(frozen=True)
class Trigger:
    """What started a run, as the lineage and the history record it."""

    kind: TriggerKind
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainTarget:
    """A run's model resolved and checked against the spec and the registry; nothing has happened yet."""

    paths: FleetPaths
    fleet: str
    spec_path: Path
    model: FleetModelConfig
    config: RetrainConfig
    registry: Registry
    alias: str
    parent: ModelVersion
    running: bool


def prepare_retrain(
    fleet: str | Path, model: str, *, state_root: Path | None = None, registry_dir: Path | None = None
) -> RetrainTarget:
    """Check the request (fleet spec or running fleet's name, model, its `retrain:` and `ref`) with one clear error each."""
    candidate = Path(fleet)
    if candidate.is_file():
        spec_path = candidate.resolve()
        spec = load_fleet_spec(spec_path)
        paths = FleetPaths.for_fleet(spec.name, state_root)
    else:
        paths = FleetPaths.for_fleet(str(fleet), state_root)
        if not paths.state_file.is_file():
            raise NotFound(
                f"fleet {fleet!r} is neither a spec file nor a fleet with local state in {paths.root}"
            )
        spec_path = Path(read_state(paths).spec_path)
        spec = load_fleet_spec(spec_path)
    running = False
    if paths.state_file.is_file():
        state = read_state(paths)
        running = state.status == "running" and supervisor_alive(state, paths)
    entry = next((m for m in spec.models if m.name == model), None)
    if entry is None:
        known = ", ".join(m.name for m in spec.models)
        raise NotFound(f"model {model!r} is not in fleet {spec.name} (models: {known})")
    if entry.retrain is None:
        raise InvalidInput(
            f"model {model!r} of fleet {spec.name} has no `retrain:` section (hook, triggers, gates)"
        )
    ref = None if entry.ref is None else ModelRef.parse(entry.ref)
    alias = entry.retrain.alias or (None if ref is None else ref.alias)
    if ref is None or alias is None:
        raise InvalidInput(
            f"model {model!r} is served from {entry.path or entry.ref}; retraining registers and promotes "
            "registry versions, so serve it as `ref: NAME@ALIAS` (or set retrain.alias)"
        )
    registry = Registry(registry_root(registry_dir), create=False)
    parent = registry.get(str(ref))
    return RetrainTarget(paths, spec.name, spec_path, entry, entry.retrain, registry, alias, parent, running)


def last_run_at(paths: FleetPaths, model: str) -> float | None:
    """Unix seconds the model's last run (of any outcome but skipped) began; None when it never ran."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return float(json.loads((paths.retrain_dir / f"{model}{LAST_RUN_SUFFIX}").read_text())["started_at"])
    return None


@contextlib.contextmanager
def _one_run_per_model(paths: FleetPaths, model: str) -> Iterator[bool]:
    """Yields True holding the model's lock, False when another run holds it."""
    paths.retrain_dir.mkdir(parents=True, exist_ok=True)
    with (paths.retrain_dir / f"{model}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


class _Run:
    """One run's state: its folder, the steps so far, and the record's parts."""

    def __init__(self, job: RetrainTarget, trigger: Trigger, actor: str, report: Progress) -> None:
        self.job, self.trigger, self.actor, self.report = job, trigger, actor, report
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.id = f"{job.model.name}-{stamp}-{uuid.uuid4().hex[:6]}"
        self.dir = job.paths.retrain_dir / self.id
        self.started_at, self.started = utc_now(), time.time()
        self.steps: list[RetrainStep] = []
        self.window: dict[str, Any] = {}
        self.hook: dict[str, Any] = {}
        self.gates: list[GateResult] = []
        self.new_version: int | None = None
        self.rollout: str | None = None

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time a step and record it; the block appends its one-line detail (a failure's is its error)."""
        detail: list[str] = []
        start = time.monotonic()
        self.report(f"{name}…")
        try:
            yield detail
        except ModelfleetError as exc:
            self.steps.append(
                RetrainStep(step=name, status="failed", detail=exc.message, duration_s=_since(start))
            )
            raise
        self.steps.append(
            RetrainStep(step=name, status="ok", detail="; ".join(detail), duration_s=_since(start))
        )

    def event(self, severity: Severity, summary: str, resolved: bool = False, **details: Any) -> None:
        job = self.job
        append_event(
            job.paths.events_file,
            Event(
                kind="retraining",
                severity=severity,
                fleet=job.fleet,
                summary=summary,
                key=f"retraining/{job.fleet}/{job.model.name}/{self.id}",
                status="resolved" if resolved else "firing",
                model=job.model.name,
                details={
                    "run": self.id,
                    "trigger": self.trigger.kind,
                    "parent_version": job.parent.version,
                    **details,
                },
            ),
        )

    def record(self, outcome: RetrainOutcome, reason: str) -> RetrainRecord:
        job = self.job
        return RetrainRecord(
            id=self.id,
            name=job.parent.name,
            fleet=job.fleet,
            fleet_model=job.model.name,
            trigger=asdict(self.trigger),
            parent_version=job.parent.version,
            new_version=self.new_version,
            outcome=outcome,
            reason=reason,
            actor=self.actor,
            started_at=self.started_at,
            finished_at=utc_now(),
            window=self.window,
            hook=self.hook,
            gates=[gate.as_dict() for gate in self.gates],
            rollout=self.rollout,
            steps=self.steps,
        )


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


def run_retrain(
    fleet: str | Path,
    model: str,
    trigger: Trigger | None = None,
    *,
    state_root: Path | None = None,
    registry_dir: Path | None = None,
    labels: str | None = None,
    api_key: str | None = None,
    actor: str | None = None,
    progress: Progress | None = None,
) -> RetrainRecord:
    """Retrain ``model`` of ``fleet`` (a spec file or a running fleet's name); the record says how it ended.

    A rejection (a gate or the rollout said no) is not an exception: the outcome is ``rejected``. Bad input
    (no captured data, labels that do not match, a hook that is missing or not executable), a failed or
    timed-out hook, a failed build, or another run under way raise (InvalidInput, HookFailed,
    DeadlineExceeded, VerificationFailed, Conflict) after the run is recorded; nothing is promoted then.
    ``labels`` overrides the spec's `retrain.labels`.
    """
    job = prepare_retrain(fleet, model, state_root=state_root, registry_dir=registry_dir)
    run = _Run(
        job,
        trigger or Trigger("manual", "modelfleet retrain"),
        actor or default_actor(),
        progress or (lambda _l: None),
    )
    with _one_run_per_model(job.paths, model) as owned:
        if not owned:
            reason = f"a retraining run of {model!r} is already under way; this {run.trigger.kind} trigger was skipped"
            record_retraining(job.registry, run.record("skipped", reason))
            run.event("info", reason, resolved=True)
            raise Conflict(reason)
        run.dir.mkdir(parents=True)
        write_atomic(
            job.paths.retrain_dir / f"{model}{LAST_RUN_SUFFIX}",
            json.dumps({"started_at": run.started, "run": run.id}) + "\n",
        )
        run.event("info", f"retraining of {model} started ({run.trigger.kind}: {run.trigger.summary})")
        try:
            outcome, reason = _pipeline(run, labels, api_key)
        except (ModelfleetError, KeyboardInterrupt) as exc:
            reason = exc.message if isinstance(exc, ModelfleetError) else "interrupted"
            if isinstance(exc, HookFailed) and exc.hook_exit is not None:
                run.hook.setdefault("exit_code", exc.hook_exit)
            if run.hook:
                run.hook["stderr_tail"] = stderr_tail(run.dir)
            _finish(run, "failed", reason)
            raise
        return _finish(run, outcome, reason)


def _finish(run: _Run, outcome: RetrainOutcome, reason: str) -> RetrainRecord:
    record = run.record(outcome, reason)
    write_atomic(run.dir / "record.json", record.model_dump_json(indent=2) + "\n")
    record_retraining(run.job.registry, record)
    severity: Severity = (
        "info" if outcome == "promoted" else "warning" if outcome == "rejected" else "critical"
    )
    version = f" version {run.new_version}" if run.new_version is not None else ""
    run.event(
        severity,
        f"retraining of {run.job.model.name}{version} {outcome}: {reason}",
        resolved=outcome == "promoted",
        outcome=outcome,
        new_version=run.new_version,
    )
    return record


def _pipeline(run: _Run, labels_override: str | None, api_key: str | None) -> tuple[RetrainOutcome, str]:
    job, config = run.job, run.job.config
    spec_dir = job.spec_path.parent
    with run.step("snapshot") as detail:
        window = _snapshot(run, labels_override or config.labels, spec_dir)
        detail.append(
            f"{window.summary['train_items']} items for the hook, {window.summary['holdout_items']} held out"
        )
    with run.step("hook") as detail:
        argv = hook_argv(config)
        run.hook = {"command": argv}
        hooked = run_hook(argv, _hook_env(run), spec_dir, run.dir, config.timeout_s)
        run.hook.update(
            exit_code=hooked.exit_code, duration_s=hooked.duration_s, stderr_tail=hooked.stderr_tail
        )
        detail.append(f"exit 0 in {hooked.duration_s:g} s, wrote {hooked.source.name}")
    artifact = run.dir / "artifact"
    with run.step("build") as detail:
        manifest = build_artifact(hooked.source, artifact, BuildOptions(name=job.parent.name))
        detail.append(f"{manifest.task} artifact, verified")
    with run.step("register") as detail:
        version = job.registry.add(
            artifact,
            actor=run.actor,
            name=job.parent.name,
            training_data_sha256=window.summary["sha256"],
            training_data_uri=str(run.dir / window_io.WINDOW_FILE),
            parent_version=job.parent.version,
            retraining=_lineage(run, hooked),
        )
        run.new_version = version.version
        detail.append(f"registered {version.ref} (parent {job.parent.ref})")
    with run.step("gates") as detail:
        current_dir = job.registry.materialize(job.parent.ref)
        run.gates = evaluate(current_dir, artifact, window.holdout, window.holdout_labels, config.gates)
        failed = [gate.detail for gate in run.gates if not gate.passed]
        detail.append("; ".join(gate.detail for gate in run.gates) or "no gate applies")
    if failed:
        return "rejected", "gate failed: " + "; ".join(failed)
    with run.step("promote") as detail:
        outcome, reason = _promote(run, version, api_key)
        detail.append(reason)
    return outcome, reason


def _snapshot(run: _Run, labels_source: str | None, spec_dir: Path) -> window_io.Window:
    job, config = run.job, run.job.config
    folder = job.paths.capture_dir / job.model.name
    items = window_io.recent_items(folder, config.max_window_items)
    if not items:
        raise InvalidInput(
            f"no captured data for model {job.model.name!r} in {folder}: turn on the model's capture and let it "
            "serve traffic before retraining"
        )
    if len(items) < config.min_window_items:
        raise InvalidInput(
            f"only {len(items)} captured items for model {job.model.name!r}, under the minimum of "
            f"{config.min_window_items} (retrain.min_window_items)"
        )
    labels = None
    labels_sha256 = None
    if labels_source is not None:
        by_inputs, labels_sha256 = window_io.read_labels(labels_source, spec_dir, config.max_labels_bytes)
        labels = window_io.match_labels(items, by_inputs, labels_source)
    window = window_io.snapshot(items, labels, run.dir, config.holdout_fraction)
    run.window = {**window.summary, "labels_source": labels_source}
    if labels_sha256 is not None:
        run.window["labels_file_sha256"] = labels_sha256
    return window


def _hook_env(run: _Run) -> dict[str, str]:
    output_dir = run.dir / "output"
    output_dir.mkdir()
    has_labels = run.window.get("labels_sha256") is not None
    return {
        "MODELFLEET_WINDOW_FILE": str(run.dir / window_io.WINDOW_FILE),
        "MODELFLEET_LABELS_FILE": str(run.dir / window_io.LABELS_FILE) if has_labels else "",
        "MODELFLEET_OUTPUT_DIR": str(output_dir),
        "MODELFLEET_MODEL": run.job.model.name,
        "MODELFLEET_PARENT_REF": run.job.parent.ref,
    }


def _lineage(run: _Run, hooked: HookResult) -> RetrainingLineage:
    window = {
        key: run.window[key]
        for key in ("sha256", "items", "train_items", "holdout_items", "first_at", "last_at", "labels_sha256")
    }
    return RetrainingLineage(
        run=run.id,
        trigger=asdict(run.trigger),
        window=window,
        hook_command=hooked.command,
        hook_exit_code=hooked.exit_code,
    )


def _promote(run: _Run, version: ModelVersion, api_key: str | None) -> tuple[RetrainOutcome, str]:
    job = run.job
    if not job.running:
        job.registry.promote(
            version.ref,
            actor=run.actor,
            alias=job.alias,
            reason=f"retraining run {run.id}: every gate passed (fleet not running, so no rollout)",
        )
        return (
            "promoted",
            f"{job.parent.name}@{job.alias} → version {version.version} (alias moved; fleet not running)",
        )
    rollout = run_rollout(
        job.spec_path,
        job.model.name,
        version.ref,
        job.config.rollout,
        state_root=job.paths.root.parent,
        registry_dir=job.registry.root,
        api_key=api_key,
        actor=run.actor,
        progress=run.report,
    )
    run.rollout = rollout.id
    if rollout.outcome == "promoted":
        return "promoted", f"rollout {rollout.id} promoted version {version.version}: {rollout.reason}"
    return "rejected", f"rollout {rollout.id} {rollout.outcome}: {rollout.reason}"
