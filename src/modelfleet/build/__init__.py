"""Turn a model source (Hugging Face folder, scikit-learn, XGBoost or LightGBM file, ONNX file) into a verified artifact.

    from pathlib import Path
    from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact

    manifest = build_artifact(BUNDLED_SOURCE, Path("artifacts/minilm"), BuildOptions(precision="int8"))

Importing this package is cheap: torch, transformers, skl2onnx, skops, xgboost, lightgbm, onnxmltools and
onnx load only inside the exporter that needs them.
"""

from modelfleet.build.bundled import BUNDLED_MODEL_NAME, BUNDLED_SOURCE, bundled_model_dir
from modelfleet.build.options import BuildOptions
from modelfleet.build.pipeline import build_artifact

__all__ = ["BUNDLED_MODEL_NAME", "BUNDLED_SOURCE", "BuildOptions", "build_artifact", "bundled_model_dir"]
