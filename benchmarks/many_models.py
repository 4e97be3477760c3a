"""Many models on one node, three scenarios in one run (issue 17):

  (a) shared weights: N names over 3 distinct MiniLM fp32 artifacts in one server, against a server of
      the 3 artifacts alone: resident memory (target <= 1.3x) and p99 at a rate spread over all names;
  (b) residency: K distinct int8 MiniLM artifacts (perturbed weights, each verified against the
      original at the build's int8 bar, min cosine >= 0.98) under a memory budget of B of them, Zipf-distributed traffic:
      cold-load p99, warm p99 (target <= 1.2x a single-model server's p99 at the same rate), evictions
      per minute;
  (c) M distinct small scikit-learn models (the iris artifact with perturbed coefficients, each
      verified): time to ready, memory, p99.

Load comes from the project's open-loop generator (`modelfleet bench run`), memory from the server
process's RSS. Artifacts are perturbed copies of the prebuilt ones (--minilm, --minilm-int8, --iris).

    .venv/bin/python benchmarks/many_models.py            # full: N=3000, K=100, B=20, M=3000 (~25 min)
    .venv/bin/python benchmarks/many_models.py --short    # N=150, K=5, B=2, M=150, 4 s points (< 2 min on a quiet machine)

Writes benchmarks/results/many_models.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import yaml

from modelfleet.build.options import DEFAULT_MIN_COSINE
from modelfleet.build.samples import VERIFICATION_SENTENCES
from modelfleet.fleet.routing import quantile_from_buckets
from modelfleet.manifest import MANIFEST_FILE, read_manifest
from modelfleet.runtime.loader import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import free_port, wait_ready, write_result

MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main"]
ARTIFACTS = Path("/work/artifacts")


@dataclass(frozen=True)
class Sizes:
    names_a: int
    distinct_b: int
    budget_b: int
    small_c: int
    duration_s: float
    rate_a: float
    rate_b: float
    rate_c: float


FULL = Sizes(3000, 100, 20, 3000, 60.0, 200.0, 50.0, 1000.0)
SHORT = Sizes(150, 5, 2, 150, 4.0, 100.0, 20.0, 200.0)


# -- artifacts --------------------------------------------------------------------------------------
def perturb(source: Path, target: Path, seed: int, scale: float) -> Path:
    """Copy the artifact at `source` with its largest float initializer and every float-list attribute of
    its ONNX graph multiplied by (1 + N(0, scale)), under a new name; the manifest's file hashes follow."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(source, target)
    manifest = read_manifest(source)
    model = onnx.load(str(source / manifest.model_file))
    rng = np.random.default_rng(seed)
    # The largest float tensor only (a text model's token embeddings): perturbing the int8 models' float
    # scales moves their dynamically quantized activations across rounding steps (min cosine 0.997).
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    if floats:
        initializer = max(floats, key=lambda i: int(np.prod(i.dims)))
        values = numpy_helper.to_array(initializer)
        noisy = values * (1 + rng.normal(0, scale, values.shape)).astype(np.float32)
        initializer.CopyFrom(numpy_helper.from_array(noisy, initializer.name))
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.FLOATS and len(attribute.floats) > 1:
                floats = np.asarray(attribute.floats, dtype=np.float64)
                attribute.ClearField("floats")
                attribute.floats.extend((floats * (1 + rng.normal(0, scale, floats.shape))).tolist())
    model_path = target / manifest.model_file
    onnx.save(model, str(model_path))
    files = dict(manifest.files)
    files[manifest.model_file] = hashlib.sha256(model_path.read_bytes()).hexdigest()
    changed = manifest.model_copy(update={"name": f"{manifest.name}-p{seed}", "files": files})
    (target / MANIFEST_FILE).write_bytes(changed.to_json_bytes())
    return target


def verify(original: Path, perturbed: Path, text: bool) -> float:
    """The perturbed artifact loads (hashes checked) and stays close to the original: for text the min
    cosine of the verification sentences' embeddings (the build's threshold: 0.999 fp32, 0.98 int8), else 1 - max abs difference of the
    probabilities (>= 0.99). Returns that figure; raises when it is under the threshold."""
    reference, candidate = load_model(original, 1), load_model(perturbed, 1)
    if text:
        texts = np.array([s.encode() for s in VERIFICATION_SENTENCES], dtype=object)
        a = next(iter(reference.predict(reference.validate_inputs({"text": texts})).values()))
        b = next(iter(candidate.predict(candidate.validate_inputs({"text": texts})).values()))
        a, b = a.reshape(len(texts), -1), b.reshape(len(texts), -1)
        figure = float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
        # The build's own bar for the artifact's precision: an int8 model's dynamically quantized
        # activations move across rounding steps with any change (1e-4 relative noise: min cosine 0.997).
        threshold = DEFAULT_MIN_COSINE[read_manifest(original).precision]
    else:
        rows = np.random.default_rng(0).normal([5.8, 3.0, 3.8, 1.2], 0.5, (64, 4)).astype(np.float32)
        a = reference.predict({"input": rows})["probabilities"]
        b = candidate.predict({"input": rows})["probabilities"]
        figure, threshold = 1.0 - float(np.max(np.abs(a - b))), 0.99
    if read_manifest(original).files == read_manifest(perturbed).files:
        raise RuntimeError(f"{perturbed}: the perturbation left the model file unchanged")
    if figure < threshold:
        raise RuntimeError(f"{perturbed}: verification figure {figure:.5f} under {threshold}")
    return figure


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def perturbed_set(
    source: Path, folder: Path, count: int, text: bool, scale: float
) -> tuple[list[Path], float]:
    """`count` perturbed, verified copies of `source`; returns them and the worst verification figure."""
    progress(f"building {count} perturbed copies of {source.name}")
    paths, worst = [], 1.0
    for seed in range(count):
        path = perturb(source, folder / f"{source.name}-{seed}", seed + 1, scale)
        # Verifying every copy of a tiny model costs more than building it; every tenth and the last suffice.
        if text or seed % 10 == 0 or seed == count - 1:
            worst = min(worst, verify(source, path, text))
        paths.append(path)
    return paths, worst


# -- servers and load -------------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    ready_s: float

    def rss_mib(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=60).text

    def index(self) -> list[dict[str, Any]]:
        return list(httpx.post(f"{self.url}/v2/repository/index", timeout=60).json())


@contextmanager
def server(
    models: list[dict[str, Any]], work: Path, residency: dict[str, Any] | None = None
) -> Iterator[Server]:
    port = free_port()
    spec: dict[str, Any] = {"server": {"port": port}, "models": models}
    if residency:
        spec["residency"] = residency
    spec_path = work / f"serve-{port}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    started = time.monotonic()
    progress(f"serve: {len(models)} models")
    log = (work / f"serve-{port}.log").open("wb")
    process = subprocess.Popen([*MODELFLEET, "serve", "--spec", str(spec_path)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, timeout_s=1800)
        yield Server(url, process, time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@dataclass
class Load:
    rate_per_s: float
    throughput_per_s: float
    p50_ms: float
    p99_ms: float
    error_rate: float


def bench(url: str, weights: dict[str, float], rate: float, duration_s: float, work: Path) -> Load:
    """An open-loop point of `modelfleet bench run` at `rate` over the named models, by weight."""
    models_file = work / f"models-{time.monotonic_ns()}.txt"
    models_file.write_text("".join(f"{name}={weight:.6g}\n" for name, weight in weights.items()))
    out = work / f"bench-{time.monotonic_ns()}.json"
    progress(f"bench: {len(weights)} models at {rate:g}/s for {duration_s:g} s")
    subprocess.run(
        [*MODELFLEET, "bench", "run", url, "--models-file", str(models_file), "--rate", f"{rate:g}",
         "--duration-s", f"{duration_s:g}", "--arrival", "poisson", "-o", str(out)],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration_s + 900,
    )  # fmt: skip
    summary = json.loads(out.read_text())["points"][0]["summary"]
    latency = summary["latency"]
    return Load(
        rate,
        summary["throughput_per_s"],
        latency["p50_ms"] or 0.0,
        latency["p99_ms"] or 0.0,
        summary["error_rate"],
    )


def series(text: str, name: str) -> float:
    """Sum of every sample of `name` (all label sets) in a Prometheus exposition."""
    return sum(
        float(m[1]) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    )


def histogram_quantile(text: str, name: str, quantile: float) -> float | None:
    buckets = [(float("inf") if m[1] == "+Inf" else float(m[1]), float(m[2]))
               for m in re.finditer(rf'^{re.escape(name)}_bucket{{le="([^"]+)"}} (\S+)$', text, re.MULTILINE)]  # fmt: skip
    return (
        quantile_from_buckets(quantile, [b for b, _ in buckets], [c for _, c in buckets]) if buckets else None
    )


def settle(running: Server, quiet_s: float = 3.0, limit_s: float = 120.0) -> float:
    """Seconds until no cold load has finished for `quiet_s`: the loads a previous phase queued (their
    clients gone) run on after it, and a warm phase started among them measures them, not warm serving."""
    started = time.monotonic()
    count, since = -1.0, time.monotonic()
    while time.monotonic() - started < limit_s:
        now_count = series(running.metrics(), "modelfleet_cold_load_duration_seconds_count")
        if now_count != count:
            count, since = now_count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return since - started
        time.sleep(0.5)
    return limit_s


def zipf(names: list[str], exponent: float = 1.1) -> dict[str, float]:
    return {name: 1.0 / (rank + 1) ** exponent for rank, name in enumerate(names)}


# -- scenarios --------------------------------------------------------------------------------------
def shared_weights(sizes: Sizes, minilm: Path, work: Path) -> str:
    artifacts, worst = perturbed_set(minilm, work / "a", 3, text=True, scale=0.001)
    three = [{"path": str(path), "name": f"distinct-{i}"} for i, path in enumerate(artifacts)]
    with server(three, work) as alone:
        alone_rss = alone.rss_mib()
        alone_load = bench(alone.url, {m["name"]: 1.0 for m in three}, sizes.rate_a, sizes.duration_s, work)
        alone_rss_after = alone.rss_mib()
    names = [{"path": str(artifacts[i % 3]), "name": f"tenant-{i}"} for i in range(sizes.names_a)]
    with server(names, work) as many:
        many_rss = many.rss_mib()
        sessions = series(many.metrics(), "modelfleet_resident_sessions")
        many_load = bench(many.url, {m["name"]: 1.0 for m in names}, sizes.rate_a, sizes.duration_s, work)
        many_rss_after = many.rss_mib()
    ratio = many_rss_after / alone_rss_after
    return (
        f"### (a) {sizes.names_a} names over 3 distinct MiniLM fp32 artifacts\n\n"
        f"Artifacts: 3 perturbed copies of {minilm} (min cosine to the original {worst:.5f}).\n\n"
        "| server | ready (s) | sessions | RSS ready (MiB) | RSS after load (MiB) | rate (/s) | throughput (/s) | p50 (ms) | p99 (ms) | errors |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| 3 names, 3 artifacts | {alone.ready_s:.1f} | 3 | {alone_rss:.0f} | {alone_rss_after:.0f} | {alone_load.rate_per_s:g} | "
        f"{alone_load.throughput_per_s:.1f} | {alone_load.p50_ms:.2f} | {alone_load.p99_ms:.2f} | {alone_load.error_rate:.2%} |\n"
        f"| {sizes.names_a} names, 3 artifacts | {many.ready_s:.1f} | {sessions:.0f} | {many_rss:.0f} | {many_rss_after:.0f} | "
        f"{many_load.rate_per_s:g} | {many_load.throughput_per_s:.1f} | {many_load.p50_ms:.2f} | {many_load.p99_ms:.2f} | {many_load.error_rate:.2%} |\n\n"
        f"Resident memory after load, {sizes.names_a} names ÷ 3 names: **{ratio:.2f}×** (ready: "
        f"{many_rss / alone_rss:.2f}×; target ≤ 1.3×: "
        f"{'met' if ratio <= 1.3 else '**not met**'}); p99 ratio {many_load.p99_ms / max(alone_load.p99_ms, 1e-9):.2f}×.\n"
    )  # fmt: skip


def residency(sizes: Sizes, minilm_int8: Path, work: Path) -> str:
    artifacts, worst = perturbed_set(minilm_int8, work / "b", sizes.distinct_b, text=True, scale=0.001)
    names = [f"m{i}" for i in range(len(artifacts))]
    with server([{"path": str(artifacts[0]), "name": "m0"}], work) as single:
        single_load = bench(single.url, {"m0": 1.0}, sizes.rate_b, sizes.duration_s, work)
        size_bytes = series(single.metrics(), "modelfleet_resident_model_bytes")
    budget = int(size_bytes * sizes.budget_b)
    models = [{"path": str(path), "name": name} for path, name in zip(artifacts, names, strict=True)]
    with server(models, work, {"memory_budget_bytes": budget}) as lazy:
        mixed = bench(lazy.url, zipf(names), sizes.rate_b, 2 * sizes.duration_s, work)
        text = lazy.metrics()
        evictions = series(text, "modelfleet_model_evictions_total")
        loads = series(text, "modelfleet_cold_load_duration_seconds_count")
        cold_p50 = histogram_quantile(text, "modelfleet_cold_load_duration_seconds", 0.5)
        cold_p99 = histogram_quantile(text, "modelfleet_cold_load_duration_seconds", 0.99)
        settled_s = settle(lazy)
        resident = [e["name"] for e in lazy.index() if e["state"] == "READY"]
        before = lazy.metrics()
        warm = bench(lazy.url, zipf(sorted(resident, key=names.index)), sizes.rate_b, sizes.duration_s, work)
        after = lazy.metrics()
        warm_loads = series(after, "modelfleet_cold_load_duration_seconds_count") - series(
            before, "modelfleet_cold_load_duration_seconds_count"
        )
        abandoned = series(after, "modelfleet_cold_loads_abandoned_total")
        resident_mib = series(after, "modelfleet_resident_model_bytes") / 2**20
        rss = lazy.rss_mib()
    ratio = warm.p99_ms / max(single_load.p99_ms, 1e-9)
    per_min = evictions / (2 * sizes.duration_s / 60)

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value * 1000:.0f}"

    return (
        f"### (b) {len(artifacts)} distinct MiniLM int8 artifacts under a budget of {sizes.budget_b}\n\n"
        f"Artifacts: perturbed copies of {minilm_int8} (int8 MiniLM for disk and time; min cosine to the "
        f"original {worst:.5f}, the build's int8 bar 0.98). One model's measured size {size_bytes / 2**20:.1f} MiB; budget "
        f"{budget / 2**20:.0f} MiB. Traffic Zipf (s = 1.1) over all names for {2 * sizes.duration_s:g} s, then "
        f"Zipf over the {len(resident)} names resident at its end (warm) for {sizes.duration_s:g} s.\n\n"
        "| run | rate (/s) | throughput (/s) | p50 (ms) | p99 (ms) | errors |\n|---|---:|---:|---:|---:|---:|\n"
        f"| single-model server | {single_load.rate_per_s:g} | {single_load.throughput_per_s:.1f} | {single_load.p50_ms:.2f} | {single_load.p99_ms:.2f} | {single_load.error_rate:.2%} |\n"
        f"| budget, Zipf over all (cold loads included) | {mixed.rate_per_s:g} | {mixed.throughput_per_s:.1f} | {mixed.p50_ms:.2f} | {mixed.p99_ms:.2f} | {mixed.error_rate:.2%} |\n"
        f"| budget, warm (resident names) | {warm.rate_per_s:g} | {warm.throughput_per_s:.1f} | {warm.p50_ms:.2f} | {warm.p99_ms:.2f} | {warm.error_rate:.2%} |\n\n"
        f"Cold loads: {loads:.0f}, load time p50 {fmt(cold_p50)} ms, **p99 {fmt(cold_p99)} ms** (server histogram); "
        f"{abandoned:.0f} loads not started because every request waiting for them had given up. The loads still "
        f"running when the Zipf-over-all load ended took {settled_s:.1f} s to finish before the warm run; "
        f"cold loads during the warm run: {warm_loads:.0f}. "
        f"Evictions: {evictions:.0f}, **{per_min:.1f} per minute**. Resident at the end: {resident_mib:.0f} MiB measured, "
        f"process RSS {rss:.0f} MiB. Warm p99 ÷ single-model p99: **{ratio:.2f}×** (target ≤ 1.2×: "
        f"{'met' if ratio <= 1.2 else '**not met**'}).\n"
    )  # fmt: skip


def small_models(sizes: Sizes, iris: Path, work: Path) -> str:
    artifacts, worst = perturbed_set(iris, work / "c", sizes.small_c, text=False, scale=0.0002)
    models = [{"path": str(path), "name": f"small-{i}"} for i, path in enumerate(artifacts)]
    with server(models, work) as many:
        rss = many.rss_mib()
        sessions = series(many.metrics(), "modelfleet_resident_sessions")
        load = bench(many.url, {m["name"]: 1.0 for m in models}, sizes.rate_c, sizes.duration_s, work)
    return (
        f"### (c) {sizes.small_c} distinct small scikit-learn models\n\n"
        f"Artifacts: the iris logistic regression with perturbed coefficients (every tenth verified, worst "
        f"1 - max probability difference {worst:.4f}); all loaded at start.\n\n"
        "| models | sessions | ready (s) | RSS (MiB) | rate (/s) | throughput (/s) | p50 (ms) | p99 (ms) | errors |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {sizes.small_c} | {sessions:.0f} | {many.ready_s:.1f} | {rss:.0f} | {load.rate_per_s:g} | "
        f"{load.throughput_per_s:.1f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.error_rate:.2%} |\n"
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="smaller counts and 4 s points (< 2 minutes)")
    parser.add_argument("--minilm", type=Path, default=ARTIFACTS / "minilm")
    parser.add_argument("--minilm-int8", type=Path, default=ARTIFACTS / "minilm-int8")
    parser.add_argument("--iris", type=Path, default=ARTIFACTS / "iris")
    parser.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these scenarios")
    args = parser.parse_args()
    sizes = SHORT if args.short else FULL
    chosen = args.only or ["a", "b", "c"]
    # Checked before anything runs: a missing artifact found by scenario (c) threw away ten minutes of (a) and (b).
    needed = {"a": args.minilm, "b": args.minilm_int8, "c": args.iris}
    missing = [
        f"{path} (scenario {key})"
        for key, path in needed.items()
        if key in chosen and not (path / MANIFEST_FILE).is_file()
    ]
    if missing:
        sys.exit(
            f"error: no artifact at {', '.join(missing)}; build it first: `modelfleet build --bundled -o DIR` "
            "(add `--precision int8` for --minilm-int8); iris: `modelfleet build iris.skops -o DIR --name iris`"
        )
    load_start = os.getloadavg()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="many-models-"))
    sections = []
    try:
        if "a" in chosen:
            sections.append(shared_weights(sizes, args.minilm, work))
        if "b" in chosen:
            sections.append(residency(sizes, args.minilm_int8, work))
        if "c" in chosen:
            sections.append(small_models(sizes, args.iris, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    body = (
        f"Mode: {'short' if args.short else 'full'} ({sizes}); took {time.monotonic() - started:.0f} s. "
        f"Load average at start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, at end "
        f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (1 / 5 / 15 min). Load generator and "
        "servers share the machine's cores.\n\n" + "\n".join(sections)
    )
    command = "python benchmarks/many_models.py" + (" --short" if args.short else "")
    command += "".join(f" --only {scenario}" for scenario in args.only or [])
    path = write_result("many_models", command, body)
    print(body)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
