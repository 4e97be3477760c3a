"""A torch module → one checked ONNX file: the TorchScript exporter at opset 17, dynamo as the fallback.

The TorchScript exporter comes first because on torch 2.13 the dynamo exporter wrote an invalid graph
for a wrapped transformer (an output name assigned twice) and took 4× longer (see huggingface.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelfleet.build.messages import first_line

ONNX_OPSET = 17
DYNAMO_MIN_OPSET = 18  # the dynamo exporter writes opset 18 or later
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # the dynamo exporter colours its messages


def export_with_fallback(
    module: Any,
    args: tuple[Any, ...],
    destination: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> tuple[str, list[str]]:
    """Export `module(*args)`; returns (the exporter that worked, the errors of those that did not).

    `dynamic_axes` names each variable axis of inputs and outputs (e.g. {"x": {0: "batch"}}). The
    written file passes onnx.checker; on total failure the list holds one line per exporter.
    """
    import onnx
    import torch

    errors: list[str] = []
    for exporter in ("torchscript", "dynamo"):
        destination.unlink(missing_ok=True)
        try:
            with _quiet(), torch.no_grad():
                if exporter == "torchscript":
                    specific: dict[str, Any] = {
                        "dynamic_axes": dynamic_axes,
                        "opset_version": ONNX_OPSET,
                        "dynamo": False,
                    }
                else:
                    dims: dict[str, Any] = {}
                    specific = {
                        "dynamic_shapes": tuple(
                            {
                                axis: dims.setdefault(label, torch.export.Dim(label))
                                for axis, label in dynamic_axes.get(name, {}).items()
                            }
                            for name in input_names
                        ),
                        "opset_version": max(ONNX_OPSET, DYNAMO_MIN_OPSET),
                        "dynamo": True,
                        "external_data": False,
                        "verbose": False,
                    }
                torch.onnx.export(
                    module,
                    args,
                    str(destination),
                    input_names=input_names,
                    output_names=output_names,
                    **specific,
                )
            onnx.checker.check_model(str(destination))
            return exporter, errors
        except Exception as exc:  # exporter failures come as many exception types; the message matters
            errors.append(f"{exporter}: {_ANSI_ESCAPE.sub('', first_line(exc))}")
    destination.unlink(missing_ok=True)
    return "", errors


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress prints, log lines and warnings off the CLI's stdout (--json) and stderr.

    Tracer warnings are about code paths the examples did not take; verification checks the result.
    """
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_logger.setLevel(level)
