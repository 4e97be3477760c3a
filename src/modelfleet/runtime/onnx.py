"""ONNX Runtime backend: serves every artifact `modelfleet build` writes (transformers, scikit-learn, ONNX)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.errors import IntegrityError, InvalidInput, Unavailable
from modelfleet.manifest import Manifest
from modelfleet.runtime.processing import TensorProcessing, make_processing
from modelfleet.types import Arrays, Datatype, TensorSpec

_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_SAMPLE_TEXT = "A short sentence to warm the model up."


def providers_for(target: str) -> list[str]:
    """The execution providers for a build target; refuses a GPU target on a machine without one."""
    import onnxruntime as ort

    wanted = _PROVIDERS[target]
    available = set(ort.get_available_providers())
    if wanted[0] not in available:
        raise Unavailable(
            f"{wanted[0]} is not available on this machine (onnxruntime has {sorted(available)}); "
            "install onnxruntime-gpu on a CUDA machine, or serve a cpu artifact"
        )
    return [p for p in wanted if p in available]


def default_intra_op_threads(workers: int, cpu_cores: float | None = None) -> int:
    """ONNX Runtime threads per model: the server's cores (given, or `available_cores()`) ÷ workers.

    Without a budget two replicas of 1 core each on a 2-core machine ran 2 threads each; in a pod with a
    CPU limit ONNX Runtime would start one thread per node core (it does not read cgroup limits).
    """
    cores = cpu_cores if cpu_cores is not None else available_cores()
    return max(1, int(cores // max(1, workers)))


def available_cores() -> float:
    """The CPUs this process may run on (affinity), capped by a cgroup v2 or v1 CPU quota."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    quota = _cgroup_cpu_quota()
    return min(cores, max(1.0, quota)) if quota is not None else cores


def _cgroup_cpu_quota() -> float | None:
    try:
        fields = (
            Path("/sys/fs/cgroup/cpu.max").read_text().split()
        )  # cgroup v2: "max 100000" or "200000 100000"
        if len(fields) == 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


class OnnxModel:
    """One ONNX Runtime session plus the artifact's pre-processing."""

    platform = "onnxruntime_onnx"

    def __init__(
        self,
        artifact_dir: Path,
        manifest: Manifest,
        intra_op_threads: int,
        name: str | None = None,
        version: str | None = None,
        length_grouping: bool = True,
        prepack_weights: bool = True,
        spin_threads: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.name = name or manifest.name
        self.version = version or manifest.version
        self.manifest = manifest
        self.inputs = [field.spec() for field in manifest.inputs]
        self.outputs = [field.spec() for field in manifest.outputs]
        model_path = artifact_dir / manifest.model_file
        self.sha256 = manifest.files.get(manifest.model_file, "")
        self.file_size_bytes = model_path.stat().st_size

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _OPTIMIZATION_LEVELS[manifest.graph_optimization_level]
        )
        # `spin_threads`: intra-op threads spin between the parallel sections of one run and sleep once it
        # ends. Sleeping, each of a run's parallel sections waits for a thread to wake, and on this 2-core
        # VM a second thread gained nothing at batch 1 (MiniLM 8.4 ms with 2 threads and 8.3 with 1;
        # 4.9 ms spinning). Spinning after a run as well (ORT's default) burns the cores the event loop
        # needs to accept the next batch (1.64 cores busy against 1.26 with runs 3 ms apart). Off, threads
        # sleep: the choice for a process where several sessions run at once (docs/serve.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_threads else "0")
        if spin_threads:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        # Memory: the arena keeps peak activation memory forever, and weight prepacking keeps a second,
        # repacked copy of every MatMul weight. The arena is off: MiniLM fp32 batch 1 ran as fast without it
        # (6.7-6.8 ms, 1 thread), and with both on a loaded MiniLM fp32 held ~155 MiB against 124-126.
        # Prepacking is the model's choice (`prepack_weights`, on by default): it ran batch 1 in 6.8 ms
        # against 10.0 ms without, and batch 32 at 1.1-1.3x the rate, at no memory cost with the arena off
        # (loaded and warmed MiniLM fp32, 86 MiB file: +118 MiB with it, +117 MiB without; ONNX Runtime
        # frees a weight's unpacked copy). What fleet/sizing.py assumes of a model rests on these settings.
        options.enable_cpu_mem_arena = False
        if not prepack_weights:
            options.add_session_config_entry("session.disable_prepacking", "1")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=providers_for(manifest.target)
            )
        except Unavailable:
            raise
        except Exception as exc:
            raise IntegrityError(
                f"model {self.name}: ONNX Runtime cannot load {manifest.model_file}: {exc}"
            ) from None

        self._graph_outputs = [output.name for output in self._session.get_outputs()]
        self._processing = make_processing(manifest, artifact_dir, length_grouping)
        self._client_feeds = isinstance(self._processing, TensorProcessing)

    def predict(self, inputs: Arrays) -> Arrays:
        return self._processing.predict(self._run, inputs)

    def validate_inputs(self, inputs: Arrays) -> Arrays:
        return self._processing.validate(inputs)

    def _run(self, feed: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        if not self._client_feeds:  # the server made the feed: a failure here is the server's
            return dict(zip(self._graph_outputs, self._session.run(self._graph_outputs, feed), strict=True))
        try:
            results = self._session.run(self._graph_outputs, feed)
        except Exception as exc:  # ORT raises its own exception types for bad feeds
            raise InvalidInput(f"model {self.name} rejected the inputs: {str(exc).splitlines()[0]}") from None
        return dict(zip(self._graph_outputs, results, strict=True))

    def example_inputs(self, batch_size: int) -> Arrays:
        return {spec.name: _example(spec, batch_size) for spec in self.inputs}

    def close(self) -> None:
        del self._session


def _example(spec: TensorSpec, batch_size: int) -> np.ndarray[Any, Any]:
    shape = tuple(batch_size if i == 0 else (8 if dim == -1 else dim) for i, dim in enumerate(spec.shape))
    if spec.datatype is Datatype.BYTES:
        array = np.empty(shape, dtype=object)
        array.fill(_SAMPLE_TEXT.encode())
        return array
    rng = np.random.default_rng(0)
    return rng.random(shape).astype(spec.datatype.numpy_dtype)
