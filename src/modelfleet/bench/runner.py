"""`run_bench(spec)`: targets → per-process plans → generators (one or many processes) → one result.

With ``procs > 1`` every process runs the whole plan with its share of each point's rate, concurrency
and request count, started together behind a barrier; each returns its raw histograms and counters
and the parent merges them exactly (see `merge`).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelfleet import __version__
from modelfleet.bench import merge
from modelfleet.bench.loadgen import run_generator
from modelfleet.bench.plan import GeneratorPlan, Hooks, PointPlan, ProgressSnapshot
from modelfleet.bench.results import BenchResult, MachineInfo, ModelInfo, PointRaw, RunInfo, Settings
from modelfleet.bench.samples import load_samples
from modelfleet.bench.slo import parse_slo
from modelfleet.bench.summary import finalize
from modelfleet.bench.targets import PreparedTargets, prepare_targets
from modelfleet.config.bench import BenchSpec
from modelfleet.errors import InvalidInput, ModelfleetError

ProgressCallback = Callable[[ProgressSnapshot], None]
_CHILD_START_TIMEOUT_S = 120.0


def _share(total: int, procs: int, proc: int) -> int:
    return total // procs + (1 if proc < total % procs else 0)


def build_points(spec: BenchSpec, endpoint_count: int, procs: int, proc: int) -> tuple[PointPlan, ...]:
    """This process's share of every point of ``spec``."""
    if spec.mode == "seq":
        requests = endpoint_count * spec.repeat
        return (
            PointPlan(
                index=0,
                label="concurrency 1",
                loop="closed",
                arrival="none",
                rate_per_s=None,
                from_rate_per_s=0.0,
                concurrency=1,
                duration_s=None,
                requests=requests,
                ramp_s=0.0,
                warmup_s=0.0,
                picker="cycle",
            ),
        )
    plans = []
    previous_rate = 0.0
    for index, point in enumerate(spec.points):
        share = _share(point.requests, procs, proc) if point.requests is not None else None
        if point.rate_per_s is not None:
            rate = point.rate_per_s / procs
            plans.append(
                PointPlan(
                    index=index,
                    label=merge.point_label("open", rate, None),
                    loop="open",
                    arrival=spec.arrival,
                    rate_per_s=rate,
                    from_rate_per_s=previous_rate,
                    concurrency=None,
                    duration_s=point.duration_s,
                    requests=share,
                    ramp_s=point.ramp_s,
                    warmup_s=spec.warmup_s,
                )
            )
            previous_rate = rate
        else:
            concurrency = _share(point.concurrency or 1, procs, proc)
            plans.append(
                PointPlan(
                    index=index,
                    label=merge.point_label("closed", None, concurrency),
                    loop="closed",
                    arrival="none",
                    rate_per_s=None,
                    from_rate_per_s=0.0,
                    concurrency=concurrency,
                    duration_s=point.duration_s,
                    requests=share,
                    ramp_s=point.ramp_s,
                    warmup_s=spec.warmup_s,
                )
            )
            previous_rate = 0.0
    return tuple(plans)


def _check_split(spec: BenchSpec, procs: int) -> None:
    for index, point in enumerate(spec.points):
        if point.concurrency is not None and point.concurrency < procs:
            raise InvalidInput(
                f"points.{index}: concurrency {point.concurrency} cannot be split over {procs} processes"
            )
        if point.requests is not None and point.requests < procs:
            raise InvalidInput(
                f"points.{index}: {point.requests} requests cannot be split over {procs} processes"
            )


def _csv_path(spec: BenchSpec, procs: int, proc: int) -> str | None:
    if spec.requests_csv is None:
        return None
    path = Path(spec.requests_csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path if procs == 1 else path.with_name(f"{path.stem}.p{proc}{path.suffix or '.csv'}"))


def build_plans(spec: BenchSpec, targets: PreparedTargets) -> list[GeneratorPlan]:
    procs = 1 if spec.mode == "seq" else spec.procs
    _check_split(spec, procs)
    host = socket.gethostname()
    return [
        GeneratorPlan(
            endpoints=tuple(targets.endpoints),
            points=build_points(spec, len(targets.endpoints), procs, proc),
            timeout_s=spec.timeout_s,
            max_in_flight=spec.max_in_flight,
            window_s=spec.window_s,
            late_send_threshold_s=spec.late_send_threshold_s,
            stability_windows=spec.stability.windows,
            stability_tolerance=spec.stability.tolerance,
            max_windows=spec.stability.max_windows,
            track_endpoints=len(targets.endpoints) <= spec.track_endpoints_max,
            seed=spec.seed,
            host=host,
            max_retry_wait_s=spec.max_retry_wait_s if spec.honour_retry_after else None,
            proc_index=proc,
            procs=procs,
            requests_csv=_csv_path(spec, procs, proc),
        )
        for proc in range(procs)
    ]


def _child_main(plan: GeneratorPlan, results: Any, stop_flags: Any, barrier: Any) -> None:
    """Entry point of a generator process (spawned): run the plan, send back raw results."""
    try:
        hooks = Hooks(
            progress=lambda snapshot: results.put(("progress", snapshot)),
            stop_requested=lambda index: bool(stop_flags[index]),
            announce_stop=lambda index: stop_flags.__setitem__(index, 1),
            leader=plan.proc_index == 0,
        )
        points = run_generator(plan, hooks, ready=lambda: barrier.wait(timeout=_CHILD_START_TIMEOUT_S))
        results.put(("result", plan.proc_index, [p.model_dump(mode="json") for p in points]))
    except BaseException as exc:  # report every failure to the parent instead of dying silently
        results.put(("error", plan.proc_index, f"{type(exc).__name__}: {exc}"))


class _ProgressMerger:
    """Sums the latest snapshot of each process into one live view (p99: the worst process's)."""

    def __init__(self, callback: ProgressCallback, procs: int) -> None:
        self.callback = callback
        self.latest: dict[int, ProgressSnapshot] = {}
        self.procs = procs

    def update(self, snapshot: ProgressSnapshot) -> None:
        self.latest[snapshot.proc] = snapshot
        current = [s for s in self.latest.values() if s.point_index == snapshot.point_index]
        rates = [s.window_rate_per_s for s in current if s.window_rate_per_s is not None]
        p99s = [s.window_p99_ms for s in current if s.window_p99_ms is not None]
        self.callback(
            ProgressSnapshot(
                proc=-1,
                point_index=snapshot.point_index,
                point_label=snapshot.point_label,
                phase=snapshot.phase,
                elapsed_s=max(s.elapsed_s for s in current),
                sent=sum(s.sent for s in current),
                ok=sum(s.ok for s in current),
                errors=sum(s.errors for s in current),
                in_flight=sum(s.in_flight for s in current),
                window_rate_per_s=sum(rates) if rates else None,
                window_p99_ms=max(p99s) if p99s else None,
            )
        )


def _run_processes(plans: list[GeneratorPlan], progress: ProgressCallback | None) -> list[list[PointRaw]]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    stop_flags = context.Array("b", max(len(plans[0].points), 1), lock=False)
    barrier = context.Barrier(len(plans))
    processes = [
        context.Process(target=_child_main, args=(plan, results, stop_flags, barrier), daemon=True)
        for plan in plans
    ]
    merger = _ProgressMerger(progress, len(plans)) if progress is not None else None
    for process in processes:
        process.start()
    collected: dict[int, list[PointRaw]] = {}
    try:
        while len(collected) < len(plans):
            try:
                message = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in processes if p.exitcode is not None and p.exitcode != 0]
                if dead:
                    raise ModelfleetError(
                        f"a generator process exited with code {dead[0].exitcode} before reporting"
                    ) from None
                continue
            if message[0] == "progress":
                if merger is not None:
                    merger.update(message[1])
            elif message[0] == "result":
                collected[message[1]] = [PointRaw.model_validate(p) for p in message[2]]
            else:
                raise ModelfleetError(f"generator process {message[1]} failed: {message[2]}")
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    return [collected[proc] for proc in range(len(plans))]


def machine_info() -> MachineInfo:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu_model = platform.processor() or None
    return MachineInfo(
        host=socket.gethostname(),
        os=platform.platform(),
        python=platform.python_version(),
        cpu_count=os.cpu_count() or 1,
        cpu_model=cpu_model,
    )


def settings_of(spec: BenchSpec) -> Settings:
    return Settings(
        window_s=spec.window_s,
        stability_windows=spec.stability.windows,
        stability_tolerance=spec.stability.tolerance,
        late_send_threshold_s=spec.late_send_threshold_s,
        max_late_fraction=spec.max_late_fraction,
        timeout_s=spec.timeout_s,
    )


def run_bench(spec: BenchSpec, progress: ProgressCallback | None = None) -> BenchResult:
    """Run the load test ``spec`` describes and return its result (not yet written anywhere).

    Raises `Unavailable` when the target cannot be reached, `NotFound` for an unknown model and
    `InvalidInput` for a spec that cannot run; SLO gates are judged in the result, not raised.
    """
    gates = parse_slo(spec.slo)
    samples = load_samples(spec.samples_file)
    targets = prepare_targets(spec, samples)
    plans = build_plans(spec, targets)
    started_at = merge.utc_now_iso()
    if len(plans) == 1:
        per_process = [run_generator(plans[0], Hooks(progress=progress))]
    else:
        per_process = _run_processes(plans, progress)
    raw_points = [
        merge.merge_point_raws([points[i] for points in per_process]) for i in range(len(plans[0].points))
    ]
    points, slo, valid, warnings = finalize(raw_points, settings_of(spec), gates)
    if spec.mode == "seq" and spec.procs > 1:
        warnings.insert(0, "seq mode runs in one process; --procs was ignored")
    run = RunInfo(
        id=uuid.uuid4().hex[:12],
        started_at=started_at,
        finished_at=merge.utc_now_iso(),
        modelfleet_version=__version__,
        target=targets.label,
        protocol=spec.protocol,
        mode=spec.mode,
        models=[ModelInfo.model_validate(model) for model in targets.models],
        config=spec.model_dump(mode="json"),
        machines=[machine_info()],
        generators=len(plans),
    )
    return BenchResult(
        run=run, settings=settings_of(spec), points=points, slo=slo, valid=valid, warnings=warnings
    )
