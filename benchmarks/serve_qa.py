"""Question answering serving, side by side in one run on one machine:

  (a) the in-process ceiling: `OnnxModel.predict` on batches of (question, context) pairs, i.e. pair
      tokenization into windows + ONNX Runtime + span decoding, no HTTP (inputs validated once, outside
      the timing, as the server validates on its event loop);
  (b) `modelfleet serve` (dynamic batching) loaded by `modelfleet bench`'s own generator, closed loop
      at a few concurrencies, one pair per request; the bodies are bench's built-in QA pairs (long
      contexts split into windows), the same pairs the ceiling cycles through.

The ratios are (b) / best (a). The default model is examples/make_qa_model.py's MiniLM QA: the
bundled MiniLM encoder (6 layers, hidden 384, its real weights) under a random span head, with the
pipeline's 384-token windows and stride 128, so each window costs what a small BERT costs. `--tiny`
takes the tests' 2-layer, hidden-32 model instead (tokenization and decoding then weigh most).

    .venv/bin/python benchmarks/serve_qa.py                      # ~90 s
    .venv/bin/python benchmarks/serve_qa.py --artifact DIR       # any question-answering artifact

Writes benchmarks/results/serve_qa.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.support.qa_model import write_minilm_qa_model, write_qa_model  # noqa: E402
from tests.support.servers import start_server, stop, wait_for  # noqa: E402

from _harness import write_result  # noqa: E402
from modelfleet.bench import run_bench  # noqa: E402
from modelfleet.bench.samples import BUILTIN_QA_PAIRS  # noqa: E402
from modelfleet.config.bench import BenchSpec  # noqa: E402
from modelfleet.manifest import read_manifest  # noqa: E402

BATCH_SIZES = (1, 8, 32)
CONCURRENCIES = (1, 8, 32)


def pair_batch(size: int, offset: int) -> dict[str, np.ndarray[Any, Any]]:
    """`size` pairs from the built-in ones, starting at `offset` (the served requests cycle the same way)."""
    pairs = [BUILTIN_QA_PAIRS[(offset + i) % len(BUILTIN_QA_PAIRS)] for i in range(size)]
    return {
        "question": np.array([q.encode() for q, _ in pairs], dtype=object),
        "context": np.array([c.encode() for _, c in pairs], dtype=object),
    }


def measure_ceiling(artifact: Path, duration_s: float) -> dict[int, float]:
    """Pairs/s of OnnxModel.predict per batch size, one session with the server's default threads."""
    from modelfleet.runtime import load_model
    from modelfleet.runtime.onnx import default_intra_op_threads

    model = load_model(artifact, intra_op_threads=default_intra_op_threads(1))
    rates = {}
    for batch_size in BATCH_SIZES:
        # Every starting pair in turn, so batch 1 sees long contexts as often as the served load does.
        batches = [model.validate_inputs(pair_batch(batch_size, o)) for o in range(len(BUILTIN_QA_PAIRS))]
        for inputs in batches:
            model.predict(inputs)
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s:
            model.predict(batches[(done // batch_size) % len(batches)])
            done += batch_size
        rates[batch_size] = done / (time.perf_counter() - started)
    model.close()
    return rates


def measure_served(url: str, model: str, duration_s: float, warmup_s: float) -> dict[int, dict[str, float]]:
    results = {}
    for concurrency in CONCURRENCIES:
        spec = BenchSpec.model_validate(
            {
                "target": url,
                "models": [{"name": model}],
                "mode": "closed",
                "points": [{"concurrency": concurrency, "duration_s": duration_s}],
                "warmup_s": warmup_s,
            }
        )
        point = run_bench(spec).points[0]
        assert point.summary is not None
        results[concurrency] = {
            "rps": point.summary.throughput_per_s,
            "errors": float(sum(point.errors.values())),
            "p50_ms": point.summary.latency.p50_ms,
            "p99_ms": point.summary.latency.p99_ms,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--artifact", type=Path, help="A question-answering artifact (default: build the MiniLM QA one)."
    )
    parser.add_argument("--tiny", action="store_true", help="Build the tests' tiny random model instead.")
    parser.add_argument("--ceiling-s", type=float, default=4.0, help="Seconds per ceiling batch size.")
    parser.add_argument("--duration-s", type=float, default=8.0, help="Measured seconds per concurrency.")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    args = parser.parse_args()
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        artifact = args.artifact
        if artifact is None:
            from modelfleet.build import BuildOptions, build_artifact

            artifact = work / "qa"
            write = write_qa_model if args.tiny else write_minilm_qa_model
            build_artifact(write(work / "qa-source"), artifact, BuildOptions(name="qa"))
        manifest = read_manifest(artifact)
        assert manifest.task == "question-answering", f"{artifact} is a {manifest.task} artifact"
        ceiling = measure_ceiling(artifact, args.ceiling_s)
        process, port = start_server([artifact], work)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/v2/health/ready")
            served = measure_served(url, manifest.name, args.duration_s, args.warmup_s)
        finally:
            stop(process)
    best_batch = max(ceiling, key=ceiling.__getitem__)
    best = ceiling[best_batch]
    tokenization = manifest.preprocessing
    assert tokenization is not None
    lines = [
        f"Model: `{manifest.name}` ({manifest.extra.get('detected', manifest.source.kind)}), "
        f"{tokenization.max_length_tokens}-token windows, stride {tokenization.stride_tokens}; "
        f"requests cycle through {len(BUILTIN_QA_PAIRS)} built-in pairs (3 long contexts of several windows). "
        f"Wall time of the run: {time.perf_counter() - started:.0f} s; load average (1 min) "
        f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end. One run on a noisy VM: read "
        "the ratios, not the absolute figures.",
        "",
        "| in-process ceiling: batch | pairs/s |",
        "|---|---|",
        *(f"| {batch} | {rate:.1f} |" for batch, rate in ceiling.items()),
        "",
        f"| served: closed-loop connections | pairs/s | vs ceiling (batch {best_batch}) | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
        *(
            f"| {c} | {r['rps']:.1f} | {r['rps'] / best:.2f}x | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} |"
            for c, r in served.items()
        ),
    ]
    command = "python benchmarks/serve_qa.py " + " ".join(sys.argv[1:])
    path = write_result("serve_qa", command.strip(), "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
