"""Serving latency and throughput, side by side in one run on one machine (bundled MiniLM, fp32):

  (a) in-process, no HTTP (tokenize + ONNX Runtime through modelfleet.runtime): the fixed-batch
      ceiling (best embeddings/s over fixed batch sizes and two thread layouts) and the batch-1 run
      time (one caller, p50), for the plain graph and for the `modelfleet build --optimize` one;
  (b) `modelfleet serve` (dynamic batching) on each of the two artifacts;
  (c) a reference server in the style of the AWS guidance (benchmarks/reference_server.py): FastAPI +
      uvicorn, one request = one model run, same ONNX Runtime settings, plain artifact;
  (d) optionally `--compare-src DIR`: modelfleet from another checkout's src/ (e.g. before a change).

Load comes from wrk (one thread, closed loop, a fixed V2 JSON body of one sentence) at 1, 16 and 64
connections after a warm-up. Ratios: served at 64 connections ÷ the ceiling of the same graph; served
p50 at one connection − the in-process batch-1 p50; modelfleet ÷ reference; optimized ÷ plain. A
serving-overhead pair (full mode only) runs a small scikit-learn model through modelfleet against a
constant-output endpoint on the reference server.

    .venv/bin/python benchmarks/serve_throughput.py            # full run (~9 minutes, builds included)
    .venv/bin/python benchmarks/serve_throughput.py --short    # 3 s points, under 2 minutes with
        --minilm DIR --minilm-optimized DIR (prebuilt artifacts; building them takes a minute or two)

Writes benchmarks/results/serve_throughput.md (--short: serve_throughput-short.md; or --output).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from modelfleet.manifest import read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import WrkResult, free_port, require_wrk, run_wrk, server_process, write_result

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT_BODY = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [SENTENCE]}]})
IRIS_BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
)
CONNECTIONS = (1, 16, 64)
MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main", "serve"]


@dataclass(frozen=True)
class Mode:
    point_s: float  # wrk seconds per connection count
    warmup_s: float
    ceiling_s: float  # seconds per in-process (layout, batch size)
    batch_sizes: tuple[int, ...]
    overhead_pair: bool


FULL = Mode(point_s=15.0, warmup_s=5.0, ceiling_s=5.0, batch_sizes=(8, 16, 32, 64, 128), overhead_pair=True)
SHORT = Mode(point_s=3.0, warmup_s=1.0, ceiling_s=1.5, batch_sizes=(32, 64), overhead_pair=False)


def build_artifacts(work: Path) -> tuple[Path, Path]:
    """The bundled MiniLM (plain fp32) and an iris logistic regression; serve_memory.py uses these too."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from skops.io import dump

    from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact

    minilm = work / "minilm"
    build_artifact(BUNDLED_SOURCE, minilm, BuildOptions(name="minilm"))
    features, labels = load_iris(return_X_y=True)
    skops_file = work / "iris.skops"
    dump(LogisticRegression(max_iter=500).fit(features, labels), skops_file)
    iris = work / "iris"
    build_artifact(skops_file, iris, BuildOptions(name="iris"))
    return minilm, iris


def build_optimized(work: Path) -> Path:
    from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact

    output = work / "minilm-optimized"
    build_artifact(BUNDLED_SOURCE, output, BuildOptions(name="minilm", optimize=True))
    return output


def _run_until(model: Any, texts: np.ndarray, stop_at: float, counts: list[int], index: int) -> None:
    while time.perf_counter() < stop_at:
        model.predict({"text": texts})
        counts[index] += len(texts)


@dataclass
class InProcess:
    layout: str  # of the ceiling
    batch: int
    ceiling: float  # embeddings/s
    rates: dict[str, dict[int, float]]
    batch1_p50_s: float  # one caller, the server's default layout (one session, every core)


def measure_in_process(artifact: Path, mode: Mode) -> InProcess:
    """Embeddings/s of tokenize + ORT in this process, no HTTP, per thread layout and batch size, and
    the batch-1 run time. Two layouts: one session using every core, and one single-threaded session
    per core run from parallel threads (ORT releases the GIL)."""
    from modelfleet.runtime import load_model
    from modelfleet.runtime.onnx import default_intra_op_threads

    cores = default_intra_op_threads(1)
    layouts = {
        f"1 session x {cores} threads": [load_model(artifact, intra_op_threads=cores)],
        f"{cores} sessions x 1 thread": [load_model(artifact, intra_op_threads=1) for _ in range(cores)],
    }
    # Batch 1, one caller, on the layout the server uses by default: what a lone request costs.
    served_layout = next(iter(layouts.values()))[0]
    one = {"text": np.array([SENTENCE.encode()], dtype=object)}
    for _ in range(20):
        served_layout.predict(served_layout.validate_inputs(one))
    run_s: list[float] = []
    stop_at = time.perf_counter() + mode.ceiling_s * 2
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        served_layout.predict(served_layout.validate_inputs(one))
        run_s.append(time.perf_counter() - started)
    rates: dict[str, dict[int, float]] = {}
    for layout, models in layouts.items():
        rates[layout] = {}
        for batch_size in mode.batch_sizes:
            texts = np.array([SENTENCE.encode()] * batch_size, dtype=object)
            counts = [0] * len(models)
            for model in models:
                model.predict({"text": texts})
            stop_at = time.perf_counter() + mode.ceiling_s
            threads = [
                threading.Thread(target=_run_until, args=(model, texts, stop_at, counts, i))
                for i, model in enumerate(models)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rates[layout][batch_size] = sum(counts) / (time.perf_counter() - started)
        for model in models:
            model.close()
    layout, batch = max(
        ((name, b) for name in rates for b in rates[name]), key=lambda nb: rates[nb[0]][nb[1]]
    )
    return InProcess(layout, batch, rates[layout][batch], rates, float(np.median(run_s)))


@dataclass
class Served:
    label: str
    results: list[WrkResult]  # one per CONNECTIONS
    rss_mib: float


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    command: list[str]
    port: int
    infer_path: str
    ready_path: str = "/v2/health/ready"
    env: dict[str, str] | None = None


def wait_idle(pids: list[int], timeout_s: float = 15.0) -> None:
    """Until the servers use under a tenth of a core together: after wrk stops, the reference's thread
    pool still runs the requests it had queued, which would otherwise load the next contender's point."""
    processes = [psutil.Process(pid) for pid in pids]
    processes += [child for p in list(processes) for child in p.children(recursive=True)]
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.cpu_percent(None)  # starts each process's measuring interval
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if sum(process.cpu_percent(None) for process in processes) < 10.0:
            return


def measure_servers(contenders: list[Contender], mode: Mode) -> dict[str, Served]:
    """Every server up at once (an idle one costs nothing), then each connection count run on each in turn:
    on a machine whose load drifts, the contenders of one connection count are measured minutes apart at most
    instead of a whole server's turn apart."""
    results: dict[str, list[WrkResult]] = {c.key: [] for c in contenders}
    with contextlib.ExitStack() as stack:
        processes = {}
        for contender in contenders:
            print(f"starting {contender.label} …", flush=True)
            url = f"http://127.0.0.1:{contender.port}"
            processes[contender.key] = stack.enter_context(
                server_process(contender.command, url, contender.ready_path, env=contender.env)
            )
        for contender in contenders:
            run_wrk(f"http://127.0.0.1:{contender.port}{contender.infer_path}", TEXT_BODY, 64, mode.warmup_s)
        for connections in CONNECTIONS:
            for contender in contenders:
                wait_idle([processes[c.key].pid for c in contenders])
                url = f"http://127.0.0.1:{contender.port}{contender.infer_path}"
                result = run_wrk(url, TEXT_BODY, connections, mode.point_s)
                results[contender.key].append(result)
                print(
                    f"  {contender.label}, {connections} connections: {result.ok_per_s:.1f}/s p50 "
                    f"{result.p50_s * 1e3:.2f} ms p99 {result.p99_s * 1e3:.1f} ms",
                    flush=True,
                )
        served = {}
        for contender in contenders:
            server = psutil.Process(processes[contender.key].pid)
            # With --workers N the parent only supervises: count every worker process too.
            rss = sum(p.memory_info().rss for p in [server, *server.children(recursive=True)]) / 2**20
            served[contender.key] = Served(contender.label, results[contender.key], rss)
    return served


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="3 s points, 1 s warm-up, batch 32/64 only")
    parser.add_argument(
        "--minilm", type=Path, help="an already built plain MiniLM artifact (default: build it)"
    )
    parser.add_argument(
        "--minilm-optimized", type=Path, help="an already built `build --optimize` MiniLM (default: build it)"
    )
    parser.add_argument("--iris", type=Path, help="an already built iris artifact (default: build it)")
    parser.add_argument("--workers", type=int, default=1, help="modelfleet serve --workers")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="modelfleet model runs at once per process (one shared session)",
    )
    parser.add_argument(
        "--compare-instances",
        type=int,
        help="also serve the plain artifact with this many runs at once (a thread layout beside the default)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-delay-s", type=float, default=0.002)
    parser.add_argument(
        "--compare-src", type=Path, help="also serve the plain artifact with modelfleet from this src/ folder"
    )
    parser.add_argument(
        "--output", type=Path, help="results file (default benchmarks/results/serve_throughput[-short].md)"
    )
    args = parser.parse_args()
    require_wrk()
    mode = SHORT if args.short else FULL
    load_start = os.getloadavg()
    wall_started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="serve-throughput-"))
    minilm, iris = args.minilm, args.iris
    if minilm is None or (mode.overhead_pair and iris is None):
        print("building the bundled MiniLM and an iris model …", flush=True)
        built_minilm, built_iris = build_artifacts(work)
        minilm, iris = minilm or built_minilm, iris or built_iris
    optimized = args.minilm_optimized
    if optimized is None:
        print("building the bundled MiniLM with --optimize …", flush=True)
        optimized = build_optimized(work)
    graphs = {"plain": minilm, "optimized": optimized}

    in_process: dict[str, InProcess] = {}
    for graph, artifact in graphs.items():
        print(f"in-process, {graph} graph …", flush=True)
        in_process[graph] = measure_in_process(artifact, mode)
        best = in_process[graph]
        print(
            f"  ceiling {best.ceiling:.1f}/s ({best.layout}, batch {best.batch}); batch-1 p50 "
            f"{best.batch1_p50_s * 1e3:.2f} ms",
            flush=True,
        )

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve_flags = [
        "--workers",
        str(args.workers),
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-delay-s",
        str(args.max_delay_s),
    ]

    def infer_path(artifact: Path) -> str:
        return f"/v2/models/{read_manifest(artifact).name}/infer"

    def modelfleet(artifact: Path, port: int, instances: int | None = None) -> list[str]:
        instances = args.instances if instances is None else instances
        if instances == 1:
            return [*MODELFLEET, "--model", str(artifact), "--port", str(port), *serve_flags]
        spec = work / f"{artifact.name}-{instances}-spec.yaml"  # `instances` is a spec field, not a flag
        spec.write_text(json.dumps({"models": [{"path": str(artifact.resolve()), "instances": instances}]}))
        return [*MODELFLEET, "--spec", str(spec), "--port", str(port), *serve_flags]

    contenders = []
    for graph, artifact in graphs.items():
        own = free_port()
        contenders.append(
            Contender(graph, f"modelfleet, {graph}", modelfleet(artifact, own), own, infer_path(artifact))
        )
    if args.compare_instances is not None:
        own = free_port()
        contenders.append(
            Contender(
                "plain-instances",
                f"modelfleet, plain, instances {args.compare_instances}",
                modelfleet(minilm, own, args.compare_instances),
                own,
                infer_path(minilm),
            )
        )
    if args.compare_src is not None:
        own = free_port()
        env = {**os.environ, "PYTHONPATH": str(args.compare_src.resolve())}
        contenders.append(
            Contender(
                "compare",
                f"modelfleet from {args.compare_src}",
                modelfleet(minilm, own),
                own,
                infer_path(minilm),
                env=env,
            )
        )
    reference = [sys.executable, str(Path(__file__).parent / "reference_server.py")]
    own = free_port()
    contenders.append(
        Contender(
            "reference",
            "reference (FastAPI, one request = one run)",
            [*reference, "--artifact", str(minilm), "--port", str(own)],
            own,
            infer_path(minilm),
            "/docs",
        )
    )
    served = measure_servers(contenders, mode)

    overhead_rows: list[str] = []
    if mode.overhead_pair:
        assert iris is not None
        print("serving overhead pair (iris vs constant endpoint) …", flush=True)
        with server_process([*MODELFLEET, "--model", str(iris), "--port", str(port)], url):
            run_wrk(f"{url}/v2/models/iris/infer", IRIS_BODY, 64, mode.warmup_s)
            mf_small = run_wrk(f"{url}/v2/models/iris/infer", IRIS_BODY, 64, mode.point_s)
        with server_process([*reference, "--constant", "--port", str(port)], url, "/docs"):
            run_wrk(f"{url}/v2/models/iris/infer", IRIS_BODY, 64, mode.warmup_s)
            ref_small = run_wrk(f"{url}/v2/models/iris/infer", IRIS_BODY, 64, mode.point_s)
        overhead_rows = [
            "## Serving overhead (iris through modelfleet vs constant endpoint on the reference, 64 connections)",
            "| contender | ok req/s | p50 ms | p99 ms | errors |",
            "|---|---|---|---|---|",
            f"| modelfleet, iris model | {mf_small.ok_per_s:.0f} | {mf_small.p50_s * 1e3:.2f} | {mf_small.p99_s * 1e3:.2f} | {mf_small.errors} |",
            f"| reference, constant output | {ref_small.ok_per_s:.0f} | {ref_small.p50_s * 1e3:.2f} | {ref_small.p99_s * 1e3:.2f} | {ref_small.errors} |",
            f"\nmodelfleet ÷ reference: {ratio(mf_small.ok_per_s, ref_small.ok_per_s)}.",
            "",
        ]

    load_end = os.getloadavg()
    body = render(args, mode, in_process, served, overhead_rows, load_start, load_end, wall_started)
    command = "python benchmarks/serve_throughput.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    # A short run goes beside the full run's file instead of replacing its figures.
    name = "serve_throughput-short" if args.short else "serve_throughput"
    path = write_result(name, command.strip(), body, args.output)
    print(body)
    print(f"\nwritten to {path}")


def render(
    args: argparse.Namespace,
    mode: Mode,
    in_process: dict[str, InProcess],
    served: dict[str, Served],
    overhead_rows: list[str],
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
    wall_started: float,
) -> str:
    plain, optimized = in_process["plain"], in_process["optimized"]
    graph_of = {
        "plain": "plain",
        "optimized": "optimized",
        "compare": "plain",
        "plain-instances": "plain",
        "reference": "plain",
    }
    header = "| contender | graph | " + " | ".join(
        f"{c} conn: ok req/s | p50 ms | p99 ms | errors" for c in CONNECTIONS
    )
    rows = [header + " | RSS MiB |", "|---|---|" + "---|---|---|---|" * len(CONNECTIONS) + "---|"]
    for key, result in served.items():
        cells = " | ".join(
            f"{r.ok_per_s:.1f} | {r.p50_s * 1e3:.2f} | {r.p99_s * 1e3:.1f} | {r.errors}"
            for r in result.results
        )
        rows.append(f"| {result.label} | {graph_of[key]} | {cells} | {result.rss_mib:.0f} |")

    ratio_rows = [
        "| ratio | " + " | ".join(f"{c} conn" for c in CONNECTIONS) + " |",
        "|---|" + "---|" * len(CONNECTIONS),
    ]

    def line(name: str, values: list[str]) -> None:
        ratio_rows.append(f"| {name} | " + " | ".join(values) + " |")

    for key in served:
        if key == "reference":
            continue
        graph = in_process[graph_of[key]]
        line(
            f"{served[key].label} ÷ in-process ceiling ({graph_of[key]} graph)",
            [ratio(r.ok_per_s, graph.ceiling) for r in served[key].results],
        )
    for key in served:
        if key != "reference":
            line(
                f"{served[key].label} ÷ reference",
                [
                    ratio(a.ok_per_s, b.ok_per_s)
                    for a, b in zip(served[key].results, served["reference"].results, strict=True)
                ],
            )
    line(
        "modelfleet optimized ÷ modelfleet plain",
        [
            ratio(a.ok_per_s, b.ok_per_s)
            for a, b in zip(served["optimized"].results, served["plain"].results, strict=True)
        ],
    )
    if "compare" in served:
        line(
            "modelfleet plain ÷ modelfleet from --compare-src",
            [
                ratio(a.ok_per_s, b.ok_per_s)
                for a, b in zip(served["plain"].results, served["compare"].results, strict=True)
            ],
        )

    def one_connection_gap_ms(key: str) -> float:
        return (served[key].results[0].p50_s - in_process[graph_of[key]].batch1_p50_s) * 1e3

    at64 = {key: served[key].results[-1].ok_per_s for key in served}
    at1 = {key: served[key].results[0].ok_per_s for key in served}
    targets = [
        (
            "1 connection, plain: modelfleet p50 − in-process batch-1 p50 ≤ 0.5 ms",
            f"{one_connection_gap_ms('plain'):+.2f} ms",
            one_connection_gap_ms("plain") <= 0.5,
        ),
        (
            "1 connection, optimized: modelfleet p50 − in-process batch-1 p50 ≤ 0.5 ms",
            f"{one_connection_gap_ms('optimized'):+.2f} ms",
            one_connection_gap_ms("optimized") <= 0.5,
        ),
        (
            "1 connection: modelfleet (plain) ≥ reference req/s",
            ratio(at1["plain"], at1["reference"]),
            at1["plain"] >= at1["reference"],
        ),
        (
            "64 connections, plain: modelfleet ≥ 1.0 × in-process ceiling (same graph)",
            ratio(at64["plain"], plain.ceiling),
            at64["plain"] >= plain.ceiling,
        ),
        (
            "64 connections, optimized: modelfleet ≥ 1.0 × in-process ceiling (same graph)",
            ratio(at64["optimized"], optimized.ceiling),
            at64["optimized"] >= optimized.ceiling,
        ),
        *(
            [
                (
                    f"64 connections, plain, instances {args.compare_instances}: ≥ 1.0 × in-process ceiling",
                    ratio(at64["plain-instances"], plain.ceiling),
                    at64["plain-instances"] >= plain.ceiling,
                )
            ]
            if "plain-instances" in served
            else []
        ),
        (
            "optimized graph raises the in-process ceiling",
            ratio(optimized.ceiling, plain.ceiling),
            optimized.ceiling > plain.ceiling,
        ),
    ]
    ceiling_lines = []
    for graph, result in in_process.items():
        ceiling_lines.append(
            f"- **{graph}**: ceiling **{result.ceiling:.1f} embeddings/s** ({result.layout}, batch {result.batch}); "
            f"batch-1 run p50 **{result.batch1_p50_s * 1e3:.2f} ms** (one caller, one session on every core)"
        )
        for layout, by_batch in result.rates.items():
            ceiling_lines.append(
                f"  - {layout}: " + " · ".join(f"batch {b}: {r:.0f}/s" for b, r in by_batch.items())
            )
    serve_flags = (
        f"--workers {args.workers} --max-batch-size {args.max_batch_size} --max-delay-s {args.max_delay_s}; "
        f"instances {args.instances}"
    )

    return "\n".join(
        [
            f"Mode: {'short' if args.short else 'full'}; wall time {time.perf_counter() - wall_started:.0f} s; "
            f"load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, "
            f"at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}.",
            f"Model: bundled all-MiniLM-L6-v2, fp32; plain graph and the `modelfleet build --optimize` graph "
            f"(ONNX Runtime transformer fusions). One sentence per request ({len(SENTENCE)} characters).",
            f"modelfleet flags: `{serve_flags}`. wrk: 1 thread, {mode.point_s:.0f} s per point after a "
            f"{mode.warmup_s:.0f} s warm-up at 64 connections; in-process: {mode.ceiling_s:.1f} s per batch size.",
            "",
            "## In-process (tokenize + ONNX Runtime, no HTTP)",
            *ceiling_lines,
            "",
            "## Served (closed loop, wrk)",
            "ok req/s: successful answers per second (wrk's rate less its non-2xx answers, which admission's "
            "fast 503s would otherwise inflate); p50/p99 are wrk's, over every answer.",
            "",
            *rows,
            "",
            "## Ratios",
            *ratio_rows,
            "",
            "1 connection, p50 − in-process batch-1 p50 (same graph): "
            + ", ".join(f"{served[k].label} {one_connection_gap_ms(k):+.2f} ms" for k in served)
            + ".",
            "",
            *overhead_rows,
            "## Targets (issue 17)",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if met else '**no**'} |" for name, value, met in targets],
        ]
    )


if __name__ == "__main__":
    main()
