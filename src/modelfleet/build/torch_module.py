"""PyTorch source (a TorchScript file, or `module:function` returning an nn.Module) → ONNX with a batch axis.

Shapes and dtypes cannot be read off a torch module, so example inputs (`--samples`, an .npz keyed by
forward()'s parameter names, or an .npy for a single input) define the graph's inputs; one eager run on
them gives the outputs, which must be flat: a tensor, a tuple/list/namedtuple of tensors, or a dict of
tensors. Axis 0 of every input and output is the dynamic batch axis, other axes keep the examples'
sizes. The artifact is verified against torch on the examples as one batch and row by row.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.exported import Array, ExportedModel, row_batchings
from modelfleet.build.messages import first_line
from modelfleet.build.options import BuildOptions
from modelfleet.build.sources import ResolvedSource
from modelfleet.build.torch_export import export_with_fallback
from modelfleet.build.torch_source import TorchCallable
from modelfleet.build.verify import agreement_check, max_abs_diff_check, run_session
from modelfleet.errors import InvalidInput
from modelfleet.manifest import TensorField, Verification
from modelfleet.types import Datatype, Progress

# Rows verified one at a time (the whole file is also verified as one batch): enough to catch a graph
# whose batch axis was frozen or mixed up, without one run per row of a large samples file.
BATCH_1_ROWS = 16
# With one row, "the whole file" is a batch of 1 too, and a graph frozen at batch 1 would pass.
MIN_EXAMPLE_ROWS = 2
_V2_BY_NUMPY = {
    np.dtype(np.bool_): Datatype.BOOL,
    np.dtype(np.uint8): Datatype.UINT8,
    np.dtype(np.int8): Datatype.INT8,
    np.dtype(np.int16): Datatype.INT16,
    np.dtype(np.int32): Datatype.INT32,
    np.dtype(np.int64): Datatype.INT64,
    np.dtype(np.float16): Datatype.FP16,
    np.dtype(np.float32): Datatype.FP32,
    np.dtype(np.float64): Datatype.FP64,
    np.dtype(np.uint16): Datatype.UINT16,
    np.dtype(np.uint32): Datatype.UINT32,
    np.dtype(np.uint64): Datatype.UINT64,
}
_FLOATS = {Datatype.FP16, Datatype.FP32, Datatype.FP64}
_CODE_PREFIX = "modelfleet_user_code."  # module name for a file loaded from path/to/file.py


def export_torch(
    resolved: ResolvedSource, work_dir: Path, options: BuildOptions, report: Progress
) -> ExportedModel:
    """Export a TorchScript file or a trusted module:function to `work_dir/model.onnx`, verified vs torch."""
    entry = resolved.torch_callable
    what = (
        f"module:function source {resolved.reference}" if entry else f"TorchScript file {resolved.path.name}"
    )
    if options.samples is None:
        raise InvalidInput(
            f"the {what} needs example inputs: pass --samples FILE.npz with one array per forward() input, "
            "keyed by its name (or FILE.npy for a single input); their dtypes and shapes (batch first) "
            "define the model's V2 inputs"
        )
    if entry is not None and not options.trust_code:
        raise InvalidInput(
            f"building {resolved.reference} imports {entry.module} and calls {entry.function}(), which runs "
            "its code: pass --trust-code if you trust it (a TorchScript file builds without it)"
        )
    examples = load_examples(options.samples)
    report("loading source")
    module = _load_module(resolved.path, entry)
    call = _CallPlan.bind(module, examples, options.samples)
    reference = _TorchReference(module, call)
    outputs = reference.describe_outputs(examples)
    task = _task(options, outputs)
    report("exporting")
    onnx_path = work_dir / "model.onnx"
    input_names = list(examples)
    output_names = [field.name for field in outputs]
    example = tuple(reference.tensors(examples))
    exporter, errors = export_with_fallback(
        reference.flat_module(example),
        example,
        onnx_path,
        input_names,
        output_names,
        {name: {0: "batch"} for name in (*input_names, *output_names)},
    )
    if not exporter:
        raise InvalidInput(f"cannot export {resolved.reference} to ONNX ({'; '.join(errors)})")
    opset = _checked_graph_opset(onnx_path, input_names, output_names)
    tolerance = options.relative_diff_threshold()

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        return verify_against_torch(session, reference, examples, outputs, tolerance)

    return ExportedModel(
        onnx_path=onnx_path,
        task=task,
        inputs=[
            TensorField(name=name, datatype=_V2_BY_NUMPY[array.dtype], shape=[-1, *array.shape[1:]])
            for name, array in examples.items()
        ],
        outputs=outputs,
        verify=verify,
        calibration_feeds=row_batchings(examples),
        libraries=("torch", "onnx"),
        extra={
            "exporter": exporter,
            "onnx_opset": opset,
            "torch_source": f"module:function {entry.describe()}" if entry else "TorchScript",
            "max_relative_diff": tolerance,
            "verification_samples": f"{options.samples.name} ({len(next(iter(examples.values())))} rows)",
        },
        detected=f"PyTorch module {entry.describe()}" if entry else "TorchScript file",
    )


def load_examples(path: Path) -> dict[str, Array]:
    """Example inputs: an .npz (arrays by input name, in file order) or an .npy (one input, named later).

    Every array needs a batch axis and the same number of rows (at least MIN_EXAMPLE_ROWS); dtypes
    are V2's (no strings, objects or complex numbers).
    """
    if not path.is_file():
        raise InvalidInput(f"samples file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise InvalidInput(
            f"samples file {path.name}: a PyTorch source takes .npz (arrays keyed by forward()'s "
            "parameter names) or .npy (a single input)"
        )
    try:
        if suffix == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise InvalidInput(
            f"samples file {path.name} is not a readable {suffix} file: {first_line(exc)}"
        ) from None
    if not arrays:
        raise InvalidInput(f"samples file {path.name} holds no arrays")
    rows = set()
    for name, array in arrays.items():
        label = f"array {name!r}" if name else "the array"
        if array.dtype not in _V2_BY_NUMPY:
            raise InvalidInput(
                f"samples file {path.name}: {label} is {array.dtype}, which V2 inputs cannot carry "
                "(use bool, integers or float16/32/64)"
            )
        if array.ndim == 0 or array.shape[0] < MIN_EXAMPLE_ROWS:
            raise InvalidInput(
                f"samples file {path.name}: {label} needs a batch axis (axis 0) of at least "
                f"{MIN_EXAMPLE_ROWS} rows, so that batches of 1 and of the whole file can be verified"
            )
        rows.add(array.shape[0])
    if len(rows) > 1:
        raise InvalidInput(
            f"samples file {path.name}: arrays have different row counts {sorted(rows)}; axis 0 is the batch"
        )
    return arrays


def _load_module(path: Path, entry: TorchCallable | None) -> Any:
    """The module in eval mode: torch.jit.load for TorchScript, else import and call the function."""
    import torch

    if entry is None:
        try:
            jit: Any = torch.jit  # untyped functions
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; files of it abound
                warnings.simplefilter("ignore", DeprecationWarning)
                module = jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise InvalidInput(f"{path.name} is not a loadable TorchScript file: {first_line(exc)}") from None
        return module.eval()
    code = _import(entry)
    factory = getattr(code, entry.function, None)
    if factory is None:
        raise InvalidInput(f"{entry.module} has no attribute {entry.function!r}")
    if isinstance(factory, torch.nn.Module):
        module = factory
    elif callable(factory):
        try:
            module = factory()
        except Exception as exc:
            raise InvalidInput(f"calling {entry.describe()}() failed: {first_line(exc)}") from None
    else:
        raise InvalidInput(f"{entry.describe()} is a {type(factory).__name__}, not a function")
    if not isinstance(module, torch.nn.Module):
        raise InvalidInput(f"{entry.describe()}() returned a {type(module).__name__}, not a torch.nn.Module")
    return module.eval()


def _import(entry: TorchCallable) -> Any:
    """Import the entry's module (the user opted in with --trust-code); errors become one line."""
    try:
        if not entry.is_file:
            with _search_path(Path.cwd()):
                return importlib.import_module(entry.module)
        name = _CODE_PREFIX + entry.stem
        spec = importlib.util.spec_from_file_location(name, entry.file)
        assert spec is not None and spec.loader is not None  # a .py file always has a source loader
        code = importlib.util.module_from_spec(spec)
        sys.modules[name] = code  # dataclasses and pickling look modules up by name
        try:
            with _search_path(entry.file.parent):  # so the file can import its neighbours
                spec.loader.exec_module(code)
        except BaseException:
            del sys.modules[name]
            raise
        return code
    except Exception as exc:
        raise InvalidInput(
            f"importing {entry.module} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None


@contextmanager
def _search_path(folder: Path) -> Iterator[None]:
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if added and str(folder) in sys.path:
            sys.path.remove(str(folder))


@dataclass(frozen=True, slots=True)
class _CallPlan:
    """How example arrays become a forward() call: by keyword (the usual) or by position (*args)."""

    names: list[str]
    by_keyword: bool

    def apply(self, module: Any, tensors: tuple[Any, ...]) -> Any:
        if self.by_keyword:
            return module(**dict(zip(self.names, tensors, strict=True)))
        return module(*tensors)

    @classmethod
    def bind(cls, module: Any, examples: dict[str, Array], samples: Path) -> _CallPlan:
        """Check the arrays cover forward()'s required parameters (a lone .npy array is renamed, in
        place, after the first one) and say how to pass them."""
        import torch

        if isinstance(module, torch.jit.ScriptModule):
            forward: Any = module.forward  # a ScriptMethod
            arguments = forward.schema.arguments[1:]  # [0] is self
            params = [a.name for a in arguments]
            required = [a.name for a in arguments if not a.has_default_value()]
            var_positional = var_keyword = False
        else:
            signature = inspect.signature(module.forward)
            kinds = {p.kind for p in signature.parameters.values()}
            var_positional = inspect.Parameter.VAR_POSITIONAL in kinds
            var_keyword = inspect.Parameter.VAR_KEYWORD in kinds
            named = [
                p
                for p in signature.parameters.values()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            ]
            params = [p.name for p in named]
            required = [p.name for p in named if p.default is inspect.Parameter.empty]
        if "" in examples:  # a single .npy array takes forward()'s first parameter's name
            name = params[0] if params else "input_0"
            examples[name] = examples.pop("")
            if len(required) > 1:
                raise InvalidInput(
                    f"forward({', '.join(params)}) needs {len(required)} inputs and {samples.name} holds one "
                    "array: give an .npz with an array per input, keyed by name"
                )
            return cls([name], by_keyword=bool(params))
        unknown = [name for name in examples if name not in params]
        if unknown and var_positional and not params:
            return cls(list(examples), by_keyword=False)
        if unknown and not var_keyword:
            raise InvalidInput(
                f"samples file {samples.name} has arrays {unknown} that forward({', '.join(params)}) "
                "does not take; key the arrays by forward()'s parameter names"
            )
        missing = [name for name in required if name not in examples]
        if missing:
            raise InvalidInput(f"samples file {samples.name} lacks arrays for forward()'s inputs {missing}")
        return cls(list(examples), by_keyword=True)


class _TorchReference:
    """The source module run eagerly, with its output flattened into named tensors."""

    def __init__(self, module: Any, call: _CallPlan) -> None:
        self.module = module
        self.call = call
        # Set by describe_outputs: the output's dict keys or positions (None: a bare tensor), and names.
        self._keys: list[Any] | None = None
        self._names: list[str] = []

    def tensors(self, arrays: Mapping[str, Array]) -> list[Any]:
        import torch

        return [torch.from_numpy(np.ascontiguousarray(arrays[name])) for name in self.call.names]

    def _forward(self, *tensors: Any) -> Any:
        return self.call.apply(self.module, tensors)

    def describe_outputs(self, examples: Mapping[str, Array]) -> list[TensorField]:
        """Run once, check every output is a batch-first dense tensor of a V2 dtype, and name them."""
        import torch

        rows = len(next(iter(examples.values())))
        with torch.no_grad():
            try:
                output = self._forward(*self.tensors(examples))
            except Exception as exc:
                raise InvalidInput(
                    f"forward() failed on the example inputs: {type(exc).__name__}: {first_line(exc)}"
                ) from None
        named = _named_outputs(output)
        fields = []
        for name, value in named:
            if name in examples:
                raise InvalidInput(f"output {name!r} has the name of an input; rename one of them")
            _check_output(name, value, rows)
            dtype = np.dtype(str(value.dtype).removeprefix("torch."))
            fields.append(TensorField(name=name, datatype=_V2_BY_NUMPY[dtype], shape=[-1, *value.shape[1:]]))
        self._keys = None if isinstance(output, torch.Tensor) else [key for key, _ in _output_items(output)]
        self._names = [name for name, _ in named]
        return fields

    def flatten(self, output: Any) -> tuple[Any, ...]:
        return (output,) if self._keys is None else tuple(output[key] for key in self._keys)

    def flat_module(self, example: tuple[Any, ...]) -> Any:
        """An nn.Module taking the inputs positionally and returning the outputs as a flat tuple."""
        import torch

        reference = self

        class FlatOutputs(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = reference.module  # registered, so export sees its parameters

            def forward(self, *tensors: Any) -> Any:
                # Through self.inner: the tracer only follows calls of registered submodules.
                return reference.flatten(reference.call.apply(self.inner, tensors))

        flat = FlatOutputs().eval()
        if isinstance(self.module, torch.jit.ScriptModule):
            # The ONNX exporter's tracer does not follow calls into a scripted submodule, but a
            # traced wrapper is a ScriptModule whose graph it exports directly.
            jit: Any = torch.jit  # untyped functions
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript deprecation; tracer notes (verified below)
                return jit.trace(flat, example, check_trace=False)
        return flat

    def run(self, arrays: Mapping[str, Array]) -> dict[str, Array]:
        """Torch's outputs for `arrays`, by V2 name."""
        import torch

        with torch.no_grad():
            values = self.flatten(self._forward(*self.tensors(arrays)))
        return {name: np.asarray(value.numpy()) for name, value in zip(self._names, values, strict=True)}


def _output_items(output: Any) -> list[tuple[Any, Any]]:
    """(key, value) pairs that index a structured output: dict keys, or tuple/list positions."""
    if isinstance(output, Mapping):
        return list(output.items())
    if isinstance(output, (tuple, list)):
        return list(enumerate(output))
    raise InvalidInput(
        f"forward() returned {_describe(output)}; V2 carries flat tensors: return a tensor, a tuple or a dict "
        "of tensors"
    )


def _named_outputs(output: Any) -> list[tuple[str, Any]]:
    """V2 names: dict keys, namedtuple fields, else output_0, output_1, ..."""
    import torch

    if isinstance(output, torch.Tensor):
        return [("output_0", output)]
    if isinstance(output, Mapping):
        bad = [key for key in output if not isinstance(key, str) or not key]
        if bad:
            raise InvalidInput(f"forward() returned a dict with keys {bad!r}; output names must be strings")
        return list(output.items())
    fields = getattr(output, "_fields", None)
    if isinstance(output, tuple) and fields is not None:
        return list(zip(fields, output, strict=True))
    return [(f"output_{i}", value) for i, value in _output_items(output)]


def _check_output(name: str, value: Any, rows: int) -> None:
    """Refuse what V2 cannot carry, naming the output and saying what to return instead."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise InvalidInput(
            f"output {name!r} is {_describe(value)}; V2 carries flat tensors: return a tuple or dict of tensors"
        )
    if value.layout != torch.strided:
        raise InvalidInput(
            f"output {name!r} is a sparse tensor ({value.layout}); V2 carries dense tensors: return it .to_dense()"
        )
    if value.is_complex():
        raise InvalidInput(
            f"output {name!r} is {value.dtype}, V2 has no complex datatype: return torch.view_as_real({name}) "
            "(real and imaginary parts on a last axis of 2)"
        )
    dtype_name = str(value.dtype).removeprefix("torch.")
    if dtype_name not in {str(d) for d in _V2_BY_NUMPY}:
        raise InvalidInput(
            f"output {name!r} is {value.dtype}, which V2 has no datatype for: return it as float32 (.float())"
        )
    if value.ndim == 0:
        raise InvalidInput(
            f"output {name!r} is a scalar; every output needs the batch as its first axis (one value per row)"
        )
    if value.shape[0] != rows:
        raise InvalidInput(
            f"output {name!r} has {value.shape[0]} rows for a batch of {rows}; every output needs the batch "
            "as its first axis"
        )


def _describe(value: Any) -> str:
    """'a list of lists', 'a tuple of tensors', 'None', 'a str' ... for error messages."""
    import torch

    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return "a tensor"
    if isinstance(value, (list, tuple, dict)):
        items = list(value.values()) if isinstance(value, dict) else list(value)
        if not items:
            return f"an empty {type(value).__name__}"
        kinds = sorted({"tensors" if isinstance(v, torch.Tensor) else f"{type(v).__name__}s" for v in items})
        return f"a {type(value).__name__} of {' and '.join(kinds)}"
    return f"a {type(value).__name__}"


def _task(options: BuildOptions, outputs: list[TensorField]) -> str:
    """generic, unless --task asks for one the outputs fit (regression: all float; classification: a label)."""
    if options.task == "regression":
        if not all(field.datatype in _FLOATS for field in outputs):
            raise InvalidInput("--task regression: every output of the module must be floating point")
        return "regression"
    if options.task == "classification":
        if not any(f.name == "label" and f.datatype not in _FLOATS and f.shape == [-1] for f in outputs):
            raise InvalidInput(
                "--task classification: the module needs an integer output 'label' of shape [batch] "
                "(e.g. return {'label': scores.argmax(1), 'probabilities': scores.softmax(1)})"
            )
        return "classification"
    return "generic"  # any other --task is refused by the pipeline, naming what was found


def _checked_graph_opset(onnx_path: Path, input_names: list[str], output_names: list[str]) -> int:
    """The graph's ONNX opset, once its tensors are the ones asked for: the exporter drops unused
    inputs and may merge outputs that are the same tensor, and both are refused."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    got_inputs = [v.name for v in graph.input if v.name not in initializers]
    got_outputs = [v.name for v in graph.output]
    if got_inputs != input_names:
        unused = [name for name in input_names if name not in got_inputs]
        raise InvalidInput(
            f"the exported graph takes inputs {got_inputs}, not {input_names} (unused by forward(): {unused}); "
            "leave unused arrays out of the samples file"
        )
    if got_outputs != output_names:
        raise InvalidInput(
            f"the exported graph has outputs {got_outputs}, not {output_names}; return each output as its "
            "own tensor (not the same tensor twice, nor an input)"
        )
    return next(int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx"))


def verify_against_torch(
    session: Any,
    reference: _TorchReference,
    examples: dict[str, Array],
    outputs: list[TensorField],
    tolerance: float,
) -> list[Verification]:
    """Each output vs torch, on the whole file as one batch and on its first rows one by one.

    Float outputs: max |artifact − torch| ≤ tolerance × max(1, max |torch|) (the scikit-learn
    regressor's rule); other dtypes must be identical. The worse batching is recorded, both in details.
    """
    rows = len(next(iter(examples.values())))
    batchings = {
        "whole_file": [examples],
        "batch_1": [{k: v[i : i + 1] for k, v in examples.items()} for i in range(min(rows, BATCH_1_ROWS))],
    }
    checks = []
    per_batching = {name: _run_both(session, reference, feeds) for name, feeds in batchings.items()}
    for field in outputs:
        results = {}
        for batching, (want, have) in per_batching.items():
            expected, got = want[field.name], have[field.name]
            label = f"[{field.name}]"
            if field.datatype in _FLOATS:
                scale = max(1.0, float(np.max(np.abs(expected.astype(np.float64)))))
                results[batching] = max_abs_diff_check(
                    expected, got, tolerance * scale, f"max_abs_diff{label}"
                )
            else:
                results[batching] = agreement_check(expected, got, label)
        if field.datatype in _FLOATS:
            worst = max(results.values(), key=lambda check: check.value / check.threshold)
        else:
            worst = min(results.values(), key=lambda check: check.value)
        details = dict(worst.details)
        details.update({f"{worst.metric.split('[')[0]}_{b}": c.value for b, c in results.items()})
        details["max_relative_diff"] = tolerance
        checks.append(worst.model_copy(update={"details": details}))
    return checks


def _run_both(
    session: Any, reference: _TorchReference, feeds: list[dict[str, Array]]
) -> tuple[dict[str, Array], dict[str, Array]]:
    """Torch and the artifact on each feed, outputs concatenated over the feeds."""
    want = [reference.run(feed) for feed in feeds]
    have = [run_session(session, feed) for feed in feeds]
    names = list(want[0])
    return (
        {n: np.concatenate([w[n] for w in want]) for n in names},
        {n: np.concatenate([h[n] for h in have]) for n in names},
    )
