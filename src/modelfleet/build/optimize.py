"""`modelfleet build --optimize`: ONNX Runtime's transformer optimizer on an fp32 encoder, at build time.

`onnxruntime.transformers.optimizer` rewrites a BERT-style encoder graph into ONNX Runtime's fused
contrib operators: one Attention node per layer (QKV projection, scaled scores, mask, softmax and the
context product), EmbedLayerNormalization, SkipLayerNormalization and BiasGelu. The result is still an
fp32 ONNX file that any ONNX Runtime (CPU or CUDA) loads; nothing of the optimizer runs at serve time.

Measured on the bundled all-MiniLM-L6-v2 (onnxruntime 1.32): the graph the torch exporter writes with
PyTorch's scaled-dot-product attention (IsNaN/Where masking) gets its layer norms and gelus fused but
no Attention; the same weights exported with transformers' "eager" attention (the same arithmetic,
written out as MatMul/Softmax) fuse completely (6 Attention, 1 EmbedLayerNormalization, 12
SkipLayerNormalization, 6 BiasGelu). So an optimized build exports with eager attention
(`wants_eager_attention`), and a graph in which the optimizer fused no Attention at all is refused
rather than shipped as "optimized". The build's verification (min cosine against the source framework)
runs on the optimized graph as on any other.

Speed, measured on the 2-core Xeon VM this was written on (one intra-op thread, graphs alternated run by
run, load average ~10 and ~3): the fused MiniLM cost 1.19-1.30x the plain graph's CPU per run at batch 32
and 1.02-1.68x at batch 1, because
ONNX Runtime's own load-time fusions already cover the CPU and its fused Attention kernel is the slower
part. So the option is off by default and its figures sit beside the plain graph's in
benchmarks/serve_throughput.py; on CUDA it is unmeasured here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelfleet.build.hf_detect import detect_hf_task
from modelfleet.build.messages import first_line
from modelfleet.build.options import BuildOptions
from modelfleet.errors import InvalidInput

TOOL = "onnxruntime.transformers.optimizer"
# Hugging Face `model_type` → the optimizer's model type. ONNX Runtime documents its "bert" fusions
# for these encoder families; all-MiniLM-L6-v2 (bert) is the one measured here. The build verifies
# every artifact against its source, so a family whose graph fuses differently still cannot ship wrong.
SUPPORTED_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "distilbert": "bert",
    "albert": "bert",
    "electra": "bert",
}
# What an optimized build may be: the optimizer's fused kernels are written for these.
_OPTIMIZABLE_TASKS = ("text-embedding",)
_OPTIMIZABLE_TARGETS = ("cpu", "cuda")
# 0: the optimizer's own (Python) fusions only. Higher levels also save ONNX Runtime's C++ graph
# optimizations into the file, which the server applies itself when it loads the graph.
_OPT_LEVEL = 0


@dataclass(frozen=True, slots=True)
class EncoderShape:
    """What the optimizer needs from the source's config.json (its own detection failed on MiniLM)."""

    model_type: str
    optimizer_model_type: str
    num_heads: int
    hidden_size: int


@dataclass(frozen=True, slots=True)
class OptimizationReport:
    """What `--optimize` did, recorded in the manifest's extra["optimization"]."""

    tool: str
    tool_version: str
    model_type: str
    optimizer_model_type: str
    opt_level: int
    num_heads: int
    hidden_size: int
    attention_export: str
    fused_operators: dict[str, int]
    nodes_before: int
    nodes_after: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_optimizable(source_kind: str, source_path: Path, options: BuildOptions) -> EncoderShape | None:
    """None without `--optimize`; else the encoder's shape, or InvalidInput saying why it cannot be.

    Runs before the export so an unsupported request fails in milliseconds, not after a minute of it.
    """
    if not options.optimize:
        return None
    if options.precision != "fp32":
        raise InvalidInput(
            "--optimize builds an optimized fp32 graph; it cannot be combined with "
            f"--precision {options.precision} (build with one or the other)"
        )
    if options.target not in _OPTIMIZABLE_TARGETS:
        raise InvalidInput(
            f"--optimize supports targets {', '.join(_OPTIMIZABLE_TARGETS)}, not {options.target} "
            "(TensorRT fuses the graph itself when it builds its engine)"
        )
    config_file = source_path / "config.json"
    if source_kind != "huggingface" or not config_file.is_file():
        raise InvalidInput(
            f"--optimize works on Hugging Face transformer encoders; this source is {source_kind}, "
            "whose graph the transformer optimizer cannot fuse: build it without --optimize"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--optimize: cannot read {config_file.name}: {first_line(exc)}") from None
    model_type = str(config.get("model_type", ""))
    optimizer_type = SUPPORTED_MODEL_TYPES.get(model_type)
    if optimizer_type is None:
        raise InvalidInput(
            f"--optimize does not support model type {model_type or '(none in config.json)'!r}; it "
            f"supports {', '.join(sorted(SUPPORTED_MODEL_TYPES))}: build it without --optimize"
        )
    heads = config.get("num_attention_heads", config.get("n_heads"))
    hidden = config.get("hidden_size", config.get("dim"))
    if not isinstance(heads, int) or not isinstance(hidden, int) or heads < 1 or hidden % heads:
        raise InvalidInput(
            f"--optimize: config.json gives no usable num_attention_heads ({heads!r}) and hidden_size "
            f"({hidden!r}); build it without --optimize"
        )
    task = detect_hf_task(source_path, options.task).task
    if task not in _OPTIMIZABLE_TASKS:
        raise InvalidInput(
            f"--optimize supports {', '.join(_OPTIMIZABLE_TASKS)} builds; this source builds as {task}: "
            "build it without --optimize (or with --task text-embedding for its encoder alone)"
        )
    return EncoderShape(model_type, optimizer_type, heads, hidden)


def wants_eager_attention(options: BuildOptions) -> bool:
    """Whether the exporter should write attention as plain ops (the pattern the optimizer fuses)."""
    return options.optimize


def optimize_encoder(source: Path, output: Path, shape: EncoderShape, use_gpu: bool) -> OptimizationReport:
    """Write the optimized graph of `source` to `output`; InvalidInput if nothing could be fused."""
    import onnx
    import onnxruntime
    from onnxruntime.transformers import optimizer

    nodes_before = len(onnx.load(str(source), load_external_data=False).graph.node)
    try:
        with _quiet_optimizer():
            optimized = optimizer.optimize_model(
                str(source),
                model_type=shape.optimizer_model_type,
                num_heads=shape.num_heads,
                hidden_size=shape.hidden_size,
                opt_level=_OPT_LEVEL,
                use_gpu=use_gpu,
            )
    except Exception as exc:
        raise InvalidInput(
            f"--optimize: the transformer optimizer failed: {first_line(exc)}; build without --optimize"
        ) from None
    fused = {name: int(count) for name, count in optimized.get_fused_operator_statistics().items() if count}
    if not fused.get("Attention") and not fused.get("MultiHeadAttention"):
        raise InvalidInput(
            f"--optimize: the transformer optimizer fused no attention in this {shape.model_type} graph "
            f"(it fused {fused or 'nothing'}), so the artifact would not be the optimized one asked for; "
            "build it without --optimize"
        )
    optimized.save_model_to_file(str(output))
    return OptimizationReport(
        tool=TOOL,
        tool_version=onnxruntime.__version__,
        model_type=shape.model_type,
        optimizer_model_type=shape.optimizer_model_type,
        opt_level=_OPT_LEVEL,
        num_heads=shape.num_heads,
        hidden_size=shape.hidden_size,
        attention_export="eager",
        fused_operators=fused,
        nodes_before=nodes_before,
        nodes_after=len(optimized.model.graph.node),
    )


@contextlib.contextmanager
def _quiet_optimizer() -> Iterator[None]:
    """The optimizer logs each fusion and prints advice; keep the CLI's output for our own progress."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(previous)
