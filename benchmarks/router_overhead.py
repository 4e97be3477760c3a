"""What the fleet router costs: the same load sent straight to a model server and through the router.

One run starts one `modelfleet serve` process and one `modelfleet fleet router` in front of it, then
measures, alternating the two targets round by round so drift hits both alike:

* throughput: closed loop, CONCURRENCY connections each sending its next request when the last answers;
* latency: open loop at a fixed rate well below capacity, latency measured from the intended send time
  (so a stall cannot hide queued requests), p50/p99 from an HDR histogram, warm-up excluded.

Writes benchmarks/results/router_overhead.md and router_overhead.json.

    .venv/bin/python benchmarks/router_overhead.py                    # tiny linear model (worst case)
    .venv/bin/python benchmarks/router_overhead.py --artifact DIR     # any artifact with one FP32 input
    .venv/bin/python benchmarks/router_overhead.py --minilm --tag=-minilm   # the bundled text model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.linear_model import make_artifact  # noqa: E402
from tests.support.servers import start_router, start_server, stop, wait_for  # noqa: E402

from modelfleet.bench import run_bench  # noqa: E402
from modelfleet.config.bench import BenchSpec  # noqa: E402
from modelfleet.fleet.router_config import RouterSettings, Upstream, write_router_settings  # noqa: E402
from modelfleet.manifest import read_manifest  # noqa: E402


def request_body(artifact: Path, rows: int) -> tuple[str, bytes]:
    manifest = read_manifest(artifact)
    tensor = manifest.inputs[0]
    shape = [rows if dim == -1 else dim for dim in tensor.shape]
    if tensor.datatype.value == "BYTES":
        data: list[Any] = ["a short sentence to embed"] * int(np.prod(shape))
    else:
        data = np.random.default_rng(0).normal(size=shape).astype(np.float32).ravel().tolist()
    body = {
        "inputs": [{"name": tensor.name, "datatype": tensor.datatype.value, "shape": shape, "data": data}]
    }
    return manifest.name, json.dumps(body).encode()


def _run_point(url: str, body: bytes, point: dict[str, Any], warmup_s: float) -> Any:
    """One point of `modelfleet bench` (the project's own open/closed-loop generator) against ``url``.

    It costs about 15 µs of CPU per request, a tenth of an aiohttp client's, so on a small machine the
    load generator leaves the cores to the server and the router being compared.
    """
    spec = BenchSpec.model_validate(
        {
            "protocol": "http",
            "endpoints": [
                {"url": url, "body_template": body.decode(), "headers": {"Content-Type": "application/json"}}
            ],
            "mode": "open" if "rate_per_s" in point else "closed",
            "points": [point],
            "warmup_s": warmup_s,
        }
    )
    result = run_bench(spec).points[0]
    assert result.summary is not None
    return result


def closed_loop(
    url: str, body: bytes, concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    point = _run_point(url, body, {"concurrency": concurrency, "duration_s": duration_s}, warmup_s)
    summary = point.summary
    return {
        "throughput_rps": summary.throughput_per_s,
        "requests": point.ok + sum(point.errors.values()),
        "errors": sum(point.errors.values()),
        "p50_ms": summary.latency.p50_ms,
        "p99_ms": summary.latency.p99_ms,
    }


def open_loop(url: str, body: bytes, rate_rps: float, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """Requests at fixed intended times; latency counts from the intended time (no coordinated omission)."""
    point = _run_point(url, body, {"rate_per_s": rate_rps, "duration_s": duration_s}, warmup_s)
    summary = point.summary
    return {
        "rate_rps": rate_rps,
        "requests": point.ok + sum(point.errors.values()),
        "errors": sum(point.errors.values()),
        "late_fraction": summary.late_fraction,
        "p50_ms": summary.latency.p50_ms,
        "p90_ms": summary.latency.p90_ms,
        "p99_ms": summary.latency.p99_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", type=Path, help="Artifact folder (default: a tiny linear model).")
    parser.add_argument(
        "--minilm", action="store_true", help="Build and use the bundled all-MiniLM-L6-v2 (int8)."
    )
    parser.add_argument("--rows", type=int, default=1, help="Rows per request.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--duration-s", type=float, default=8.0, help="Measured seconds per round and target."
    )
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds per target.")
    parser.add_argument(
        "--rate-fraction", type=float, default=0.3, help="Open-loop rate as a share of the lower capacity."
    )
    parser.add_argument("--workers", type=int, default=1, help="Server worker processes.")
    parser.add_argument(
        "--intra-op-threads", type=int, default=0, help="ONNX Runtime threads per run (0: the server picks)."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="", help="Suffix for the result files, e.g. -minilm.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.minilm:
            from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact

            artifact = Path(tmp) / "minilm-int8"
            build_artifact(BUNDLED_SOURCE, artifact, BuildOptions(precision="int8"))
        else:
            artifact = args.artifact or make_artifact(Path(tmp) / "linear", "linear")
        model, body = request_body(artifact, args.rows)
        serve_spec = Path(tmp) / "serve.yaml"
        serve_spec.write_text(
            yaml.safe_dump(
                {
                    "server": {"host": "127.0.0.1", "port": 0, "workers": args.workers},
                    "models": [{"path": str(artifact), "intra_op_threads": args.intra_op_threads}],
                }
            ),
            encoding="utf-8",
        )
        server, server_port = start_server([], Path(tmp), "--spec", str(serve_spec))
        router_file = Path(tmp) / "router.json"
        upstream = Upstream(name="server", group="g", url=f"http://127.0.0.1:{server_port}", models=[model])
        write_router_settings(RouterSettings(fleet="bench", port=0, upstreams=[upstream]), router_file)
        router, router_port = start_router(router_file)
        try:
            wait_for(f"http://127.0.0.1:{server_port}/v2/health/ready", timeout_s=300)
            wait_for(f"http://127.0.0.1:{router_port}/v2/health/ready")
            targets = {
                "direct": f"http://127.0.0.1:{server_port}/v2/models/{model}/infer",
                "router": f"http://127.0.0.1:{router_port}/v2/models/{model}/infer",
            }
            processes = {"server": psutil.Process(server.pid), "router": psutil.Process(router.pid)}

            def cpu_s() -> dict[str, float]:
                return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}

            closed: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for round_index in range(args.rounds):
                for name, url in targets.items():
                    before = cpu_s()
                    result = closed_loop(url, body, args.concurrency, args.duration_s, args.warmup_s)
                    after = cpu_s()
                    # CPU per request (warm-up requests included in both, so a slight overestimate).
                    for process_name in processes:
                        used_us = (after[process_name] - before[process_name]) * 1e6
                        result[f"{process_name}_cpu_us_per_request"] = used_us / max(1, result["requests"])
                    closed[name].append(result)
                    print(f"closed loop round {round_index + 1} {name}: {result}", file=sys.stderr)
            sequential: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for round_index in range(args.rounds):
                for name, url in targets.items():
                    result = closed_loop(url, body, 1, args.duration_s / 2, args.warmup_s / 2)
                    sequential[name].append(result)
                    print(f"one client round {round_index + 1} {name}: {result}", file=sys.stderr)
            direct_rps = statistics.median(r["throughput_rps"] for r in closed["direct"])
            router_rps = statistics.median(r["throughput_rps"] for r in closed["router"])
            # Well below what either path sustains, so latency shows the router's cost, not queueing.
            rate = max(10.0, round(min(direct_rps, router_rps) * args.rate_fraction))
            opened: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for round_index in range(args.rounds):
                for name, url in targets.items():
                    result = open_loop(url, body, rate, args.duration_s, args.warmup_s)
                    opened[name].append(result)
                    print(f"open loop round {round_index + 1} {name}: {result}", file=sys.stderr)
        finally:
            stop(router)
            stop(server)

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    summary = {
        "machine": {
            "cpu_count": psutil.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_avg_1m_at_end": os.getloadavg()[0],
        },
        "settings": {k: str(v) for k, v in vars(args).items()},
        "model": model,
        "throughput_ratio": router_rps / direct_rps,
        "throughput_cost_percent": (1 - router_rps / direct_rps) * 100,
        "direct_rps": direct_rps,
        "router_rps": router_rps,
        "open_loop_rate_rps": rate,
        "added_p50_ms": median(opened["router"], "p50_ms") - median(opened["direct"], "p50_ms"),
        "added_p99_ms": median(opened["router"], "p99_ms") - median(opened["direct"], "p99_ms"),
        "added_p50_ms_one_client": median(sequential["router"], "p50_ms")
        - median(sequential["direct"], "p50_ms"),
        "added_p99_ms_one_client": median(sequential["router"], "p99_ms")
        - median(sequential["direct"], "p99_ms"),
        "router_cpu_us_per_request": median(closed["router"], "router_cpu_us_per_request"),
        "server_cpu_us_per_request": median(closed["direct"], "server_cpu_us_per_request"),
        "closed_loop": closed,
        "one_client": sequential,
        "open_loop": opened,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"router_overhead{args.tag}.json").write_text(
        json.dumps(summary, indent=2) + "\n", encoding="utf-8"
    )
    (args.out / f"router_overhead{args.tag}.md").write_text(render_markdown(summary), encoding="utf-8")
    print(render_markdown(summary))


def render_markdown(s: dict[str, Any]) -> str:
    def row(name: str, runs: list[dict[str, Any]], keys: list[str]) -> str:
        cells = [f"{statistics.median(r[k] for r in runs):.3f}" for k in keys]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [
        "# Router overhead",
        "",
        f"Command: `.venv/bin/python benchmarks/router_overhead.py` ({s['settings']}).",
        f"Machine: {s['machine']['cpu_count']} logical CPUs ({s['machine']['cpu']}), Python {s['machine']['python']}, "
        f"load average at the end {s['machine']['load_avg_1m_at_end']:.2f}. Model `{s['model']}`; one server, one router, "
        "load generator on the same machine. Medians over alternating rounds.",
        "",
        "## Throughput (closed loop)",
        "",
        "| target | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        row("direct", s["closed_loop"]["direct"], ["throughput_rps", "p50_ms", "p99_ms"]),
        row("router", s["closed_loop"]["router"], ["throughput_rps", "p50_ms", "p99_ms"]),
        "",
        f"Router throughput ratio: **{s['throughput_ratio']:.3f}** (costs {s['throughput_cost_percent']:.1f}% ; target ≤ 10%).",
        "",
        f"## Latency (open loop at {s['open_loop_rate_rps']:g} requests/s, from intended send time)",
        "",
        "| target | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|",
        row("direct", s["open_loop"]["direct"], ["p50_ms", "p90_ms", "p99_ms"]),
        row("router", s["open_loop"]["router"], ["p50_ms", "p90_ms", "p99_ms"]),
        "",
        f"Added by the router: p50 **{s['added_p50_ms']:+.3f} ms** (target ≤ 1 ms), p99 **{s['added_p99_ms']:+.3f} ms**.",
        "",
        "## Latency with one client (sequential requests, no queueing anywhere)",
        "",
        "| target | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        row("direct", s["one_client"]["direct"], ["throughput_rps", "p50_ms", "p99_ms"]),
        row("router", s["one_client"]["router"], ["throughput_rps", "p50_ms", "p99_ms"]),
        "",
        f"Added by the router: p50 **{s['added_p50_ms_one_client']:+.3f} ms**, p99 **{s['added_p99_ms_one_client']:+.3f} ms**.",
        "",
        "## CPU per request (closed loop)",
        "",
        f"Model server: {s['server_cpu_us_per_request']:.0f} µs (direct runs); router: {s['router_cpu_us_per_request']:.0f} µs "
        f"(router runs). One router core therefore passes about {1e6 / s['router_cpu_us_per_request']:.0f} requests/s. "
        "When server, router and load generator share fewer cores than they can keep busy, every "
        "router microsecond is taken from the server, and the throughput ratio above shows that contention "
        "rather than the router's own limit.",
        "",
        "Companion runs with other models are in `router_overhead-*.md` beside this file (`--tag`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
