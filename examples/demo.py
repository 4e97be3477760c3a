"""`make demo`: the whole job end to end, on this machine.

1. build the bundled all-MiniLM-L6-v2 (fp32 and int8) and a scikit-learn iris classifier, each verified;
2. bring a local fleet up: several supervised model-server replicas behind one router;
3. query every model through the router with tritonclient;
4. load-test the fleet through the router (open loop, rate sweep, SLO gates) and write the HTML report;
5. review the running fleet against the Well-Architected ML Lens (spec, manifests, saved results, live probes);
6. bring the fleet down;
7. tune the iris model briefly (two batch sizes on one CPU, short probes): capacity under the SLO, priced
   in $ per 1M conforming inferences, and the recommendation as a fleet spec; then say where the reports are.

Every step calls the library functions the CLI wraps, or the CLI itself. Output lands in ./demo-output/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact
from modelfleet.fleet.local import start_fleet, stop_fleet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_iris import train_and_save

console = Console()
OUT = Path("demo-output").resolve()
STATE = OUT / "fleet-state"
RESULTS = OUT / "results"  # what `review --results` reads: bench and tune results only
MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main"]
RELATED = [b"A man is playing a guitar.", b"Someone is playing an instrument."]
UNRELATED = [b"A man is playing a guitar.", b"The central bank raised interest rates."]


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def build_models() -> dict[str, Path]:
    artifacts = OUT / "artifacts"
    iris_source = OUT / "iris.skops"
    accuracy = train_and_save(iris_source)
    console.print(f"trained iris classifier (held-out accuracy {accuracy:.2f}) → {iris_source}")
    builds = {
        "minilm": (BUNDLED_SOURCE, BuildOptions(name="minilm", force=True)),
        "minilm-int8": (BUNDLED_SOURCE, BuildOptions(name="minilm-int8", precision="int8", force=True)),
        "iris": (str(iris_source), BuildOptions(name="iris", force=True)),
    }
    table = Table("artifact", "precision", "model.onnx MiB", "verification", "build s")
    paths: dict[str, Path] = {}
    for name, (source, options) in builds.items():
        started = time.perf_counter()
        manifest = build_artifact(source, artifacts / name, options)
        check = manifest.verification[0]
        size_mib = (artifacts / name / manifest.model_file).stat().st_size / 2**20
        table.add_row(
            name,
            manifest.precision,
            f"{size_mib:.1f}",
            f"{check.metric} {check.value:.4f} (bar {check.threshold})",
            f"{time.perf_counter() - started:.1f}",
        )
        paths[name] = artifacts / name
    console.print(table)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_fleet_spec(artifacts: dict[str, Path]) -> Path:
    spec = {
        "name": "demo",
        "models": [
            {"name": "minilm", "path": str(artifacts["minilm"]), "batching": {"max_batch_size": 32}},
            {
                "name": "minilm-int8",
                "path": str(artifacts["minilm-int8"]),
                "batching": {"max_batch_size": 32},
            },
            {"name": "iris", "path": str(artifacts["iris"])},
        ],
        "pools": [
            {"name": "cpu", "replicas": 2, "workers": 1, "resources": {"cpu_cores": 1, "memory_mib": 1024}}
        ],
        "router": {"port": free_port()},
        "auth": {"enabled": False},  # a local try-out on loopback; `fleet render` turns auth on
    }
    path = OUT / "fleet.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def query(router_url: str) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(router_url.removeprefix("http://"))
    table = Table("model", "output", "check")
    for model in ("minilm", "minilm-int8"):

        def embed(texts: list[bytes], model: str = model) -> np.ndarray:
            tensor = triton.InferInput("text", [len(texts)], "BYTES")
            tensor.set_data_from_numpy(np.array(texts, dtype=object))
            return client.infer(model, [tensor]).as_numpy("embedding")

        related, unrelated = embed(RELATED), embed(UNRELATED)
        table.add_row(
            model,
            f"embedding {related.dtype}{list(related.shape)}",
            f"cosine related {related[0] @ related[1]:.3f} vs unrelated {unrelated[0] @ unrelated[1]:.3f}",
        )
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("iris", [tensor])
    table.add_row("iris", f"label {result.as_numpy('label').tolist()}", "setosa, virginica expected: [0, 2]")
    console.print(table)


def bench(spec_path: Path) -> tuple[Path, int]:
    results = RESULTS / "bench-results.json"
    command = [
        *MODELFLEET,
        "bench",
        "run",
        "--fleet",
        str(spec_path),
        "--state-dir",
        str(STATE),
        "--mode",
        "open",
        "--rate",
        "20,40,80",
        "--duration-s",
        "6",
        "--warmup-s",
        "1",
        "--slo",
        "p99<500ms,error_rate<1%",
        "-o",
        str(results),
    ]
    console.print("$ " + " ".join(command[2:]))
    gate = subprocess.run(command).returncode
    report = OUT / "report.html"
    subprocess.run([*MODELFLEET, "report", str(results), "-o", str(report)], check=True)
    return report, gate


def tune(artifacts: dict[str, Path]) -> tuple[Path, int]:
    """A short tune (about 30 s): iris on one CPU, batch 1 vs 8, one repeat of 1 s probes."""
    spec = {
        "artifacts": [str(artifacts["iris"])],
        "slo": "p99<50ms,error_rate<1%",
        "target_rate_per_s": 2000,
        "hardware": [{"cpus": 1}],
        "space": {"max_batch_size": [1, 8]},
        "capacity": {
            "start_rate_per_s": 100,
            "max_rate_per_s": 800,
            "probe_duration_s": 1.0,
            "warmup_s": 0.3,
            "window_s": 0.5,
            "repeats": 1,
            "max_probes": 6,
        },
    }
    spec_path = OUT / "tune-iris.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    results, fleet = RESULTS / "tune-results.json", OUT / "fleet-tuned.yaml"
    command = [
        *MODELFLEET,
        "tune",
        str(spec_path),
        "-o",
        str(results),
        "--force",
        "--write-fleet",
        str(fleet),
    ]
    console.print("$ " + " ".join(command[2:]))
    gate = subprocess.run(command).returncode
    page = OUT / "tune.html"
    if results.is_file():
        subprocess.run([*MODELFLEET, "report", str(results), "-o", str(page)], check=True)
    return page, gate


def review(spec_path: Path) -> tuple[Path, int]:
    """The automated Well-Architected review: the spec, its rendered manifests, the saved results, live probes."""
    page = OUT / "review.html"
    common = [str(spec_path), "--live", "--results", str(RESULTS), "--state-dir", str(STATE)]
    command = [*MODELFLEET, "review", *common]
    console.print("$ " + " ".join(command[2:]))
    gate = subprocess.run(command).returncode
    subprocess.run([*MODELFLEET, "review", *common, "--format", "html", "-o", str(page)], check=False)
    return page, gate


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    step("1. build: bundled MiniLM (fp32, int8) and a scikit-learn model, verified against their sources")
    artifacts = build_models()
    step("2. fleet up: 3 models, 2 supervised replicas each group, one router")
    spec_path = write_fleet_spec(artifacts)
    state = start_fleet(spec_path, state_root=STATE, progress=lambda line: console.print(f"  {line}"))
    try:
        step("3. query every model through the router (tritonclient, binary tensors)")
        query(state.router_url)
        console.print(f"live dashboard: [bold]{state.router_url}/ui[/] (open it while the bench runs)")
        step("4. bench through the router: open loop, rate sweep, SLO gates")
        report, gate = bench(spec_path)
        step("5. review: the fleet against the Well-Architected ML Lens, with evidence")
        review_page, review_gate = review(spec_path)
    finally:
        step("6. fleet down")
        stop_fleet("demo", state_root=STATE)
        console.print("fleet stopped")
    step("7. tune: the cheapest iris configuration that meets p99 < 50 ms at 2,000/s")
    tune_page, tune_gate = tune(artifacts)
    verdict = "[green]SLOs met[/]" if gate == 0 else f"[yellow]an SLO gate failed (exit {gate})[/]"
    console.print(f"\n{verdict} — report: [bold]{report}[/] (open it in a browser; it works offline)")
    tuned = "recommendation re-verified" if tune_gate == 0 else f"tune gate failed (exit {tune_gate})"
    console.print(f"tune: {tuned} — page: [bold]{tune_page}[/]")
    risks = (
        "no HIGH risk"
        if review_gate == 0
        else "HIGH risks remain (the demo runs without auth; the page says how to fix each)"
    )
    console.print(f"review: {risks} — page: [bold]{review_page}[/]")


if __name__ == "__main__":
    main()
