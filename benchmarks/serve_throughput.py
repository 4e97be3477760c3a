"""Serving throughput, side by side in one run on one machine:

  (a) the in-process ceiling: tokenize + ONNX Runtime at the best batch size, no HTTP;
  (b) `modelfleet serve` (dynamic batching);
  (c) a reference server in the style of the AWS guidance (benchmarks/reference_server.py):
      FastAPI + uvicorn, one request = one model run, same ONNX Runtime settings.

Load comes from wrk with a fixed V2 JSON body of one sentence, at 1, 16 and 64 connections, after a
warm-up. A second pair measures pure serving overhead: a small scikit-learn model through modelfleet
against a constant-output endpoint on the reference server.

    .venv/bin/python benchmarks/serve_throughput.py            # full run (~8 minutes)
    .venv/bin/python benchmarks/serve_throughput.py --quick    # 5 s points, for a smoke check

Writes benchmarks/results/serve_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
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


def build_artifacts(work: Path) -> tuple[Path, Path]:
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


def _run_until(model: Any, texts: np.ndarray, stop_at: float, counts: list[int], index: int) -> None:
    while time.perf_counter() < stop_at:
        model.predict({"text": texts})
        counts[index] += len(texts)


def measure_ceiling(artifact: Path, duration_s: float) -> tuple[str, int, float, dict[str, dict[int, float]]]:
    """Embeddings/s of tokenize + ORT in this process, no HTTP, for each thread layout and batch size.

    Two layouts: one session using every core, and one single-threaded session per core run from parallel
    threads (ORT releases the GIL). Returns the best (layout, batch size, rate) and every figure.
    """
    from modelfleet.runtime import load_model
    from modelfleet.runtime.onnx import default_intra_op_threads

    cores = default_intra_op_threads(1)
    layouts = {
        f"1 session x {cores} threads": [load_model(artifact, intra_op_threads=cores)],
        f"{cores} sessions x 1 thread": [load_model(artifact, intra_op_threads=1) for _ in range(cores)],
    }
    rates: dict[str, dict[int, float]] = {}
    for layout, models in layouts.items():
        rates[layout] = {}
        for batch_size in (1, 8, 16, 32, 64, 128):
            texts = np.array([SENTENCE.encode()] * batch_size, dtype=object)
            counts = [0] * len(models)
            for model in models:
                model.predict({"text": texts})
            stop_at = time.perf_counter() + duration_s

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
    return layout, batch, rates[layout][batch], rates


def load_points(
    url: str, body: str, duration_s: float, warmup_s: float, pid: int
) -> tuple[list[WrkResult], float]:
    run_wrk(url, body, 64, warmup_s)
    results = [run_wrk(url, body, connections, duration_s) for connections in CONNECTIONS]
    server = psutil.Process(pid)
    # With --workers N the parent only supervises: count every worker process too.
    processes = [server, *server.children(recursive=True)]
    return results, sum(p.memory_info().rss for p in processes) / 2**20


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s points and 3 s warm-up")
    parser.add_argument("--minilm", type=Path, help="an already built MiniLM artifact (default: build it)")
    parser.add_argument("--iris", type=Path, help="an already built iris artifact (default: build it)")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-delay-s", type=float, default=0.002)
    args = parser.parse_args()
    require_wrk()
    duration_s, warmup_s = (5.0, 3.0) if args.quick else (15.0, 5.0)
    work = Path(tempfile.mkdtemp(prefix="serve-throughput-"))
    if args.minilm and args.iris:
        minilm, iris = args.minilm, args.iris
    else:
        print("building the bundled MiniLM and an iris model …", flush=True)
        minilm, iris = build_artifacts(work)

    print("in-process ceiling …", flush=True)
    best_layout, best_batch, ceiling, ceiling_rates = measure_ceiling(minilm, min(duration_s, 5.0))
    print(f"  best: {best_layout}, batch {best_batch}: {ceiling:.1f} embeddings/s", flush=True)

    port_mf, port_ref = free_port(), free_port()
    mf_url, ref_url = f"http://127.0.0.1:{port_mf}", f"http://127.0.0.1:{port_ref}"
    serve_flags = ["--max-batch-size", str(args.max_batch_size), "--max-delay-s", str(args.max_delay_s)]
    model_name = read_manifest(minilm).name

    def infer_url(base: str) -> str:
        return f"{base}/v2/models/{model_name}/infer"

    cores = os.cpu_count() or 1
    runs: dict[int, tuple[list[WrkResult], float]] = {}
    for workers in sorted({1, cores}):
        print(f"modelfleet serve --workers {workers} …", flush=True)
        command = [
            *MODELFLEET,
            "--model",
            str(minilm),
            "--port",
            str(port_mf),
            "--workers",
            str(workers),
            *serve_flags,
        ]
        with server_process(command, mf_url) as process:
            runs[workers] = load_points(infer_url(mf_url), TEXT_BODY, duration_s, warmup_s, process.pid)
    best_workers = max(runs, key=lambda w: runs[w][0][-1].requests_per_s)
    mf_results, mf_rss_mib = runs[best_workers]
    print("reference server (FastAPI, no batching) …", flush=True)
    reference = [sys.executable, str(Path(__file__).parent / "reference_server.py")]
    with server_process(
        [*reference, "--artifact", str(minilm), "--port", str(port_ref)], ref_url, "/docs"
    ) as process:
        ref_results, ref_rss_mib = load_points(
            infer_url(ref_url), TEXT_BODY, duration_s, warmup_s, process.pid
        )

    print("serving overhead pair (iris vs constant endpoint) …", flush=True)
    with server_process([*MODELFLEET, "--model", str(iris), "--port", str(port_mf)], mf_url):
        run_wrk(f"{mf_url}/v2/models/iris/infer", IRIS_BODY, 64, warmup_s)
        mf_small = run_wrk(f"{mf_url}/v2/models/iris/infer", IRIS_BODY, 64, duration_s)
    with server_process([*reference, "--constant", "--port", str(port_ref)], ref_url, "/docs"):
        run_wrk(f"{ref_url}/v2/models/iris/infer", IRIS_BODY, 64, warmup_s)
        ref_small = run_wrk(f"{ref_url}/v2/models/iris/infer", IRIS_BODY, 64, duration_s)

    rows = [
        "| connections | modelfleet emb/s | p50 ms | p99 ms | errors | reference emb/s | p50 ms | p99 ms | errors | modelfleet ÷ reference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mf, ref in zip(mf_results, ref_results, strict=True):
        rows.append(
            f"| {mf.connections} | {mf.requests_per_s:.1f} | {mf.p50_s * 1e3:.1f} | {mf.p99_s * 1e3:.1f} | {mf.errors} | "
            f"{ref.requests_per_s:.1f} | {ref.p50_s * 1e3:.1f} | {ref.p99_s * 1e3:.1f} | {ref.errors} | {ratio(mf.requests_per_s, ref.requests_per_s)} |"
        )
    at64_mf, at64_ref = mf_results[-1], ref_results[-1]
    vs_ceiling = at64_mf.requests_per_s / ceiling
    vs_reference = at64_mf.requests_per_s / at64_ref.requests_per_s
    overhead_ratio = mf_small.requests_per_s / ref_small.requests_per_s
    targets = [
        ("modelfleet ≥ 0.9 × in-process ceiling at 64 connections", f"{vs_ceiling:.2f}x", vs_ceiling >= 0.9),
        ("modelfleet p99 at 64 connections ≤ 300 ms", f"{at64_mf.p99_s * 1e3:.0f} ms", at64_mf.p99_s <= 0.3),
        (
            "modelfleet ≥ 1.4 × reference throughput at 64 connections",
            f"{vs_reference:.2f}x",
            vs_reference >= 1.4,
        ),
        (
            "serving overhead: modelfleet iris req/s ≥ reference constant endpoint",
            f"{overhead_ratio:.2f}x",
            overhead_ratio >= 1.0,
        ),
    ]
    ceiling_table = "\n".join(
        f"- {layout}: " + " · ".join(f"batch {b}: {r:.0f}/s" for b, r in by_batch.items())
        for layout, by_batch in ceiling_rates.items()
    )
    worker_rows = [
        f"| {w} | {res[0].requests_per_s:.1f} | {res[1].requests_per_s:.1f} | {res[2].requests_per_s:.1f} | {res[2].p99_s * 1e3:.0f} |"
        for w, (res, _) in sorted(runs.items())
    ]
    body = "\n".join(
        [
            f"Model: bundled all-MiniLM-L6-v2, fp32 ONNX; one sentence per request ({len(SENTENCE)} characters).",
            f"modelfleet flags: `{' '.join(serve_flags)}`. wrk: 1 thread, {duration_s:.0f} s per point after a {warmup_s:.0f} s warm-up at 64 connections.",
            "",
            "## In-process ceiling (tokenize + ONNX Runtime, no HTTP)",
            f"Best: **{ceiling:.1f} embeddings/s** with {best_layout}, batch {best_batch}.",
            "",
            ceiling_table,
            "",
            "## modelfleet serve: workers (ONNX Runtime threads per worker = cores ÷ workers)",
            "| workers | emb/s at 1 | at 16 | at 64 | p99 ms at 64 |",
            "|---|---|---|---|---|",
            *worker_rows,
            "",
            f"## modelfleet serve (--workers {best_workers}, the faster) vs reference server (MiniLM)",
            *rows,
            "",
            f"Resident memory after the run: modelfleet {mf_rss_mib:.0f} MiB, reference {ref_rss_mib:.0f} MiB.",
            "",
            "## Serving overhead (iris through modelfleet vs constant endpoint on the reference)",
            "| contender | req/s | p50 ms | p99 ms | errors |",
            "|---|---|---|---|---|",
            f"| modelfleet, iris model | {mf_small.requests_per_s:.0f} | {mf_small.p50_s * 1e3:.2f} | {mf_small.p99_s * 1e3:.2f} | {mf_small.errors} |",
            f"| reference, constant output | {ref_small.requests_per_s:.0f} | {ref_small.p50_s * 1e3:.2f} | {ref_small.p99_s * 1e3:.2f} | {ref_small.errors} |",
            "",
            "## Targets",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if met else '**no**'} |" for name, value, met in targets],
        ]
    )
    command = "python benchmarks/serve_throughput.py" + (" --quick" if args.quick else "")
    path = write_result("serve_throughput", command, body)
    print(body)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
