"""The chaos benchmark's faults inside one server or the router: a slowed model, a hostile-input
battery, slow-header connections (see benchmarks/chaos.py)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import yaml

from _chaos_common import (
    _ENV,
    BENCH_DIR,
    FLEET_MODEL,
    PY,
    Context,
    Scenario,
    http_get,
    latency_text,
    metric_values,
    ms,
    run_load,
    say,
    wait_until,
    within,
)
from _harness import free_port
from modelfleet.bench.requestlog import read_request_logs

# ----- scenario 3: one model 10× slower -----------------------------------------------------------------


SLOW_ROUNDS = 2


def scenario_slow_model(ctx: Context) -> Scenario:
    deadline_s = 1.0
    s = Scenario("slow_model", "a model 10× slower than usual (injected delay)")
    s.notes.append(
        "Method: one `modelfleet serve` process with minilm (fp32) and minilm-int8 (timeout_s 1 s); the benchmark "
        "wraps minilm-int8's predict to sleep 9× each run's own time after SIGUSR1. Both models get the same open "
        "loop (15 % of minilm's closed-loop capacity each), at normal speed and slowed in turn, twice each."
    )
    port = free_port()
    spec = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "models": [
            {
                "path": str(ctx.args.artifact),
                "name": "minilm",
                "batching": {"max_batch_size": 32, "max_delay_s": 0.002},
            },
            {
                "path": str(ctx.args.artifact_int8),
                "name": "minilm-int8",
                "timeout_s": deadline_s,
                "batching": {"max_batch_size": 32, "max_delay_s": 0.002},
            },
        ],
    }
    spec_path = ctx.work / "slow-serve.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    log_file = (ctx.work / "slow-server.log").open("wb")
    command = [
        PY,
        str(BENCH_DIR / "_chaos_slow.py"),
        "serve",
        "--spec",
        str(spec_path),
        "--slow",
        "minilm-int8",
        "--factor",
        "10",
    ]
    server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=_ENV)
    try:
        say("slow model: one server, minilm (fp32) beside minilm-int8, which becomes 10× slower on SIGUSR1")
        if (
            not wait_until(
                lambda: http_get(url + "/v2/health/ready")[0] == 200 or server.poll() is not None, 240, 0.25
            )
            or server.poll() is not None
        ):
            s.judge("the server started", False, f"not ready (see {ctx.work / 'slow-server.log'})")
            return s
        result, _ = run_load(
            url,
            ["minilm"],
            [{"concurrency": 32, "duration_s": ctx.d.capacity_s}],
            ctx.csv("slow-capacity"),
            mode="closed",
        )
        assert result.points[0].summary is not None
        capacity = result.points[0].summary.throughput_per_s
        rate = max(10.0, round(0.15 * capacity))
        say(
            f"  minilm capacity {capacity:.0f}/s; {rate:g}/s to each model, normal then slowed, {ctx.d.slow_s:g} s each"
        )

        def compute_s() -> tuple[float, float]:
            text = http_get(url + "/metrics")[1].decode(errors="replace")
            total = sum(
                v
                for labels, v in metric_values(text, "modelfleet_compute_duration_seconds_sum")
                if labels.get("model") == "minilm-int8"
            )
            count = sum(
                v
                for labels, v in metric_values(text, "modelfleet_compute_duration_seconds_count")
                if labels.get("model") == "minilm-int8"
            )
            return total, count

        # Normal and slowed phases alternate (twice each), so drift in what else the machine runs falls on
        # both sides alike, and each side has over 1,000 minilm samples behind its p99.
        points = [{"rate_per_s": 2 * rate, "duration_s": ctx.d.slow_s}]
        compute = {"normal": [0.0, 0.0], "slowed": [0.0, 0.0]}
        csvs: dict[str, list[Path]] = {"normal": [], "slowed": []}
        for round_number in range(SLOW_ROUNDS):
            for phase, sig in (("normal", signal.SIGUSR2), ("slowed", signal.SIGUSR1)):
                server.send_signal(sig)
                before = compute_s()
                csv_path = ctx.csv(f"slow-{phase}-{round_number}")
                run_load(url, ["minilm", "minilm-int8"], points, csv_path)
                after = compute_s()
                compute[phase][0] += after[0] - before[0]
                compute[phase][1] += after[1] - before[1]
                csvs[phase].append(csv_path)
        normal = read_request_logs(csvs["normal"])
        slowed = read_request_logs(csvs["slowed"])
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()
    per_batch = [compute[phase][0] / max(1.0, compute[phase][1]) * 1000 for phase in ("normal", "slowed")]
    base = normal.select(endpoint="minilm", measured=True, ok=True).latency()
    other = slowed.select(endpoint="minilm", measured=True, ok=True).latency()
    slow_all = slowed.select(endpoint="minilm-int8")
    refused = slow_all.where(slow_all.outcome != "ok")
    late_limit_ms = deadline_s * 1000 + 50
    wrong = {k: v for k, v in refused.outcomes().items() if k not in ("http_503", "http_504")}
    late = int((slow_all.latency_ms > late_limit_ms).sum())
    s.figures = {
        "capacity_minilm_rps": round(capacity, 1),
        "rate_each_rps": rate,
        "int8_compute_ms_per_batch_normal_then_slowed": [round(v, 2) for v in per_batch],
        "minilm_normal": asdict(base),
        "minilm_beside_slowed": asdict(other),
        "slowed_outcomes": slow_all.outcomes(),
        "slowed_latency_all": asdict(slow_all.latency()),
        "slowed_refused_latency": asdict(refused.latency()),
        "minilm_outcomes_beside_slowed": slowed.select(endpoint="minilm").outcomes(),
    }
    limit = None if base.p99_ms is None else 1.2 * base.p99_ms
    s.judge(
        "other models in the same process keep their p99 (≤ 1.2× their p99 beside the normal model)",
        within(other.p99_ms, limit) and slowed.select(endpoint="minilm", ok=False).outcomes() == {},
        f"minilm p99 {ms(other.p99_ms)} beside the slowed model vs {ms(base.p99_ms)} beside it at normal speed "
        f"(limit {ms(limit)}); minilm failures {slowed.select(endpoint='minilm', ok=False).outcomes() or 'none'}",
    )
    s.judge(
        f"its own requests get 503/504 by their deadline ({deadline_s:g} s, +50 ms slack), never later",
        len(refused) > 0 and not wrong and late == 0,
        f"{slow_all.outcomes()}; {late} answers (of any status) later than {late_limit_ms:.0f} ms; "
        f"latency of all its answers: {latency_text(slow_all.latency())}",
    )
    s.notes.append(
        f"Injected delay measured on the server: minilm-int8 compute {per_batch[0]:.1f} ms per batch normally, "
        f"{per_batch[1]:.1f} ms slowed (modelfleet_compute_duration_seconds)."
    )
    return s


# ----- scenario 4: hostile inputs ----------------------------------------------------------------------


_NEW_SERIES_ALLOWED = 20


class RssWatch:
    """Polls the resident memory of the fleet's processes every 50 ms; kills -9 one that passes the
    guard (protects a shared machine; the supervisor restarts it) and remembers every peak."""

    def __init__(self, processes: dict[str, psutil.Process], kill_above_mb: float) -> None:
        self.processes = processes
        self.kill_above = kill_above_mb * 2**20
        self.peak = {name: p.memory_info().rss for name, p in processes.items()}
        self.killed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, process in self.processes.items():
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak[name], rss)
                if rss > self.kill_above and name not in self.killed:
                    self.killed.append(name)
                    with contextlib.suppress(psutil.Error):
                        process.kill()

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def scenario_hostile(ctx: Context) -> Scenario:
    s = Scenario("hostile", "hostile-input battery while ordinary traffic runs")
    s.notes.append(
        "Method: the issue's inputs (10 non-UTF-8 binary requests, so that some share a batch with ordinary ones), "
        "unknown model names with valid and malformed bodies, then seeded generated cases (structural, mutated "
        "JSON, binary extension, bad gzip), then the heavy cases, each sent once to the router and once to a "
        "replica directly, one request per connection, until the deadline; ordinary traffic at a fifth of "
        "capacity through the router throughout. RSS of every fleet process polled every 50 ms (psutil); "
        "/metrics read by the battery before it and right after the unknown names."
    )
    fleet, low = ctx.fleet(), ctx.low_rate()
    replica = fleet.replicas()[0]
    say(f"hostile: baseline {low:g}/s for {ctx.d.unloaded_s:g} s")
    _, baseline = run_load(
        fleet.router_url,
        [FLEET_MODEL],
        [{"rate_per_s": low, "duration_s": ctx.d.unloaded_s}],
        ctx.csv("hostile-base"),
    )
    targets = {"router": fleet.router_url, "server": replica.url}
    processes = fleet.processes()
    pids_before = {name: p.pid for name, p in processes.items()}
    rss_before = {name: p.memory_info().rss for name, p in processes.items()}
    out = ctx.work / "battery.json"
    command = [PY, str(BENCH_DIR / "_chaos_hostile.py"), "--model", FLEET_MODEL, "--input", "text",
               "--names", str(ctx.d.names), "--generated", str(ctx.d.generated), "--seed", "10",
               "--deadline-s", str(ctx.d.hostile_s), "--out", str(out)]  # fmt: skip
    command += [arg for name, url in targets.items() for arg in ("--target", f"{name}={url}")]
    with RssWatch(processes, ctx.args.rss_guard_mb) as watch:
        battery = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_ENV)
        try:
            line = battery.stdout.readline() if battery.stdout else ""
            say(
                f"  battery {line.strip()} cases per target; ordinary traffic {low:g}/s for {ctx.d.hostile_s:g} s beside it"
            )
            _, under = run_load(
                fleet.router_url,
                [FLEET_MODEL],
                [{"rate_per_s": low, "duration_s": ctx.d.hostile_s}],
                ctx.csv("hostile-under"),
            )
            battery.wait(ctx.d.hostile_s + 30)
        finally:
            if battery.poll() is None:
                battery.kill()
                battery.wait(5)
        time.sleep(1.0)
    rss_after = {}
    for name, process in processes.items():
        with contextlib.suppress(psutil.Error):
            rss_after[name] = process.memory_info().rss
    summary = json.loads(out.read_text()) if out.exists() else {"results": {}, "not_sent": {}, "cases": 0}
    results = [dict(r, target=name) for name, rows in summary["results"].items() for r in rows]
    fivexx = [r for r in results if r.get("status", 0) >= 500]
    closed = [r for r in results if r.get("status") == 0]
    no_json = [r for r in results if 400 <= r.get("status", 0) < 500 and not r.get("json_error")]
    ordinary_5xx = {k: v for k, v in under.outcomes().items() if k.startswith("http_5")}
    s.judge(
        "0 5xx",
        not fivexx and not ordinary_5xx,
        f"battery: {len(fivexx)} 5xx of {len(results)} answers ({_case_counts(fivexx) or 'none'}); "
        f"ordinary traffic: {ordinary_5xx or 'no 5xx'}",
    )
    growth = {name: (watch.peak[name] - rss_before[name]) / 2**20 for name in rss_before}
    end_growth = {name: (rss_after[name] - rss_before[name]) / 2**20 for name in rss_after}
    s.judge(
        "resident memory grows ≤ 50 MB",
        max(growth.values()) <= 50 and not watch.killed,
        "peak growth "
        + ", ".join(f"{n} {g:+.0f} MB" for n, g in growth.items())
        + (
            f"; killed by the {ctx.args.rss_guard_mb:g} MB guard: {', '.join(watch.killed)}"
            if watch.killed
            else ""
        ),
    )
    served = set(fleet.state().models) | {"unknown"}
    pids_after = {r.id: r.pid for r in fleet.state().processes}
    restarted = sorted(name for name, pid in pids_before.items() if pids_after.get(name) != pid)
    snapshots = summary.get("metrics", {})
    metric_rows, unmeasured, grown = [], [], False
    for name in targets:
        before, after = (
            snapshots.get(name, {}).get("before", {}),
            snapshots.get(name, {}).get("after_names", {}),
        )
        if before.get("status") != 200 or after.get("status") != 200:
            unmeasured.append(f"{name} /metrics not read before and after the unknown names")
            continue
        new = sorted(set(after["model_labels"]) - set(before["model_labels"]) - served)
        # A few new series are legitimate (a status code seen for the first time); one per name is not.
        grown |= bool(new) or after["model_label_count"] > before["model_label_count"] + 1
        grown |= after["series"] > before["series"] + _NEW_SERIES_ALLOWED
        metric_rows.append(
            f"{name}: {before['bytes']:,} → {after['bytes']:,} bytes, {before['series']} → {after['series']} series, "
            f"model labels {before['model_label_count']} → "
            f"{after['model_label_count']}{' (new: ' + ', '.join(new[:3]) + ')' if new else ''}"
        )
    names_sent = sum(1 for r in summary["results"].get("router", []) if "model name" in r["case"])
    s.judge(
        "/metrics unchanged by unknown names",
        None if unmeasured else not grown,
        "; ".join(unmeasured + metric_rows) + f" ({names_sent} unknown-name requests per target)",
    )
    base, during = (
        baseline.select(measured=True, ok=True).latency(),
        under.select(measured=True, ok=True).latency(),
    )
    limit = None if base.p99_ms is None else 2 * base.p99_ms
    s.judge(
        "ordinary p99 ≤ 2× unloaded (and every ordinary request answered: a p99 of the survivors alone would hide failures)",
        within(during.p99_ms, limit) and under.outcomes().keys() <= {"ok"},
        f"p99 {ms(during.p99_ms)} during the battery vs {ms(base.p99_ms)} before (limit {ms(limit)}); "
        f"ordinary outcomes {under.outcomes()}",
    )
    s.figures = {
        "battery_cases_per_target": summary["cases"],
        "battery_seconds": summary.get("seconds"),
        "not_sent_at_deadline": summary["not_sent"],
        "answers": len(results),
        "closed_without_answer": len(closed),
        "4xx_without_json_error": len(no_json),
        "restarted_during_battery": restarted,
        "rss_before_mb": {n: round(v / 2**20, 1) for n, v in rss_before.items()},
        "rss_peak_growth_mb": {n: round(v, 1) for n, v in growth.items()},
        "rss_end_growth_mb": {n: round(v, 1) for n, v in end_growth.items()},
        "metrics_snapshots": {
            n: {k: {kk: vv for kk, vv in v.items() if kk != "model_labels"} for k, v in m.items()}
            for n, m in snapshots.items()
        },
        "ordinary_before": asdict(base),
        "ordinary_during": asdict(during),
    }
    rows = ["| case | target | status | seconds |", "|---|---|---|---|"]
    for r in results:
        if not r["generated"] and not r["case"].startswith("random model name"):
            status = r.get("status") or r.get("error")
            rows.append(f"| {r['case']} | {r['target']} | {status} | {r['seconds']:.3f} |")
    generated = [r for r in results if r["generated"] or r["case"].startswith("random model name")]
    grouped: dict[tuple[str, str, str], int] = {}
    for r in generated:
        key = (r["case"], r["target"], str(r.get("status") or r.get("error")))
        grouped[key] = grouped.get(key, 0) + 1
    rows += [
        f"| {case} ×{count} | {target} | {status} | |"
        for (case, target, status), count in sorted(grouped.items())
    ]
    s.tables.append(
        "Battery answers (issue cases one by one; random names and generated cases grouped):\n\n"
        + "\n".join(rows)
    )
    s.notes.append(f"After the battery: {fleet.settle()}.")
    return s


def _case_counts(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        key = f"{r['case']} via {r['target']}: {r.get('status')}"
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{k} ×{v}" if v > 1 else k for k, v in counts.items())


# ----- scenario 5: slow-header connections --------------------------------------------------------------


def scenario_slow_headers(ctx: Context) -> Scenario:
    count = 1000
    s = Scenario("slow_headers", f"{count:,} slow-header connections to the router")
    s.notes.append(
        "Method: a child process opens the connections (100 at a time) and sends `POST … HTTP/1.1`, `Host` and "
        "the start of one more header, then one byte every 0.5 s, never the end of the headers; it records when "
        "the router closes each. Ordinary traffic at a fifth of capacity runs once all are open."
    )
    fleet, low = ctx.fleet(), ctx.low_rate()
    timeout_s = fleet.header_timeout_s
    observe_s = (timeout_s + 5.0) if timeout_s is not None else ctx.d.slow_headers_s + 8.0
    say(f"slow headers: baseline {low:g}/s for {ctx.d.unloaded_s:g} s")
    _, baseline = run_load(
        fleet.router_url,
        [FLEET_MODEL],
        [{"rate_per_s": low, "duration_s": ctx.d.unloaded_s}],
        ctx.csv("slowhdr-base"),
    )
    out = ctx.work / "slow-headers.json"
    port = urlsplit(fleet.router_url).port
    command = [PY, str(BENCH_DIR / "_chaos_slow.py"), "headers", "--port", str(port), "--count", str(count),
               "--interval-s", "0.5", "--observe-s", str(observe_s), "--out", str(out)]  # fmt: skip
    router = fleet.processes().get("router")
    clients = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_ENV)
    try:
        line = clients.stdout.readline().strip() if clients.stdout else ""
        fds = router.num_fds() if router is not None else None
        say(
            f"  {line}; router holds {fds} file descriptors; ordinary traffic {low:g}/s for {ctx.d.slow_headers_s:g} s"
        )
        _, during = run_load(
            fleet.router_url,
            [FLEET_MODEL],
            [{"rate_per_s": low, "duration_s": ctx.d.slow_headers_s}],
            ctx.csv("slowhdr-under"),
        )
        clients.wait(observe_s + 30)
    finally:
        if clients.poll() is None:
            clients.kill()
            clients.wait(5)
    summary = json.loads(out.read_text()) if out.exists() else {}
    base, under = (
        baseline.select(measured=True, ok=True).latency(),
        during.select(measured=True, ok=True).latency(),
    )
    limit = None if base.p99_ms is None else 2 * base.p99_ms
    s.judge(
        "ordinary p99 ≤ 2× unloaded (and every ordinary request answered)",
        within(under.p99_ms, limit) and during.outcomes().keys() <= {"ok"},
        f"p99 {ms(under.p99_ms)} with the slow connections open vs {ms(base.p99_ms)} before (limit {ms(limit)}); "
        f"outcomes {during.outcomes()}",
    )
    closed = summary.get("closed_after_s", [])
    still_open = summary.get("still_open", count)
    if timeout_s is None:
        s.judge(
            "the slow connections closed after the header timeout",
            False,
            f"the router has no header-read timeout setting (no `router.*header*timeout*` field); "
            f"{still_open} of {count} still open after {observe_s:g} s, {len(closed)} closed",
        )
    else:
        late = [t for t in closed if t > timeout_s + 1.0]
        s.judge(
            f"the slow connections closed after the header timeout (router.{fleet.header_timeout_field} = {timeout_s:g} s, +1 s slack)",
            still_open == 0 and not late,
            f"{len(closed)} of {count} closed, {still_open} still open after {observe_s:g} s, {len(late)} late, "
            f"{summary.get('connect_failed', 0)} refused at connect; "
            f"close times {_spread(closed)}",
        )
    s.figures = {"rate_rps": low, "router_fds_with_slow_connections": fds, "clients": {k: v for k, v in summary.items() if k != "closed_after_s"},
                 "close_times_s": _spread(closed), "ordinary_before": asdict(base), "ordinary_during": asdict(under)}  # fmt: skip
    return s


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    return f"min {ordered[0]:.2f} s, median {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s"
