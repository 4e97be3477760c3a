"""Small PyTorch modules to build from `module:function` (tests.support.torch_mlp:make_model) and TorchScript.

TwoInputMLP takes `features` [batch, 6] and `extra` [batch, 2] and returns a dict: `scores` [batch, 3]
(float) and `label` [batch] (int64, the argmax). Random-initialised from a fixed seed, hidden 32.
NestedOutputMLP returns what V2 cannot carry (an `aux` list of lists) for the refusal tests;
BranchyMLP takes a Python branch on its batch, which a traced graph freezes (verification catches it);
RMSNormMLP needs the dynamo exporter (aten::rms_norm has no opset-17 TorchScript export) and
BucketMLP has no ONNX export at all (aten::searchsorted).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

FEATURES = 6
EXTRA = 2
HIDDEN = 32
CLASSES = 3
SEED = 1234


class TwoInputMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features_in = nn.Linear(FEATURES, HIDDEN)
        self.extra_in = nn.Linear(EXTRA, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, features: Tensor, extra: Tensor) -> dict[str, Tensor]:
        hidden = torch.relu(self.features_in(features) + self.extra_in(extra))
        scores = self.head(hidden)
        return {"scores": scores, "label": scores.argmax(dim=1)}


class NestedOutputMLP(TwoInputMLP):
    def forward(self, features: Tensor, extra: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        scores = super().forward(features, extra)["scores"]
        return {"scores": scores, "aux": [[scores]]}  # type: ignore[dict-item]


class BranchyMLP(TwoInputMLP):
    def forward(self, features: Tensor, extra: Tensor) -> Tensor:  # type: ignore[override]
        scores = super().forward(features, extra)["scores"]
        # Decided once per batch in Python: tracing records the branch the example batch took.
        return scores * 2.0 if bool(features[:, 0].sum() > 0) else scores * -3.0


class RMSNormMLP(TwoInputMLP):
    def forward(self, features: Tensor, extra: Tensor) -> dict[str, Tensor]:
        scores = super().forward(features, extra)["scores"]
        return {"normed": torch.nn.functional.rms_norm(scores, (CLASSES,))}


class BucketMLP(TwoInputMLP):
    def forward(self, features: Tensor, extra: Tensor) -> dict[str, Tensor]:
        scores = super().forward(features, extra)["scores"]
        return {"bucket": torch.searchsorted(torch.tensor([-0.5, 0.0, 0.5]), scores.contiguous())}


def make_model() -> nn.Module:
    torch.manual_seed(SEED)
    return TwoInputMLP().eval()


def make_nested_model() -> nn.Module:
    torch.manual_seed(SEED)
    return NestedOutputMLP().eval()


def make_branchy_model() -> nn.Module:
    torch.manual_seed(SEED)
    return BranchyMLP().eval()


def make_rms_model() -> nn.Module:
    torch.manual_seed(SEED)
    return RMSNormMLP().eval()


def make_bucket_model() -> nn.Module:
    torch.manual_seed(SEED)
    return BucketMLP().eval()


def example_inputs(rows: int = 12, seed: int = 7) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    return {
        "features": rng.standard_normal((rows, FEATURES)).astype(np.float32),
        "extra": rng.standard_normal((rows, EXTRA)).astype(np.float32),
    }


def write_examples(path: Path, rows: int = 12) -> Path:
    np.savez(path, **example_inputs(rows))
    return path


def write_torchscript(path: Path) -> Path:
    """make_model() compiled with torch.jit.script and saved with torch.jit.save."""
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; people still ship these files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(make_model()), str(path))
    return path


def write_torch_save(path: Path) -> Path:
    """A plain torch.save of the whole module: a pickle, not TorchScript (the build refuses it)."""
    torch.save(make_model(), path)
    return path
