"""Memory under sustained load: `modelfleet serve` with the bundled MiniLM for 5 minutes of wrk traffic.

Samples the server's resident memory every 5 s and reports the growth after the first minute (warm-up).
Target: flat (growth under 5% of the post-warm-up level).

    .venv/bin/python benchmarks/serve_memory.py                 # 300 s
    .venv/bin/python benchmarks/serve_memory.py --duration-s 60 # a shorter look

Writes benchmarks/results/serve_memory.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from modelfleet.manifest import read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import free_port, require_wrk, server_process, write_result
from serve_throughput import TEXT_BODY, build_artifacts

SAMPLE_EVERY_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--minilm", type=Path, help="an already built MiniLM artifact (default: build it)")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    wrk = require_wrk()
    work = Path(tempfile.mkdtemp(prefix="serve-memory-"))
    minilm = args.minilm or build_artifacts(work)[0]
    model_name = read_manifest(minilm).name
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = work / "post.lua"
    script.write_text(f"wrk.method = 'POST'\nwrk.body = [==[{TEXT_BODY}]==]\n")
    command = [
        sys.executable,
        "-m",
        "modelfleet.cli.main",
        "serve",
        "--model",
        str(minilm),
        "--port",
        str(port),
    ]
    samples: list[tuple[float, float]] = []
    with server_process(command, url) as server:
        process = psutil.Process(server.pid)
        load = subprocess.Popen(
            [
                wrk,
                "-t1",
                f"-c{args.connections}",
                f"-d{args.duration_s:.0f}s",
                "-s",
                str(script),
                f"{url}/v2/models/{model_name}/infer",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        while load.poll() is None:
            samples.append((time.monotonic() - started, process.memory_info().rss / 2**20))
            print(f"  t={samples[-1][0]:5.0f}s rss={samples[-1][1]:.1f} MiB", flush=True)
            time.sleep(SAMPLE_EVERY_S)
        output = load.communicate()[0]
    rate = next((line.split()[-1] for line in output.splitlines() if line.startswith("Requests/sec")), "?")
    warm = [rss for t, rss in samples if t >= min(60.0, args.duration_s / 5)]
    growth_pct = (warm[-1] - warm[0]) / warm[0] * 100 if len(warm) >= 2 else float("nan")
    rows = "\n".join(f"| {t:.0f} | {rss:.1f} |" for t, rss in samples)
    body = (
        f"{args.duration_s:.0f} s of wrk at {args.connections} connections ({rate} requests/s), one sentence per request.\n\n"
        f"Resident memory after warm-up: {warm[0]:.1f} MiB → {warm[-1]:.1f} MiB at the end "
        f"(**{growth_pct:+.1f}%**; max {max(r for _, r in samples):.1f} MiB). Target: flat (< 5% growth): "
        f"{'met' if abs(growth_pct) < 5 else '**not met**'}.\n\n| t (s) | RSS (MiB) |\n|---|---|\n{rows}\n"
    )
    path = write_result(
        "serve_memory", f"python benchmarks/serve_memory.py --duration-s {args.duration_s:.0f}", body
    )
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
