"""Build options: what the user asks `modelfleet build` to produce."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from modelfleet.config.base import SpecModel
from modelfleet.manifest import Task

Precision = Literal["fp32", "int8"]
OptimizationLevel = Literal["disable", "basic", "extended", "all"]
Target = Literal["cpu", "cuda", "tensorrt"]
BuildTask = Literal["auto"] | Task

# Verification thresholds from the build contract. Cosine similarity is compared per sample, so the
# minimum over the sample set is the figure that must clear the bar.
DEFAULT_MIN_COSINE = {"fp32": 0.999, "int8": 0.98}
MAX_PROBABILITY_DIFF = 1e-4
# PyTorch sources: max |artifact − torch| per float output, relative to max(1, max |torch|). fp32 ONNX
# Runtime vs eager torch differs by float rounding (1.2e-7 on the test MLP); int8 weights moved a 3-layer
# MLP's outputs by 1.6e-3, so 0.05 leaves a 30× margin.
DEFAULT_MAX_RELATIVE_DIFF = {"fp32": 1e-4, "int8": 5e-2}


class BuildOptions(SpecModel):
    """Everything `build_artifact` needs besides the source and the output folder."""

    name: str | None = Field(
        default=None,
        description="Model name in the manifest (letters, digits, '_', '.', '-'); defaults to the source's name.",
    )
    version: str = Field(
        default="1", pattern=r"^[0-9]+$", description="Model version recorded in the manifest."
    )
    precision: Precision = Field(
        default="fp32",
        description="fp32 keeps the exported weights; int8 applies ONNX Runtime dynamic quantization (QInt8 weights).",
    )
    optimization: OptimizationLevel = Field(
        default="all",
        description=(
            "ONNX Runtime graph optimization level recorded for serving and used for verification. "
            "The artifact keeps the portable graph; the server optimizes it when it loads it."
        ),
    )
    optimize: bool = Field(
        default=False,
        description=(
            "fp32 transformer encoders: rewrite the graph with ONNX Runtime's transformer optimizer "
            "(fused attention, embedding and skip layer norms, bias-gelu) at build time; verified like "
            "any build and recorded in the manifest (extra.optimization)."
        ),
    )
    target: Target = Field(
        default="cpu",
        description="Execution provider the artifact is built and verified for: cpu, cuda or tensorrt.",
    )
    task: BuildTask = Field(
        default="auto",
        description=(
            "What to build the source as. auto detects it (a Hugging Face folder from config.json's "
            "architectures, a file from its format); a task name overrides the detection, e.g. "
            "text-embedding for the encoder under a classification head."
        ),
    )
    force: bool = Field(default=False, description="Replace an existing output folder.")
    trust_pickle: bool = Field(
        default=False,
        description="Load pickle/joblib sources and skops files with any types. Unpickling runs code: only for files you trust.",
    )
    trust_code: bool = Field(
        default=False,
        description=(
            "Build a module:function source: import the module and call the function (runs its Python "
            "code: only for code you trust). TorchScript files need no trust."
        ),
    )
    trusted_types: list[str] = Field(
        default_factory=list,
        description="Extra fully qualified type names to trust when loading a skops file (e.g. mypackage.features.clip).",
    )
    samples: Path | None = Field(
        default=None,
        description=(
            "Verification inputs instead of the built-in ones: .txt/.json sentences (text models), "
            ".npy/.csv rows (scikit-learn), .npz arrays keyed by input name (ONNX files; PyTorch sources, "
            "where they are required and define the inputs' dtypes and shapes, or .npy for one input)."
        ),
    )
    min_cosine: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Lowest acceptable cosine similarity per sample; default 0.999 for fp32 and 0.98 for int8.",
    )

    min_label_agreement: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Tabular models (scikit-learn, XGBoost, LightGBM): lowest fraction of verification rows on "
            "which the artifact must give the framework's answer (the same label; the prediction within "
            "tolerance for regressors). The remaining rows are excused from the probability and "
            "prediction checks too. Float32 arithmetic in the graph can flip a row at a split "
            "threshold or a near-tie of class probabilities; 1.0 accepts no such row."
        ),
    )
    max_probability_diff: float = Field(
        default=MAX_PROBABILITY_DIFF,
        gt=0.0,
        le=1.0,
        description="Tabular classifiers: largest acceptable absolute difference of any class probability from the framework's.",
    )

    max_relative_diff: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "PyTorch sources: largest acceptable max |artifact − torch| per float output, as a fraction "
            "of max(1, max |torch|); default 1e-4 for fp32 and 0.05 for int8."
        ),
    )

    def relative_diff_threshold(self) -> float:
        if self.max_relative_diff is not None:
            return self.max_relative_diff
        return DEFAULT_MAX_RELATIVE_DIFF[self.precision]

    def cosine_threshold(self) -> float:
        return self.min_cosine if self.min_cosine is not None else DEFAULT_MIN_COSINE[self.precision]
