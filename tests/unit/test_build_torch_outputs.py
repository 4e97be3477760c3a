"""PyTorch sources whose outputs or example inputs V2 cannot carry: refused before export, naming the part.

The modules are real: written to a .py file and built as path/to/file.py:function (no sockets).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.errors import InvalidInput
from modelfleet.manifest import Manifest

MODULES = textwrap.dedent(
    """
    import torch
    from collections import namedtuple
    from torch import nn

    Pair = namedtuple("Pair", ["mean", "total"])

    class Returns(nn.Module):
        def __init__(self, make):
            super().__init__()
            self.linear = nn.Linear(3, 2)
            self.make = make

        def forward(self, x):
            return self.make(self.linear(x))

    def complex_output():
        return Returns(lambda y: {"spectrum": torch.complex(y, y)})

    def sparse_output():
        return Returns(lambda y: {"coo": y.to_sparse()})

    def none_output():
        return Returns(lambda y: (y, None))

    def string_output():
        return Returns(lambda y: {"y": y, "note": "hello"})

    def scalar_output():
        return Returns(lambda y: {"loss": y.sum()})

    def unbatched_output():
        return Returns(lambda y: {"pooled": y.sum(dim=0)})

    def bfloat_output():
        return Returns(lambda y: y.to(torch.bfloat16))

    def namedtuple_output():
        return Returns(lambda y: Pair(y.mean(dim=1), y.sum(dim=1)))

    def not_a_module():
        return "a model"
    """
)


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("torch-code")
    (folder / "outputs.py").write_text(MODULES)
    np.save(folder / "x.npy", np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    return folder


def _build(code: Path, function: str, tmp_path: Path, **options: object) -> Manifest:
    settings = BuildOptions.model_validate({"samples": code / "x.npy", "trust_code": True, **options})
    return build_artifact(f"{code / 'outputs.py'}:{function}", tmp_path / "out", settings)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (
            "complex_output",
            "output 'spectrum' is torch.complex64, V2 has no complex datatype: return torch.view_as_real",
        ),
        ("sparse_output", "output 'coo' is a sparse tensor (torch.sparse_coo); V2 carries dense tensors"),
        ("none_output", "output 'output_1' is None; V2 carries flat tensors"),
        ("string_output", "output 'note' is a str; V2 carries flat tensors"),
        ("scalar_output", "output 'loss' is a scalar; every output needs the batch as its first axis"),
        ("unbatched_output", "output 'pooled' has 2 rows for a batch of 4"),
        ("bfloat_output", "output 'output_0' is torch.bfloat16, which V2 has no datatype for"),
        ("not_a_module", "outputs.py:not_a_module() returned a str, not a torch.nn.Module"),
    ],
)
def test_what_v2_cannot_carry_is_refused_by_name(
    code: Path, tmp_path: Path, function: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        _build(code, function, tmp_path)
    assert not (tmp_path / "out").exists()


def test_namedtuple_fields_name_the_outputs_and_an_npy_names_the_input_after_forward(
    code: Path, tmp_path: Path
) -> None:
    manifest = _build(code, "namedtuple_output", tmp_path, task="regression")
    assert manifest.task == "regression"
    assert [(f.name, f.shape) for f in manifest.inputs] == [("x", [-1, 3])]
    assert [(f.name, f.shape) for f in manifest.outputs] == [("mean", [-1]), ("total", [-1])]


def test_classification_task_needs_a_label_output(code: Path, tmp_path: Path) -> None:
    with pytest.raises(
        InvalidInput, match="--task classification: the module needs an integer output 'label'"
    ):
        _build(code, "namedtuple_output", tmp_path, task="classification")


def test_example_arrays_forward_does_not_take_are_refused(code: Path, tmp_path: Path) -> None:
    samples = tmp_path / "wrong.npz"
    np.savez(samples, x=np.zeros((2, 3), np.float32), y=np.zeros((2, 1), np.float32))
    with pytest.raises(InvalidInput, match=r"has arrays \['y'\] that forward\(x\) does not take"):
        _build(code, "namedtuple_output", tmp_path, samples=samples)
    one_row = tmp_path / "one.npy"
    np.save(one_row, np.zeros((1, 3), np.float32))
    with pytest.raises(InvalidInput, match="needs a batch axis \\(axis 0\\) of at least 2 rows"):
        _build(code, "namedtuple_output", tmp_path, samples=one_row)
    text = tmp_path / "text.npz"
    np.savez(text, x=np.array([["a", "b", "c"]]))
    with pytest.raises(InvalidInput, match="array 'x' is <U1, which V2 inputs cannot carry"):
        _build(code, "namedtuple_output", tmp_path, samples=text)
