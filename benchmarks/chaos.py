"""Chaos benchmark: six faults against real servers and a real local fleet on loopback, every target judged.

    .venv/bin/python benchmarks/chaos.py                               # builds MiniLM fp32 + int8 first
    .venv/bin/python benchmarks/chaos.py --artifact A --artifact-int8 B # prebuilt artifacts
    .venv/bin/python benchmarks/chaos.py --quick --only overload --output /tmp/chaos.md

Scenarios (`--only NAME`, repeatable): overload, kill, slow_model, hostile, slow_headers, registry.
The fleet is examples/fleet-local.yaml (2 replicas of one server group with MiniLM fp32 and int8, one
router) with its artifact paths replaced and a free router port; load comes from modelfleet's own
open-loop generator (latency from the intended send time), every request recorded in its per-request
CSV so that refusals, windows aligned to an event and per-model figures can be read back exactly
(`modelfleet.bench.requestlog`). Capacity and the unloaded p99 are measured in the same run.
Writes benchmarks/results/chaos.md and chaos.json (or `--output FILE.md` and FILE.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _chaos_registry
from _chaos_common import (
    FLEET_MODEL,
    ROOT,
    SCENARIOS,
    Context,
    Scenario,
    http_get,
    latency_text,
    metric_values,
    ms,
    run_load,
    say,
    within,
)
from _chaos_faults import scenario_hostile, scenario_slow_headers, scenario_slow_model
from _harness import RESULTS_DIR, machine_description, raise_open_files_limit, write_result
from modelfleet.fleet.routing import quantile_from_buckets

# ----- scenario 1: 3× capacity ------------------------------------------------------------------------


_INSIDE = ("request_duration_seconds", "queue_duration_seconds", "compute_duration_seconds", "batch_size")


def _histograms(url: str) -> dict[str, dict[str, float]]:
    """A replica's histograms of the fleet's model: family → {bucket bound or sum/count: value}."""
    _, body = http_get(url + "/metrics")
    text = body.decode(errors="replace")
    found: dict[str, dict[str, float]] = {}
    for family in _INSIDE:
        name = f"modelfleet_{family}"
        series = found.setdefault(family, {})
        for labels, value in metric_values(text, name + "_bucket"):
            if labels.get("model") == FLEET_MODEL:
                series[labels["le"]] = value
        for suffix in ("sum", "count"):
            for labels, value in metric_values(text, f"{name}_{suffix}"):
                if labels.get("model") == FLEET_MODEL:
                    series[suffix] = value
    return found


def _inside_figures(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """p50/p99 (from buckets, as Prometheus estimates them) and means of a replica's histograms."""
    figures: dict[str, Any] = {}
    for family in _INSIDE:
        delta = {k: v - before.get(family, {}).get(k, 0.0) for k, v in after.get(family, {}).items()}
        count = delta.get("count", 0.0)
        if count <= 0:
            continue
        buckets = sorted((float(k), v) for k, v in delta.items() if k not in ("sum", "count"))
        bounds, counts = [b for b, _ in buckets], [v for _, v in buckets]
        scale = 1.0 if family == "batch_size" else 1000.0
        figures[family] = {
            "n": int(count),
            "mean": round(delta["sum"] / count * scale, 2),
            "p50": round((quantile_from_buckets(0.5, bounds, counts) or 0.0) * scale, 2),
            "p99": round((quantile_from_buckets(0.99, bounds, counts) or 0.0) * scale, 2),
        }
    return figures


def scenario_overload(ctx: Context) -> Scenario:
    s = Scenario("overload", f"3× capacity, open loop, {ctx.d.overload_s:g} s")
    s.notes.append(
        "Method: one generator run of three points through the router: a fifth of capacity (unloaded), 3× "
        "capacity, a fifth again. Latency counts from intended send times; the 503 figure is the latency of the "
        "503 answers alone; recovery counts the requests intended from 2 s after the overload's last send."
    )
    fleet, capacity, low = ctx.fleet(), ctx.capacity(), ctx.low_rate()
    high = round(3 * capacity)
    say(
        f"overload: {low:g}/s for {ctx.d.unloaded_s:g} s, {high:g}/s for {ctx.d.overload_s:g} s, {low:g}/s for {ctx.d.recovery_s:g} s"
    )
    points = [
        {"rate_per_s": low, "duration_s": ctx.d.unloaded_s},
        {"rate_per_s": high, "duration_s": ctx.d.overload_s},
        {"rate_per_s": low, "duration_s": ctx.d.recovery_s},
    ]
    inside_before = {r.id: _histograms(r.url) for r in fleet.replicas()}
    result, log = run_load(fleet.router_url, [FLEET_MODEL], points, ctx.csv("overload"))
    inside = {r.id: _inside_figures(inside_before[r.id], _histograms(r.url)) for r in fleet.replicas()}
    _, p1, p2 = result.points
    unloaded = log.select(point=0, measured=True, ok=True).latency()
    over = log.select(point=1)
    over_start = p1.started_offset_s
    over_end = p1.started_offset_s + p1.warmup_s + p1.send_s
    gap_s = p2.started_offset_s - over_end  # the generator waited for every overload request to end
    admitted = over.select(ok=True).latency()
    refused = over.select(outcome="http_503").latency()
    outcomes_all = log.outcomes()
    recovered = log.select(point=2, intended_from_s=over_end + 2.0)
    recovery = recovered.select(ok=True).latency()
    s.figures = {
        "capacity_rps": round(capacity, 1),
        "unloaded_rate_rps": low,
        "overload_rate_rps": high,
        "outcomes_by_phase": {
            "unloaded": log.select(point=0).outcomes(),
            "overload": over.outcomes(),
            "recovery": log.select(point=2).outcomes(),
        },
        "unloaded": asdict(unloaded),
        "admitted": asdict(admitted),
        "refused_503": asdict(refused),
        "recovery_from_2s": asdict(recovery),
        "drain_after_overload_s": round(gap_s, 3),
        "late_send_fraction": [p.summary.late_fraction if p.summary else None for p in result.points],
        "capped_sends": [p.capped_sends for p in result.points],
        # Inside each replica over the whole run (three points; the overload's requests are most of them).
        "inside_replicas": inside,
    }
    timeouts = outcomes_all.get("timeout", 0)
    s.judge("0 timeouts", timeouts == 0, f"{timeouts} timeouts of {len(log)} requests")
    others = {k: v for k, v in over.outcomes().items() if k not in ("ok", "http_503")}
    excess = over.outcomes().get("http_503", 0)
    share = excess / max(1, len(over))
    s.judge(
        "the excess answered 503 within 5 ms",
        excess > 0 and not others and within(refused.p99_ms, 5.0),
        f"{excess} answered 503 ({share:.0%} of the overload's requests), 503 latency p99 {ms(refused.p99_ms)}, "
        f"max {ms(refused.max_ms)}; other failures {others or 'none'}",
    )
    limit = None if unloaded.p99_ms is None else 2 * unloaded.p99_ms
    s.judge(
        "admitted p99 ≤ 2× the unloaded p99",
        within(admitted.p99_ms, limit),
        f"admitted p99 {ms(admitted.p99_ms)} (n={admitted.count}) vs unloaded p99 {ms(unloaded.p99_ms)} "
        f"(limit {ms(limit)})",
    )
    limit = None if unloaded.p99_ms is None else 1.2 * unloaded.p99_ms
    if gap_s > 2.0:
        s.judge(
            "p99 back within 1.2× unloaded 2 s after the overload ends",
            False,
            f"overload requests were still unanswered {gap_s:.1f} s after the overload ended; "
            f"from then on p99 {ms(recovery.p99_ms)} (limit {ms(limit)})",
        )
    else:
        s.judge(
            "p99 back within 1.2× unloaded 2 s after the overload ends",
            within(recovery.p99_ms, limit),
            f"p99 {ms(recovery.p99_ms)} (n={recovery.count}) from 2 s after the overload vs limit {ms(limit)}",
        )
    rows = [
        "| window (s from overload start) | offered | ok | 503 | other | admitted p99 | 503 p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for window in over.windows(1.0, over_start, over_end):
        counts = dict(window.outcomes)
        ok, refused_n = counts.pop("ok", 0), counts.pop("http_503", 0)
        w503 = over.select(
            outcome="http_503", intended_from_s=window.start_s, intended_until_s=window.end_s
        ).latency()
        rows.append(
            f"| {window.start_s - over_start:.0f}–{window.end_s - over_start:.0f} | {ok + refused_n + sum(counts.values())} "
            f"| {ok} | {refused_n} | {sum(counts.values())} | {ms(window.ok.p99_ms)} | {ms(w503.p99_ms)} |"
        )
    s.tables.append("Overload, per second of intended send time:\n\n" + "\n".join(rows))
    rows = ["| window (s after overload end) | requests | ok | p99 ok |", "|---|---|---|---|"]
    recovery_log = log.select(point=2)
    end = p2.started_offset_s + p2.warmup_s + p2.send_s
    for window in recovery_log.windows(1.0, over_end, end):
        rows.append(
            f"| {window.start_s - over_end:.0f}–{window.end_s - over_end:.0f} | {sum(window.outcomes.values())} "
            f"| {window.outcomes.get('ok', 0)} | {ms(window.ok.p99_ms)} |"
        )
    s.tables.append(
        f"Recovery at {low:g}/s (the generator started it {gap_s:.2f} s after the overload's last send, once every "
        "overload request had ended):\n\n" + "\n".join(rows)
    )
    s.notes.append(
        f"Unloaded: {latency_text(unloaded)} at {low:g}/s. Overload generator: late sends "
        f"{(p1.summary.late_fraction if p1.summary else 0):.1%}, capped sends {p1.capped_sends}."
    )
    return s


# ----- scenario 2: kill -9 of one replica --------------------------------------------------------------


def _refusals(url: str) -> dict[str, float]:
    """A server's admission refusals so far, by reason (modelfleet_shed_requests_total)."""
    _, body = http_get(url + "/metrics")
    totals: dict[str, float] = {}
    for labels, value in metric_values(body.decode(errors="replace"), "modelfleet_shed_requests_total"):
        totals[labels.get("reason", "")] = totals.get(labels.get("reason", ""), 0.0) + value
    return totals


def scenario_kill(ctx: Context) -> Scenario:
    s = Scenario("kill", "kill -9 of one of two replicas at 50 % load")
    s.notes.append(
        "Method: open loop at half capacity through the router; SIGKILL to one replica's server process; from "
        "then its own /v2/health/ready is polled every 20 ms; its model load time is the sum of "
        "modelfleet_model_load_seconds on the restarted replica."
    )
    fleet, capacity = ctx.fleet(), ctx.capacity()
    rate = round(0.5 * capacity)
    victim = fleet.replicas()[-1]
    kill_at_s = min(3.0, ctx.d.kill_s / 3)
    anchor: dict[str, float] = {}
    go = threading.Event()
    events: dict[str, Any] = {}

    def on_progress(snapshot: Any) -> None:
        anchor.setdefault("point_start", time.monotonic() - snapshot.elapsed_s)
        if snapshot.phase == "measure" and snapshot.elapsed_s >= 1.0 + kill_at_s:
            go.set()

    def killer() -> None:
        if not go.wait(ctx.d.kill_s + 30):
            return
        pid = fleet.state().process(victim.id).pid
        events["killed_at"] = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        events["pid"] = pid
        # Poll the replica itself: it is ready again when its new process answers /v2/health/ready.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if http_get(victim.url + "/v2/health/ready", timeout_s=0.5)[0] == 200:
                events["ready_at"] = time.monotonic()
                return
            time.sleep(0.02)

    say(
        f"kill: {rate:g}/s for {ctx.d.kill_s:g} s through the router; kill -9 {victim.id} after {kill_at_s:g} s"
    )
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    survivor = fleet.replicas()[0]
    refused_before = _refusals(survivor.url)
    before = _router_model_figures(fleet.router_url)
    result, log = run_load(
        fleet.router_url,
        [FLEET_MODEL],
        [{"rate_per_s": rate, "duration_s": ctx.d.kill_s}],
        ctx.csv("kill"),
        progress=on_progress,
    )
    thread.join(150)
    after = _router_model_figures(fleet.router_url)
    refused_after = _refusals(survivor.url)
    failed = len(log) - log.outcomes().get("ok", 0)
    s.figures = {
        "rate_rps": rate,
        "victim": victim.id,
        "outcomes": log.outcomes(),
        # What the router did meanwhile: its retries (degraded waits included) and its own 503s by reason.
        "router_retries": after["retries"] - before["retries"],
        "router_shed": {
            k: v - before["shed"].get(k, 0) for k, v in after["shed"].items() if v - before["shed"].get(k, 0)
        },
        # The survivor's own admission refusals by reason (each one a retry or a wait at the router).
        "survivor_refusals": {
            k: v - refused_before.get(k, 0) for k, v in refused_after.items() if v - refused_before.get(k, 0)
        },
    }
    if "killed_at" not in events:
        s.judge("0 failed requests", None, "the replica was not killed (the load ended first)")
        return s
    run_start = anchor["point_start"] - result.points[0].started_offset_s
    kill_t = events["killed_at"] - run_start
    failures = log.where(log.outcome != "ok")
    s.figures["failures_s_after_kill"] = sorted(round(float(t - kill_t), 3) for t in failures.intended_s)[:50]
    s.judge(
        "0 failed requests",
        failed == 0,
        f"{failed} of {len(log)} failed ({ {k: v for k, v in log.outcomes().items() if k != 'ok'} or 'none' })",
    )
    ready_s = events.get("ready_at", float("nan")) - events["killed_at"]
    _, body = http_get(victim.url + "/metrics")
    load_s = sum(v for _, v in metric_values(body.decode(errors="replace"), "modelfleet_model_load_seconds"))
    backoff = fleet.state().local.restart_backoff_initial_s
    s.figures.update(
        {"ready_again_s": round(ready_s, 3), "model_load_s": round(load_s, 3), "restart_backoff_s": backoff}
    )
    limit = 2.0 + load_s
    s.judge(
        "the replica ready again within 2 s plus its model load time",
        "ready_at" in events and ready_s <= limit,
        f"ready {ready_s:.2f} s after the kill; its models loaded in {load_s:.2f} s (limit {limit:.2f} s; "
        f"supervisor back-off {backoff:g} s included)",
    )
    ok_latency = log.select(ok=True).latency()
    s.notes.append(f"Answered requests: {latency_text(ok_latency)}.")
    fleet.wait_ready(180)
    return s


def _router_model_figures(router_url: str) -> dict[str, Any]:
    """The router's counters for the fleet model (retries, 503s by reason), from /fleet/status."""
    _, body = http_get(router_url + "/fleet/status")
    figures: dict[str, Any] = json.loads(body)["models"][FLEET_MODEL]
    return figures


# ----- scenario 6: registry faults ----------------------------------------------------------------------


_STORAGE_WORDS = ("disk", "space", "read-only", "storage", "file system", "filesystem", "full")
_CAUSE_WORDS = {
    "disk full": ("space", "full"),
    "file-size limit": ("too large", "size"),
    "read-only": ("read-only", "read only"),
}


def scenario_registry(ctx: Context) -> Scenario:
    from tests.support.linear_model import make_artifact

    s = Scenario("registry", "disk full / read-only registry during `registry add` and `import`")
    documented = _chaos_registry.documented_exit_codes(ROOT / "docs" / "registry.md")
    small = make_artifact(ctx.work / "small-artifact", "tiny")
    outcome = _chaos_registry.run_cases(ctx.work, small, ctx.args.artifact, ctx.args.quick, say)
    rows = [
        "| fault | command | exit | meaning (docs/registry.md) | stderr | verify afterwards |",
        "|---|---|---|---|---|---|",
    ]
    for case in outcome["cases"]:
        target = f"{case['fault']} during `{case['command']}`: one-line error naming the cause, documented exit code, verify clean"
        if "not_run" in case:
            s.judge(target, None, case["not_run"])
            continue
        result, verify = case["result"], case["verify"]
        code = result["exit_code"]
        message = " ".join(result["stderr_lines"])
        one_line = result["stderr_line_count"] == 1 and not result["traceback"]
        names_cause = any(word in message.lower() for word in _CAUSE_WORDS[case["fault"]])
        # The docs must say that this code is what a storage fault gives, not merely list the number.
        code_ok = code not in (0, 10) and any(
            word in documented.get(code, "").lower() for word in _STORAGE_WORDS
        )
        clean = (
            verify["exit_code"] == 0
            and verify["ok"]
            and verify["temp_files"] == 0
            and verify["checked_versions"] == 1
        )
        s.judge(
            target,
            one_line and names_cause and code_ok and clean and case["seed_exit_code"] == 0,
            f"exit {code} ({documented.get(code, 'undocumented')}); {result['stderr_line_count']} stderr line(s): "
            f"{message[:160]!r}; verify exit {verify['exit_code']}, {verify['checked_versions']} version(s), "
            f"{verify['temp_files']} temp files",
        )
        rows.append(
            f"| {case['fault']} | `{case['command']}` | {code} | {documented.get(code, 'undocumented')[:40]} "
            f"| {message[:120]} | exit {verify['exit_code']}, ok={verify['ok']}, temp files {verify['temp_files']} |"
        )
    s.tables.append("\n".join(rows))
    s.notes.append(
        f"Disk full: an {outcome['tmpfs_bytes'] >> 20} MiB tmpfs in a private mount namespace (ENOSPC); file-size "
        f"limit: RLIMIT_FSIZE {outcome['fsize_limit_bytes'] >> 20} MiB on the command (EFBIG); read-only: a read-only "
        "bind mount of the registry over itself. Each registry held one small version first; verify runs after the "
        "fault is lifted. An exit code passes when docs/registry.md's exit-code table gives it a meaning that covers a "
        "storage fault (disk, space, full, read-only, storage, file system) and it is neither 0 nor 10 (internal error)."
    )
    return s


# ----- report -------------------------------------------------------------------------------------------


def render(
    scenarios: list[Scenario],
    ctx: Context,
    command: str,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    seconds: float,
) -> str:
    lines = [
        f"Mode: {'quick (short durations)' if ctx.args.quick else 'full'}; total {seconds:.0f} s; load average "
        f"(1/5/15 min) {' / '.join(f'{v:.2f}' for v in load[0])} at the start, {' / '.join(f'{v:.2f}' for v in load[1])} at the end.",
        f"Artifacts: `{ctx.args.artifact}`, `{ctx.args.artifact_int8}`. Capacity: {ctx.capacity_figures or 'not measured'}.",
        "",
        "| fault | target | verdict | figure |",
        "|---|---|---|---|",
    ]
    for scenario in scenarios:
        for verdict in scenario.verdicts:
            lines.append(
                f"| {scenario.title} | {verdict.target} | **{verdict.status}** | {verdict.figure.replace('|', '/')} |"
            )
    for scenario in scenarios:
        lines += ["", f"## {scenario.title}", ""]
        lines += [f"- {note}" for note in scenario.notes]
        for table in scenario.tables:
            lines += ["", table]
        lines += ["", "Figures:", "", "```json", json.dumps(scenario.figures, indent=1, default=str), "```"]
    return "\n".join(lines)


RUNNERS: dict[str, Callable[[Context], Scenario]] = {
    "overload": scenario_overload,
    "kill": scenario_kill,
    "slow_model": scenario_slow_model,
    "hostile": scenario_hostile,
    "slow_headers": scenario_slow_headers,
    "registry": scenario_registry,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="Run only this scenario; repeatable."
    )
    parser.add_argument("--quick", action="store_true", help="Short durations and fewer generated cases.")
    parser.add_argument(
        "--queue-wait-runs",
        type=float,
        help="The fleet models' batching.queue_wait_runs (default: the server's, 4): the latency/goodput trade.",
    )
    parser.add_argument(
        "--artifact", type=Path, help="MiniLM fp32 artifact (default: build the bundled one)."
    )
    parser.add_argument(
        "--artifact-int8", type=Path, help="MiniLM int8 artifact (default: build the bundled one)."
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "chaos.md", help="Markdown results; JSON beside it."
    )
    parser.add_argument(
        "--work-dir", type=Path, help="Keep CSVs, logs and fleet state here (default: a temp folder)."
    )
    parser.add_argument(
        "--rss-guard-mb", type=float, default=2048.0, help="Kill a fleet process above this RSS."
    )
    args = parser.parse_args(argv)
    args.only = args.only or list(SCENARIOS)
    return args


@contextlib.contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="modelfleet-chaos-") as tmp:
        yield Path(tmp)


def build_artifacts(args: argparse.Namespace, work: Path) -> None:
    from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact

    for attribute, precision in (("artifact", "fp32"), ("artifact_int8", "int8")):
        if getattr(args, attribute) is None:
            destination = work / f"minilm-{precision}"
            say(f"building the bundled MiniLM ({precision}) into {destination}")
            build_artifact(BUNDLED_SOURCE, destination, BuildOptions(precision=precision))
            setattr(args, attribute, destination)
        setattr(args, attribute, getattr(args, attribute).resolve())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_start = time.monotonic(), os.getloadavg()
    soft, hard = raise_open_files_limit(8192)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the fleet
    command = "python benchmarks/chaos.py " + " ".join(argv if argv is not None else sys.argv[1:])
    say(f"chaos benchmark: {', '.join(args.only)}; open files limit {soft}/{hard}; {machine_description()}")
    scenarios: list[Scenario] = []
    with work_folder(args.work_dir) as work:
        build_artifacts(args, work)
        ctx = Context(args, work)
        try:
            for name in args.only:
                say(f"== {name}")
                try:
                    scenarios.append(RUNNERS[name](ctx))
                except Exception as exc:  # one broken scenario must not lose the others' figures
                    failed = Scenario(name, name)
                    failed.judge("scenario ran", False, f"{type(exc).__name__}: {exc}")
                    scenarios.append(failed)
        finally:
            ctx.close()
        seconds = time.monotonic() - started
        body = render(scenarios, ctx, command, (load_start, os.getloadavg()), seconds)
    path = write_result("chaos", command, body, args.output)
    document = {
        "command": command,
        "machine": machine_description(),
        "quick": args.quick,
        "seconds": round(seconds, 1),
        "capacity": ctx.capacity_figures,
        "scenarios": [asdict(s) for s in scenarios],
    }
    path.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    failed = sum(v.status == "FAIL" for s in scenarios for v in s.verdicts)
    say(f"wrote {path} and {path.with_suffix('.json').name}: {failed} target(s) failed; {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
