"""What `modelfleet tune` prints: a progress bar, the ranked table, a JSON summary, and the failure line."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelfleet.bench.slo import goodput_limit_ms, parse_slo
from modelfleet.tune.results import ProbeRecord, TuneResult
from modelfleet.tune.search import TuneProgress


class TuneProgressBar:
    """Trials done of planned, the best so far and the time budget left, on stderr."""

    def __init__(self, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("tune"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]} · {task.fields[left]} left · {task.fields[current]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            if enabled
            else None
        )
        self._task: Any = None

    def __enter__(self) -> TuneProgressBar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("tune", total=None, best="none yet", left="", current="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, event: TuneProgress) -> None:
        if self._progress is None:
            return
        self._progress.update(
            self._task,
            completed=event.trials_done,
            total=event.trials_planned,
            best=event.best,
            left=f"{event.time_left_s:,.0f} s",
            current=event.current,
        )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def print_tables(console: Console, result: TuneResult, output: Path) -> None:
    for hw in result.hardware:
        console.print(
            f"hardware {hw.label} (CPUs {','.join(map(str, hw.cpus))}) → {hw.instance_type} "
            f"${hw.instance_price_per_h:.4f}/h: {hw.mapping}; memory limit {hw.memory_limit}",
            highlight=False,
            soft_wrap=True,
        )
    table = Table(
        title=f"tune: {result.slo} at {result.target_rate_per_s:,.0f}/s (headroom {result.headroom:g})"
    )
    for column in (
        "#",
        "configuration",
        "instance",
        "capacity/s",
        "spread",
        "p50 ms",
        "p99 ms",
        "replicas",
        "$/h",
        "$/1M conforming",
    ):
        table.add_column(column, justify="left" if column in ("configuration", "instance") else "right")
    by_key = {t.key: t for t in result.trials}
    winner = result.recommendation.key if result.recommendation else None
    for rank, key in enumerate(result.ranking, start=1):
        t = by_key[key]
        runs = t.capacity_runs_per_s or [t.capacity_per_s]
        table.add_row(
            f"{rank}{' ★' if key == winner else ''}",
            t.label if t.status == "ok" else f"{t.label} ({t.status})",
            result.hardware[t.hardware].instance_type,
            f"{'≥' if t.capacity_at_least else ''}{t.capacity_per_s:,.1f}",
            f"{min(runs):,.0f}–{max(runs):,.0f}" if len(runs) > 1 else "–",
            _ms(t.at_target.p50_ms if t.at_target else None),
            _ms(t.at_target.p99_ms if t.at_target else None),
            str(t.replicas or "–"),
            f"{t.fleet_price_per_h:.4f}" if t.fleet_price_per_h is not None else "–",
            f"{t.cost_per_million:.4f}" if t.cost_per_million is not None else "–",
        )
    console.print(table)
    if result.recommendation is not None:
        console.print(f"recommended: {result.recommendation.why}", highlight=False, soft_wrap=True)
        for loser in result.recommendation.runners_up:
            console.print(f"  {loser['label']}: {loser['why']}", highlight=False, soft_wrap=True)
    if result.verification is not None:
        v = result.verification
        console.print(
            f"re-verification at {v.rate_per_s:,.1f}/s: goodput {v.measured_goodput_per_s:,.1f} (predicted "
            f"{v.predicted_goodput_per_s:,.1f}), p99 {_ms(v.measured_p99_ms)} ms (predicted {_ms(v.predicted_p99_ms)}): "
            f"{'passed' if v.passed else 'FAILED'} ({v.note})",
            highlight=False,
            soft_wrap=True,
        )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(f"results → {output}", highlight=False)


def summary_json(result: TuneResult, output: Path) -> dict[str, Any]:
    data = result.model_dump(mode="json", exclude={"spec"})
    for trial in data["trials"]:
        trial.pop("probes", None)
    data["results_file"] = str(output)
    return data


def _closest(result: TuneResult) -> tuple[str, ProbeRecord] | None:
    """The valid probe, of any trial, whose SLO latency came nearest its limit."""
    measured = [(t.label, p) for t in result.trials for p in t.probes if p.valid and p.latency_ms is not None]
    return min(measured, key=lambda item: item[1].latency_ms or 0.0) if measured else None


def failure_message(result: TuneResult) -> str | None:
    """Why the tune failed its gate (no configuration met the SLO, or re-verification), else None."""
    if result.recommendation is None:
        closest = _closest(result)
        limit = goodput_limit_ms(parse_slo(result.slo))
        if closest is None:
            failed = [t for t in result.trials if t.status == "failed"]
            detail = f": {failed[0].error}" if failed else ""
            return (
                f"no configuration met {result.slo} ({len(result.trials)} trial(s), no valid probe){detail}"
            )
        label, probe = closest
        over = (probe.latency_ms or 0.0) - (limit or 0.0)
        return (
            f"no configuration met {result.slo} in {len(result.trials)} trial(s); closest: {label} at "
            f"{probe.rate_per_s:,.1f}/s with {probe.latency_ms:.2f} ms, {over:.2f} ms over the {limit:g} ms limit"
            + (f" ({probe.reason})" if probe.reason and probe.latency_ms is not None and over <= 0 else "")
        )
    if result.verification is not None and not result.verification.passed:
        return f"re-verification of the winner failed: {result.verification.note} (tolerance {result.verification.tolerance:.0%})"
    return None
