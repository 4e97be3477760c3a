"""V2 gRPC beside REST on one `modelfleet serve` process, side by side in one run.

One server listens on both ports (`--grpc-port`), so both protocols reach the same batcher of the same
model. The same load generator (`modelfleet bench`, closed loop) sends the same request bodies: REST as
V2 JSON over its HTTP/1 keep-alive pool, gRPC as Triton's ModelInfer with raw_input_contents over one
grpcio channel (HTTP/2). Two models: iris (scikit-learn, microseconds of compute: the protocols' own
cost dominates) and, outside --short, the bundled MiniLM (one sentence: compute dominates).

    .venv/bin/python benchmarks/serve_grpc.py            # full run (~6 minutes on 2 cores)
    .venv/bin/python benchmarks/serve_grpc.py --short    # iris only, 3 s points (< 2 minutes)

Writes benchmarks/results/serve_grpc.md (the client's CPU is reported: on a small machine the load
generator shares the cores with the server, and the grpcio client costs more CPU per call than the
generator's own HTTP/1 client).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from modelfleet.bench import run_bench
from modelfleet.bench.options import spec_from_sources
from modelfleet.bench.results import BenchResult
from modelfleet.manifest import read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import free_port, server_process, write_result

MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main", "serve"]


def build_artifacts(work: Path, with_minilm: bool) -> dict[str, Path]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from skops.io import dump

    from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact

    features, labels = load_iris(return_X_y=True)
    skops_file = work / "iris.skops"
    dump(LogisticRegression(max_iter=500).fit(features, labels), skops_file)
    artifacts = {"iris": work / "iris"}
    build_artifact(skops_file, artifacts["iris"], BuildOptions(name="iris"))
    if with_minilm:
        artifacts["minilm"] = work / "minilm"
        build_artifact(BUNDLED_SOURCE, artifacts["minilm"], BuildOptions(name="minilm"))
    return artifacts


def measure(
    target: str, protocol: str, model: str, concurrency: int, duration_s: float, warmup_s: float
) -> BenchResult:
    flags = {
        "protocol": protocol,
        "target": target,
        "models": [model],
        "concurrency": str(concurrency),
        "duration_s": duration_s,
        "warmup_s": warmup_s,
    }
    return run_bench(spec_from_sources(None, flags, {}))


def _figures(result: BenchResult) -> tuple[float, float | None, float | None, int, float]:
    point = result.points[0]
    summary = point.summary
    assert summary is not None
    errors = sum(point.errors.values())
    return (
        summary.throughput_per_s,
        summary.latency.p50_ms,
        summary.latency.p99_ms,
        errors,
        summary.client_cpu_percent_max,
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="iris only, concurrency 1 and 16, 3 s points")
    parser.add_argument("--iris", type=Path, help="an already built iris artifact")
    parser.add_argument("--minilm", type=Path, help="an already built MiniLM artifact")
    args = parser.parse_args()
    load_start = os.getloadavg()
    duration_s, warmup_s = (3.0, 1.0) if args.short else (10.0, 3.0)
    concurrencies = (1, 16) if args.short else (1, 16, 64)
    work = Path(tempfile.mkdtemp(prefix="serve-grpc-"))
    given = {name: path for name, path in (("iris", args.iris), ("minilm", args.minilm)) if path is not None}
    wanted = ["iris"] if args.short else ["iris", "minilm"]
    if any(name not in given for name in wanted):
        print("building artifacts …", flush=True)
        given = {**build_artifacts(work, "minilm" in wanted and "minilm" not in given), **given}
    http_port, grpc_port = free_port(), free_port()
    command = [*MODELFLEET, "--port", str(http_port), "--grpc-port", str(grpc_port), "--max-batch-size", "32"]
    served = {name: read_manifest(given[name]).name for name in wanted}  # a given artifact keeps its own name
    for name in wanted:
        command += ["--model", str(given[name])]
    targets = {
        "REST (V2 JSON, HTTP/1)": ("v2", f"http://127.0.0.1:{http_port}"),
        "gRPC (ModelInfer, HTTP/2)": ("grpc", f"grpc://127.0.0.1:{grpc_port}"),
    }
    rows: dict[tuple[str, int], dict[str, tuple[float, float | None, float | None, int, float]]] = {}
    with server_process(command, f"http://127.0.0.1:{http_port}"):
        for model in wanted:
            for concurrency in concurrencies:
                for label, (protocol, target) in targets.items():
                    print(f"{model} · concurrency {concurrency} · {label} …", flush=True)
                    result = measure(target, protocol, served[model], concurrency, duration_s, warmup_s)
                    rows.setdefault((model, concurrency), {})[label] = _figures(result)
    load_end = os.getloadavg()
    rest_label, grpc_label = list(targets)
    lines = [
        f"One `modelfleet serve` process ({' '.join(command[3:])}) with both ports; load from `modelfleet bench`, "
        f"closed loop, {duration_s:.0f} s per point after {warmup_s:.0f} s of warm-up, REST and gRPC alternating.",
        f"Load average at start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, "
        f"at end {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (1/5/15 min).",
        "",
        "| model | concurrency | protocol | req/s | p50 ms | p99 ms | errors | client CPU % | gRPC ÷ REST req/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, concurrency), by_label in rows.items():
        rest_rate = by_label[rest_label][0]
        for label, (rate, p50, p99, errors, cpu) in by_label.items():
            ratio = f"{rate / rest_rate:.2f}x" if label == grpc_label and rest_rate else ""
            lines.append(
                f"| {model} | {concurrency} | {label} | {rate:.0f} | {_ms(p50)} | {_ms(p99)} | {errors} | {cpu:.0f} | {ratio} |"
            )
    name = "serve_grpc" + ("-short" if args.short else "")
    command_text = "python benchmarks/serve_grpc.py" + (" --short" if args.short else "")
    path = write_result(name, command_text, "\n".join(lines))
    print(f"wrote {path} ({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
