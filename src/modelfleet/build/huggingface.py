"""Hugging Face transformer folder → text-embedding ONNX graph with pooling and normalisation inside.

The graph takes `input_ids` and `attention_mask` (int64, [batch, sequence]) and returns `embedding`
([batch, hidden]): the attention-mask-weighted mean (or CLS token) of the last hidden state, L2
normalised, so a server only tokenizes and runs one graph. Nothing is ever fetched from the Hub.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelfleet.build.exported import Array, ExportedModel
from modelfleet.build.hf_detect import HfDetection, detect_hf_task
from modelfleet.build.messages import first_line
from modelfleet.build.optimize import wants_eager_attention
from modelfleet.build.options import BuildOptions
from modelfleet.build.samples import CALIBRATION_SENTENCES, VERIFICATION_SENTENCES
from modelfleet.build.torch_export import ONNX_OPSET
from modelfleet.build.verify import cosine_check, run_session
from modelfleet.errors import InvalidInput
from modelfleet.manifest import Postprocessing, TensorField, Tokenization, Verification
from modelfleet.types import Datatype, Progress

TOKENIZER_FILE = "tokenizer.json"
_SUPPORTED_ST_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}
_DEFAULT_MAX_LENGTH_TOKENS = 512
# Sentences are embedded in length-sorted batches of this size on both sides: padding (and time)
# stays small while every batch still mixes lengths, which exercises the attention mask.
VERIFICATION_BATCH = 8
_MIXED_ORDER_SEED = 7


@dataclass(frozen=True, slots=True)
class TextModelSettings:
    """What the folder's sentence-transformers / tokenizer configs say about pre- and post-processing."""

    pooling: Literal["mean", "cls"]
    max_length_tokens: int
    is_sentence_transformers: bool


def read_text_settings(folder: Path) -> TextModelSettings:
    """Pooling and maximum length from the folder's JSON configs (no model loading)."""
    modules = _read_json(folder / "modules.json")
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int | None = None
    is_st = isinstance(modules, list)
    if is_st:
        kinds = {str(m.get("type")) for m in modules if isinstance(m, dict)}
        unsupported = sorted(kinds - _SUPPORTED_ST_MODULES)
        if unsupported:
            raise InvalidInput(
                f"{folder.name}: sentence-transformers modules {unsupported} are not supported "
                "(supported: Transformer, Pooling (mean or cls), Normalize)"
            )
        for module in modules:
            if isinstance(module, dict) and module.get("type") == "sentence_transformers.models.Pooling":
                pooling = _pooling_mode(folder / str(module.get("path", "")) / "config.json")
        st_config = _read_json(folder / "sentence_bert_config.json")
        if isinstance(st_config, dict) and isinstance(st_config.get("max_seq_length"), int):
            max_length = st_config["max_seq_length"]
    config = _read_json(folder / "config.json")
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if max_length is None:
        tokenizer_config = _read_json(folder / "tokenizer_config.json")
        declared = tokenizer_config.get("model_max_length") if isinstance(tokenizer_config, dict) else None
        # Tokenizers without a limit declare a huge sentinel (1e30); ignore it.
        max_length = (
            declared if isinstance(declared, int) and declared < 1_000_000 else _DEFAULT_MAX_LENGTH_TOKENS
        )
    if isinstance(positions, int) and positions > 0:
        max_length = min(max_length, positions)
    return TextModelSettings(pooling, max_length, is_st)


def export_huggingface(
    folder: Path, work_dir: Path, options: BuildOptions, report: Progress
) -> ExportedModel:
    """Export `folder` to `work_dir/model.onnx` and prepare verification against sentence-transformers/torch.

    The folder's task (embedder or a head, see `hf_detect`) picks the exporter; each head's lives in
    its own module and is imported only when used.
    """
    # huggingface_hub reads these when first imported: never reach the network during a build.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    detection = detect_hf_task(folder, options.task)
    # Head exporters plug in here, one branch per task in HEAD_SUFFIXES.
    if detection.task == "question-answering":
        from modelfleet.build.hf_question_answering import export_question_answering

        return export_question_answering(folder, work_dir, options, report, detection)
    if detection.task == "text-classification":
        from modelfleet.build.hf_classification import export_sequence_classification

        return export_sequence_classification(folder, work_dir, options, report, detection)
    if detection.task == "token-classification":
        from modelfleet.build.hf_token_classification import export_token_classification

        return export_token_classification(folder, work_dir, options, report, detection)
    return _export_embedder(folder, work_dir, options, report, detection)


def _export_embedder(
    folder: Path, work_dir: Path, options: BuildOptions, report: Progress, detection: HfDetection
) -> ExportedModel:
    settings = read_text_settings(folder)
    report("loading source")
    reference_model = _ReferenceModel.load(folder, settings, eager_attention=wants_eager_attention(options))
    tokenizer_path = write_tokenizer(folder, work_dir / TOKENIZER_FILE, settings.max_length_tokens)
    graph_inputs = reference_model.graph_inputs()
    report("exporting")
    onnx_path = work_dir / "model.onnx"
    sample_feed = _tokenize(tokenizer_path, ["a first sentence", "and a second, longer one"], graph_inputs)
    exporter = reference_model.export(onnx_path, sample_feed)
    hidden = reference_model.hidden_size
    sentences = load_sentences(options.samples) if options.samples else list(VERIFICATION_SENTENCES)
    threshold = options.cosine_threshold()

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        expected = reference_model.embed(sentences)
        tokenizer = artifact_dir / TOKENIZER_FILE
        checks = {
            batching: cosine_check(
                expected, embed_with_artifact(session, tokenizer, sentences, graph_inputs, order), threshold
            )
            for batching, order in verification_orders(tokenizer, sentences).items()
        }
        worst = min(checks.values(), key=lambda check: check.value)
        details = dict(worst.details)
        details.update({f"min_cosine_{batching}": check.value for batching, check in checks.items()})
        return [worst.model_copy(update={"details": details})]

    return ExportedModel(
        onnx_path=onnx_path,
        task="text-embedding",
        inputs=[TensorField(name="text", datatype=Datatype.BYTES, shape=[-1])],
        outputs=[TensorField(name="embedding", datatype=Datatype.FP32, shape=[-1, hidden])],
        verify=verify,
        calibration_feeds=calibration_feeds(tokenizer_path, graph_inputs),
        preprocessing=Tokenization(
            tokenizer_file=TOKENIZER_FILE,
            max_length_tokens=settings.max_length_tokens,
            graph_inputs=graph_inputs,
        ),
        postprocessing=Postprocessing(pooling=settings.pooling, normalize=True),
        side_files={TOKENIZER_FILE: tokenizer_path},
        libraries=("torch", "transformers", "sentence-transformers", "tokenizers", "onnx"),
        extra={
            "exporter": exporter,
            "onnx_opset": ONNX_OPSET,
            "reference": "sentence-transformers" if settings.is_sentence_transformers else "transformers",
            "verification_samples": "custom" if options.samples else "built-in sentences",
        },
        detected=detection.describe(),
    )


def write_tokenizer(folder: Path, destination: Path, max_length_tokens: int) -> Path:
    """The folder's fast tokenizer as one `tokenizer.json`, truncating at `max_length_tokens`.

    Padding is set to "longest in batch" (the source files often pad every text to a fixed 128).
    """
    from tokenizers import Tokenizer

    source = folder / TOKENIZER_FILE
    try:
        if source.is_file():
            tokenizer = Tokenizer.from_file(str(source))
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, use_fast=True
            ).backend_tokenizer
    except Exception as exc:
        raise InvalidInput(f"{folder.name}: cannot load a fast tokenizer: {first_line(exc)}") from None
    padding = tokenizer.padding or {}
    pad_token = str(padding.get("pad_token", "[PAD]"))
    pad_id = int(padding.get("pad_id", tokenizer.token_to_id(pad_token) or 0))
    tokenizer.enable_truncation(max_length=max_length_tokens)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    tokenizer.save(str(destination))
    return destination


def load_sentences(path: Path) -> list[str]:
    """Verification sentences from a .txt (one per line) or .json (list of strings) file."""
    if not path.is_file():
        raise InvalidInput(f"samples file {path} does not exist")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
                raise InvalidInput(f"samples file {path} must hold a JSON list of strings")
            sentences = list(data)
        else:
            sentences = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"samples file {path} is not readable text: {first_line(exc)}") from None
    if not sentences:
        raise InvalidInput(f"samples file {path} holds no sentences")
    return sentences


class _ReferenceModel:
    """The source model in torch: what gets exported and what the artifact is compared with."""

    def __init__(self, encoder: Any, sentence_model: Any, settings: TextModelSettings, folder: Path) -> None:
        self.encoder = encoder
        self.sentence_model = sentence_model
        self.settings = settings
        self.folder = folder
        self.hidden_size = int(encoder.config.hidden_size)

    @classmethod
    def load(
        cls, folder: Path, settings: TextModelSettings, eager_attention: bool = False
    ) -> _ReferenceModel:
        """`eager_attention`: attention as plain MatMul/Softmax ops, the pattern the transformer optimizer
        fuses (build/optimize.py); the same arithmetic as the default fused kernel."""
        import transformers

        hf_logging: Any = transformers.logging  # untyped module functions
        hf_logging.set_verbosity_error()  # load reports and "Loading weights" bars are noise here
        hf_logging.disable_progress_bar()
        encoder: Any
        try:
            if settings.is_sentence_transformers:
                from sentence_transformers import SentenceTransformer

                sentence_model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
                sentence_model.max_seq_length = settings.max_length_tokens
                encoder = sentence_model[0].auto_model
            else:
                sentence_model = None
                encoder = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        except InvalidInput:
            raise
        except Exception as exc:  # corrupt weights, unknown architecture, missing files
            raise InvalidInput(f"cannot load the model in {folder}: {first_line(exc)}") from None
        encoder.eval()
        if eager_attention:
            encoder.set_attn_implementation("eager")
        return cls(encoder, sentence_model, settings, folder)

    def graph_inputs(self) -> list[str]:
        parameters = inspect.signature(self.encoder.forward).parameters
        if "attention_mask" not in parameters:
            raise InvalidInput(
                f"{self.folder.name}: the encoder takes no attention_mask; cannot pool over padding"
            )
        names = ["input_ids", "attention_mask"]
        token_types = parameters.get("token_type_ids")
        # Single-segment text has all-zero token types; pass them only if the model insists.
        if token_types is not None and token_types.default is inspect.Parameter.empty:
            names.append("token_type_ids")
        return names

    def export(self, destination: Path, sample_feed: dict[str, Array]) -> str:
        """Write the wrapped encoder as ONNX; returns which exporter produced it."""
        wrapper = _make_embedding_module(self.encoder, self.settings.pooling)
        return export_onnx_module(
            wrapper,
            sample_feed,
            self.graph_inputs(),
            {"embedding": {0: "batch"}},
            destination,
            self.folder.name,
            lambda model: _name_output_dims(model, self.hidden_size),
        )

    def embed(self, sentences: list[str]) -> Array:
        """Reference embeddings from the source framework (sentence-transformers, else transformers + pooling)."""
        import torch

        if self.sentence_model is not None:
            return np.asarray(
                self.sentence_model.encode(
                    sentences,
                    batch_size=VERIFICATION_BATCH,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ),
                dtype=np.float32,
            )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        wrapper = _make_embedding_module(self.encoder, self.settings.pooling)
        encoded = tokenizer(
            sentences,
            padding=True,
            truncation=True,
            max_length=self.settings.max_length_tokens,
            return_tensors="pt",
        )
        with torch.no_grad():
            args = [encoded[name] for name in self.graph_inputs()]
            return np.asarray(wrapper(*args).numpy(), dtype=np.float32)


def _make_embedding_module(encoder: Any, pooling: str) -> Any:
    """A torch module: encoder → pooled (mean over real tokens, or CLS) → L2-normalised embedding."""
    import torch

    class EmbeddingModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.encoder(**kwargs).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return EmbeddingModule().eval()


def export_onnx_module(
    module: Any,
    sample_feed: dict[str, Array],
    input_names: list[str],
    output_axes: dict[str, dict[int, str]],
    destination: Path,
    what: str,
    finish: Callable[[Any], None] | None = None,
) -> str:
    """Export a torch module taking `input_names` ([batch, sequence] int64) to checked ONNX.

    `output_axes` names the outputs, in order, with their dynamic axes; `finish` may edit the
    loaded graph before it is saved. Returns which exporter produced it.
    """
    import onnx
    import torch

    from modelfleet.build.torch_export import export_with_fallback

    args = tuple(torch.from_numpy(sample_feed[name]) for name in input_names)
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes.update(output_axes)
    exporter, errors = export_with_fallback(
        module, args, destination, input_names, list(output_axes), dynamic_axes
    )
    if not exporter:
        raise InvalidInput(f"cannot export {what} to ONNX ({'; '.join(errors)})")
    if finish is not None:
        model = onnx.load(str(destination))
        finish(model)
        onnx.save(model, str(destination))
    return exporter


def _name_output_dims(model: Any, hidden_size: int) -> None:
    """The exporter leaves the output's dims symbolic; record [batch, hidden] for readers of the graph."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2:
        dims[0].dim_param = "batch"
        dims[1].dim_value = hidden_size


def verification_orders(tokenizer_path: Path, sentences: list[str]) -> dict[str, list[int]]:
    """Two ways to batch the sentences, as served batches vary: by length (little padding) and mixed.

    Dynamic int8 quantization scales activations per run, so a text's embedding depends a little on
    what shares its batch; verification takes the worse of the two.
    """
    from tokenizers import Tokenizer

    lengths = [len(e.ids) for e in Tokenizer.from_file(str(tokenizer_path)).encode_batch(sentences)]
    by_length = sorted(range(len(sentences)), key=lengths.__getitem__)
    mixed = [int(i) for i in np.random.default_rng(_MIXED_ORDER_SEED).permutation(len(sentences))]
    return {"length_sorted_batches": by_length, "mixed_batches": mixed}


def embed_with_artifact(
    session: Any, tokenizer_path: Path, sentences: list[str], graph_inputs: list[str], order: list[int]
) -> Array:
    """Embed as a server does (artifact tokenizer, padded batches), batching in the given order."""
    result: Array | None = None
    for start in range(0, len(order), VERIFICATION_BATCH):
        chunk = order[start : start + VERIFICATION_BATCH]
        feed = _tokenize(tokenizer_path, [sentences[i] for i in chunk], graph_inputs)
        embedding = run_session(session, feed)["embedding"]
        if result is None:
            result = np.zeros((len(sentences), embedding.shape[1]), dtype=np.float32)
        result[chunk] = embedding
    if result is None:
        raise InvalidInput("no verification sentences")
    return result


def calibration_feeds(tokenizer_path: Path, graph_inputs: list[str]) -> list[dict[str, Array]]:
    """The calibration sentences as one batch, one by one, and in length-sorted batches of 4."""
    sentences = list(CALIBRATION_SENTENCES)
    order = verification_orders(tokenizer_path, sentences)["length_sorted_batches"]
    feeds = [_tokenize(tokenizer_path, sentences, graph_inputs)]
    feeds.extend(_tokenize(tokenizer_path, [s], graph_inputs) for s in sentences)
    feeds.extend(
        _tokenize(tokenizer_path, [sentences[i] for i in order[start : start + 4]], graph_inputs)
        for start in range(0, len(order), 4)
    )
    return feeds


def _tokenize(tokenizer_path: Path, sentences: list[str], names: list[str] | None = None) -> dict[str, Array]:
    """Tokenize as the server does: the artifact's tokenizer.json, padded to the longest text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    encodings = tokenizer.encode_batch(sentences)
    feed = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    return {name: feed[name] for name in (names or ["input_ids", "attention_mask"])}


def _pooling_mode(config_path: Path) -> Literal["mean", "cls"]:
    config = _read_json(config_path)
    if not isinstance(config, dict):
        return "mean"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode") and v)
    raise InvalidInput(f"pooling {modes} is not supported (supported: mean tokens, cls token)")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid JSON: {first_line(exc)}") from None
