"""Compare an artifact's outputs with the source framework's, and open the sessions that do it.

Verification runs the artifact the way a server will: same execution provider (target) and same graph
optimization level, so the recorded figures describe what gets served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.messages import first_line
from modelfleet.errors import InvalidInput, Unavailable, VerificationFailed
from modelfleet.manifest import Verification

Array = np.ndarray[Any, Any]

_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_TARGET_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_MISSING_PROVIDER_MESSAGES = {
    "cuda": "CUDA execution provider is not available on this machine (install onnxruntime-gpu)",
    "tensorrt": "TensorRT execution provider is not available on this machine (install onnxruntime-gpu with TensorRT)",
}
# Below this norm a row counts as all-zero (cosine similarity is undefined there, never NaN here).
_NORM_FLOOR = 1e-12


def check_target_available(target: str) -> None:
    """Fail fast, before any export work, when the target's execution provider is missing."""
    import onnxruntime as ort

    wanted = _TARGET_PROVIDERS[target][0]
    if wanted not in ort.get_available_providers():
        raise Unavailable(_MISSING_PROVIDER_MESSAGES[target])


def open_session(model_path: Path, target: str = "cpu", optimization: str = "all") -> Any:
    """An ONNX Runtime session on the target's providers at the given graph optimization level."""
    import onnxruntime as ort

    check_target_available(target)
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[optimization])
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise at build time
    try:
        return ort.InferenceSession(str(model_path), options, providers=_TARGET_PROVIDERS[target])
    except Exception as exc:  # ORT raises its own exception types; the message is what matters
        raise InvalidInput(f"ONNX Runtime cannot load {model_path.name}: {first_line(exc)}") from None


def run_session(session: Any, feed: Mapping[str, Array]) -> dict[str, Array]:
    names = [output.name for output in session.get_outputs()]
    try:
        values = session.run(names, dict(feed))
    except Exception as exc:
        raise InvalidInput(f"the model failed on the verification samples: {first_line(exc)}") from None
    return dict(zip(names, (np.asarray(v) for v in values), strict=True))


def cosine_rows(reference: Array, candidate: Array) -> Array:
    """Cosine similarity of matching rows (the first axis is the sample axis)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    got = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != got.shape:
        raise VerificationFailed(f"output shapes differ: source {ref.shape}, artifact {got.shape}")
    ref_norms, got_norms = np.linalg.norm(ref, axis=1), np.linalg.norm(got, axis=1)
    dots = np.sum(ref * got, axis=1)
    similarity: Array = dots / np.maximum(ref_norms * got_norms, _NORM_FLOOR)
    # Two all-zero rows agree perfectly; one zero row against a non-zero one does not at all.
    both_zero = (ref_norms < _NORM_FLOOR) & (got_norms < _NORM_FLOOR)
    similarity[both_zero] = 1.0
    return similarity


def cosine_check(reference: Array, candidate: Array, threshold: float, label: str = "") -> Verification:
    """Min cosine similarity over samples must reach `threshold`."""
    similarity = cosine_rows(reference, candidate)
    if not np.all(np.isfinite(similarity)):
        similarity = np.where(np.isfinite(similarity), similarity, -1.0)
    value = float(similarity.min())
    diff = np.abs(np.asarray(reference, dtype=np.float64) - np.asarray(candidate, dtype=np.float64))
    return Verification(
        samples=len(similarity),
        metric=f"min_cosine_similarity{label}",
        value=value,
        threshold=threshold,
        passed=value >= threshold,
        details={"mean_cosine_similarity": float(similarity.mean()), "max_abs_diff": _finite_max(diff)},
    )


def agreement_check(reference: Array, candidate: Array, label: str = "") -> Verification:
    """Every discrete output (class label, integer) must be identical."""
    ref = np.asarray(reference).reshape(len(reference), -1)
    got = np.asarray(candidate).reshape(len(candidate), -1)
    if ref.shape != got.shape:
        raise VerificationFailed(f"output shapes differ: source {ref.shape}, artifact {got.shape}")
    same = np.all(ref == got, axis=1)
    value = float(same.mean()) if len(same) else 1.0
    return Verification(
        samples=len(same),
        metric=f"label_agreement{label}",
        value=value,
        threshold=1.0,
        passed=bool(same.all()),
        details={"mismatches": float(len(same) - int(same.sum()))},
    )


def max_abs_diff_check(reference: Array, candidate: Array, threshold: float, metric: str) -> Verification:
    """The largest absolute difference over all elements must not exceed `threshold`."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise VerificationFailed(f"output shapes differ: source {ref.shape}, artifact {got.shape}")
    diff = np.abs(ref - got)
    value = _finite_max(diff)
    return Verification(
        samples=len(ref),
        metric=metric,
        value=value,
        threshold=threshold,
        passed=value <= threshold,
        details={"mean_abs_diff": float(np.nan_to_num(diff, nan=np.inf).mean()) if diff.size else 0.0},
    )


def require_passed(verifications: Sequence[Verification], hint: str = "") -> None:
    """Raise VerificationFailed naming every check that missed its threshold (and `hint`, if given)."""
    failed = [v for v in verifications if not v.passed]
    if failed:
        parts = [
            f"{v.metric} {v.value:.6g} (threshold {v.threshold:.6g}) over {v.samples} samples" for v in failed
        ]
        message = "verification failed, the artifact was not written: " + "; ".join(parts)
        raise VerificationFailed(f"{message}; {hint}" if hint else message)


def _finite_max(values: Array) -> float:
    if values.size == 0:
        return 0.0
    if not np.all(np.isfinite(values)):
        return float("inf")
    return float(values.max())
