"""A torch module → one checked ONNX file: the TorchScript exporter at opset 17, dynamo as the fallback.

The TorchScript exporter comes first because on torch 2.13 the dynamo exporter wrote an invalid graph
for a wrapped transformer (an output name assigned twice) and took 4× longer (see huggingface.py).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import sys
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
                    specific = {
                        "dynamic_shapes": _dynamic_shapes(module, input_names, dynamic_axes),
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
            errors.append(f"{exporter}: {_summary(exc)}")
    destination.unlink(missing_ok=True)
    return "", errors


def _dynamic_shapes(module: Any, input_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> Any:
    """dynamic_axes in torch.export's form: one {axis: Dim} per argument, the same Dim for one label."""
    import torch

    dims: dict[str, Any] = {}
    shapes = tuple(
        {
            axis: dims.setdefault(label, torch.export.Dim(label))
            for axis, label in dynamic_axes.get(name, {}).items()
        }
        for name in input_names
    )
    parameters = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return (shapes,)  # forward(*tensors) takes them all as its one (tuple) argument
    return shapes


def _summary(exc: BaseException) -> str:
    """One line: the dynamo exporter's own "Exception summary" section when it has one (its first line
    only says which step failed), without its colour codes."""
    text = _ANSI_ESCAPE.sub("", str(exc))
    marker = "## Exception summary"
    if marker in text:
        rest = [line for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if rest:
            return rest[0].strip()
    return first_line(exc) if text == str(exc) else (text.strip().splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress prints, graph dumps, log lines and warnings off the CLI's stdout
    (--json) and stderr; a failure's message still reaches the user as the build's one-line error.

    Tracer warnings are about code paths the examples did not take; verification checks the result.
    """
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            _native_output_discarded(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_logger.setLevel(level)


@contextlib.contextmanager
def _native_output_discarded() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null: the TorchScript exporter's C++ side prints a whole
    graph dump ("Torch IR graph at exception: ...") to stdout when an operator is not supported."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
