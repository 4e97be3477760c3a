"""`make demo`: build the bundled model, serve it, query it over V2 with tritonclient.

Every step calls the same library functions the CLI wraps; run it with `.venv/bin/python examples/demo.py`.
Output lands in ./demo-output/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact

console = Console()
OUT = Path("demo-output").resolve()
RELATED = [b"A man is playing a guitar.", b"Someone is playing an instrument."]
UNRELATED = [b"A man is playing a guitar.", b"The central bank raised interest rates."]


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def build_models() -> dict[str, Path]:
    artifacts = {"minilm": OUT / "artifacts" / "minilm", "minilm-int8": OUT / "artifacts" / "minilm-int8"}
    options = {
        "minilm": BuildOptions(name="minilm", force=True),
        "minilm-int8": BuildOptions(name="minilm-int8", precision="int8", force=True),
    }
    table = Table("artifact", "precision", "model.onnx MiB", "verification", "build s")
    for name, path in artifacts.items():
        started = time.perf_counter()
        manifest = build_artifact(BUNDLED_SOURCE, path, options[name])
        check = manifest.verification[0]
        size_mib = (path / manifest.model_file).stat().st_size / 2**20
        table.add_row(
            name,
            manifest.precision,
            f"{size_mib:.1f}",
            f"{check.metric} {check.value:.4f} ≥ {check.threshold}",
            f"{time.perf_counter() - started:.1f}",
        )
    console.print(table)
    return artifacts


@contextlib.contextmanager
def serving(artifacts: dict[str, Path]) -> Iterator[str]:
    port_file = OUT / "serve.port"
    port_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "modelfleet.cli.main",
        "serve",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]
    for path in artifacts.values():
        command += ["--model", str(path)]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        if not port_file.exists():
            sys.exit("the server did not start; see the messages above")
        url = f"127.0.0.1:{port_file.read_text().strip()}"
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{url}/v2/health/ready").status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def query(url: str, models: list[str]) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url)
    table = Table("model", "embeddings shape", "related pair cosine", "unrelated pair cosine")
    for model in models:

        def embed(texts: list[bytes], model: str = model) -> np.ndarray:
            tensor = triton.InferInput("text", [len(texts)], "BYTES")
            tensor.set_data_from_numpy(np.array(texts, dtype=object))
            return client.infer(model, [tensor]).as_numpy("embedding")

        related, unrelated = embed(RELATED), embed(UNRELATED)
        table.add_row(
            model, str(related.shape), f"{related[0] @ related[1]:.3f}", f"{unrelated[0] @ unrelated[1]:.3f}"
        )
    console.print(table)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(exist_ok=True)
    step("1. build the bundled all-MiniLM-L6-v2 (fp32 and int8, verified against the source)")
    artifacts = build_models()
    step("2. serve both models from one process (dynamic batching, Open Inference Protocol V2)")
    with serving(artifacts) as url:
        console.print(f"server ready at http://{url}")
        step("3. query them with tritonclient (binary tensors)")
        query(url, list(artifacts))
    console.print(f"[green]done[/] — artifacts in {OUT / 'artifacts'}")


if __name__ == "__main__":
    main()
