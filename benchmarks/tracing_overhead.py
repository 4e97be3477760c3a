"""What tracing costs the request path: throughput before the tracing code, with tracing off, and on.

Three contenders, each a `modelfleet serve` process and a `modelfleet fleet router` in front of it:

* before: the source tree at ``--baseline`` (default: the merge base of HEAD and main), extracted with
  `git archive`, so the "before" is the code as it was, not a guess;
* off: this tree, tracing off (the default) — the figure that must stay within 1 % of before;
* on: this tree, tracing on, exporting every span over OTLP/HTTP to a receiver in this process that
  reads and discards them (what sampling everything costs).

Closed loop with wrk (CONCURRENCY keep-alive connections), straight to the server and through the
router, rounds alternating the contenders so drift hits each alike; the figure is the median of the
rounds. A tiny linear model, so the request path (not the model) is what is measured: the worst case.

Writes benchmarks/results/tracing_overhead.md.

    .venv/bin/python benchmarks/tracing_overhead.py            # full: 7 rounds of 10 s per contender and target (~8 min)
    .venv/bin/python benchmarks/tracing_overhead.py --short    # 3 rounds of 3 s (< 2 min), to check it runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._harness import require_wrk, run_wrk, wait_ready, write_result  # noqa: E402
from tests.support.linear_model import infer_body, make_artifact  # noqa: E402
from tests.support.ports import port_from_file  # noqa: E402

CONCURRENCY = 16
CONTENDERS = ("before", "off", "on")
TARGETS = ("server", "router")
REQUIRED_RATIO = 0.99


class Sink:
    """An OTLP/HTTP endpoint that accepts every export and keeps only the count of bytes."""

    def __init__(self) -> None:
        self.received_bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.received_bytes += len(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class Contender:
    name: str
    server_url: str
    router_url: str
    processes: list[subprocess.Popen[bytes]]


def _baseline_ref(given: str | None) -> str:
    if given:
        return given
    found = subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        sys.exit("no merge base of HEAD and main: pass --baseline REF (the commit before tracing)")
    return found.stdout.strip()


def _extract(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def _start(
    name: str, src: Path, artifact: Path, folder: Path, tracing: dict[str, object] | None
) -> Contender:
    env = {**os.environ, "PYTHONPATH": str(src)}
    spec: dict[str, object] = {"models": [{"path": str(artifact), "name": "linear"}]}
    if tracing is not None:
        spec["tracing"] = tracing
    spec_file = folder / f"{name}-serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    port_file = folder / f"{name}-server.port"
    command = [sys.executable, "-m", "modelfleet.cli.main"]
    server = subprocess.Popen(
        [*command, "serve", "--spec", str(spec_file), "--port", "0", "--port-file", str(port_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server_url = f"http://127.0.0.1:{port_from_file(port_file, server)}"
    router_config: dict[str, object] = {
        "fleet": "bench",
        "port": 0,
        "upstreams": [{"name": "g-0", "group": "g", "url": server_url, "models": ["linear"]}],
    }
    if tracing is not None:
        router_config["tracing"] = tracing
    router_file = folder / f"{name}-router.json"
    router_file.write_text(json.dumps(router_config))
    router_port_file = folder / f"{name}-router.port"
    router = subprocess.Popen(
        [*command, "fleet", "router", str(router_file), "--port-file", str(router_port_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    router_url = f"http://127.0.0.1:{port_from_file(router_port_file, router, what='router')}"
    wait_ready(server_url, server)
    wait_ready(router_url, router)
    return Contender(name, server_url, router_url, [router, server])


@contextlib.contextmanager
def _contenders(baseline: str, folder: Path, sink: Sink) -> Iterator[list[Contender]]:
    artifact = make_artifact(folder / "linear", "linear", 0)
    before_src = _extract(baseline, folder)
    current = ROOT / "src"
    tracing_on = {"enabled": True, "endpoint": sink.url, "export_interval_s": 1.0}
    started: list[Contender] = []
    try:
        started.append(_start("before", before_src, artifact, folder, None))
        started.append(_start("off", current, artifact, folder, None))
        started.append(_start("on", current, artifact, folder, tracing_on))
        yield started
    finally:
        for contender in started:
            for process in contender.processes:
                process.terminate()
        for contender in started:
            for process in contender.processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="3 rounds of 3 s: checks the script, < 2 min")
    parser.add_argument(
        "--baseline", help="git ref of the code before tracing (default: merge base with main)"
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="length of one wrk run")
    args = parser.parse_args()
    require_wrk()
    rounds = args.rounds or (3 if args.short else 7)
    seconds = args.seconds or (3.0 if args.short else 10.0)
    baseline = _baseline_ref(args.baseline)
    started_at = time.monotonic()
    load_start = os.getloadavg()
    body = json.dumps(infer_body(rows=1))
    sink = Sink()
    rates: dict[tuple[str, str], list[float]] = {(c, t): [] for c in CONTENDERS for t in TARGETS}
    errors: dict[tuple[str, str], int] = dict.fromkeys(rates, 0)
    p99_ms: dict[tuple[str, str], list[float]] = {key: [] for key in rates}
    with (
        tempfile.TemporaryDirectory(prefix="tracing-overhead-") as tmp,
        _contenders(baseline, Path(tmp), sink) as contenders,
    ):
        for contender in contenders:  # warm-up: first requests, connection pools, caches
            for target in TARGETS:
                url = contender.server_url if target == "server" else contender.router_url
                run_wrk(f"{url}/v2/models/linear/infer", body, CONCURRENCY, 1.0)
        for round_index in range(rounds):
            order = contenders[round_index % 3 :] + contenders[: round_index % 3]  # who goes first rotates
            for target in TARGETS:
                for contender in order:
                    url = contender.server_url if target == "server" else contender.router_url
                    result = run_wrk(f"{url}/v2/models/linear/infer", body, CONCURRENCY, seconds)
                    rates[(contender.name, target)].append(result.requests_per_s)
                    p99_ms[(contender.name, target)].append(result.p99_s * 1000)
                    errors[(contender.name, target)] += result.errors
    load_end = os.getloadavg()
    total_s = time.monotonic() - started_at
    lines = [
        f"Mode: {'short' if args.short else 'full'}; {rounds} rounds of {seconds:g} s per contender and target, "
        f"wrk closed loop with {CONCURRENCY} connections, tiny linear model (FP32 [1, 4]); baseline `{baseline}`; "
        f"total {total_s:.0f} s; load average (1/5/15 min) {' / '.join(f'{v:.2f}' for v in load_start)} at the "
        f"start, {' / '.join(f'{v:.2f}' for v in load_end)} at the end. The OTLP sink received "
        f"{sink.received_bytes:,} bytes of spans from the `on` contender.",
        "",
        "| target | contender | requests/s (median) | rounds | p99 ms (median) | errors | ratio to before |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for target in TARGETS:
        before = statistics.median(rates[("before", target)])
        for name in CONTENDERS:
            median = statistics.median(rates[(name, target)])
            ratio = median / before if before else float("nan")
            runs = ", ".join(f"{value:.0f}" for value in rates[(name, target)])
            lines.append(
                f"| {target} | {name} | {median:.0f} | {runs} | {statistics.median(p99_ms[(name, target)]):.2f} "
                f"| {errors[(name, target)]} | {ratio:.3f} |"
            )
            if name == "off":
                verdict = "PASS" if ratio >= REQUIRED_RATIO else "FAIL"
                verdicts.append(
                    f"- {target}: tracing off / before = {ratio:.3f} (required ≥ {REQUIRED_RATIO}): **{verdict}**"
                )
    lines += ["", *verdicts]
    command = "python benchmarks/tracing_overhead.py" + (" --short" if args.short else "")
    if args.baseline:
        command += f" --baseline {args.baseline}"
    path = write_result("tracing_overhead", command, "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
