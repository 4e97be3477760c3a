"""Hugging Face `*ForSequenceClassification` folder → logits graph served as label + probabilities.

The graph takes `input_ids`, `attention_mask` (and `token_type_ids` when the model has segment
embeddings, so a text pair's second text is told apart) and returns `logits` [batch, n_labels]. The
server tokenizes `text` (and optional `text_pair`), runs the graph in length groups and applies
softmax (sigmoid for problem_type multi_label_classification) — `runtime/classification.py`.

Verification compares what is served (the artifact's tokenizer, its graph and the server's own
post-processing class) with the transformers model's softmax on the built-in sentences, alone and as
pairs: the labels must agree on every sample and no probability may differ by more than 1e-4.
The helpers here (loading a head, its labels, exporting a logits graph) serve the token
classification exporter too.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.exported import Array, ExportedModel, Verifier
from modelfleet.build.hf_detect import HfDetection
from modelfleet.build.huggingface import (
    TOKENIZER_FILE,
    VERIFICATION_BATCH,
    export_onnx_module,
    load_sentences,
    read_text_settings,
    write_tokenizer,
)
from modelfleet.build.messages import first_line
from modelfleet.build.options import MAX_PROBABILITY_DIFF, BuildOptions
from modelfleet.build.samples import VERIFICATION_SENTENCES
from modelfleet.build.torch_export import ONNX_OPSET
from modelfleet.build.verify import agreement_check, max_abs_diff_check, run_session
from modelfleet.errors import InvalidInput
from modelfleet.manifest import Postprocessing, TensorField, Tokenization, Verification
from modelfleet.runtime.classification import PAIR_INPUT, TextClassification, sigmoid, softmax
from modelfleet.runtime.text import TextEncoder
from modelfleet.types import Datatype, Progress

LIBRARIES = ("torch", "transformers", "tokenizers", "onnx")


@dataclass(frozen=True, slots=True)
class HeadLabels:
    """Class names by logit index, and whether they are numbers because config.json names none."""

    names: list[str]
    numeric: bool

    def warning(self) -> str:
        last = len(self.names) - 1
        return (
            f"config.json has no id2label (transformers calls the classes LABEL_0..LABEL_{last}): "
            f'the labels served are the class numbers "0".."{last}"; set id2label in config.json to '
            "serve names"
        )


def load_head(folder: Path, task: str) -> Any:
    """The folder's head model in torch (eval mode); local files only (export_huggingface has set
    HF_HUB_OFFLINE before transformers is imported)."""
    import transformers

    hf_logging: Any = transformers.logging  # untyped module functions
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    loader: Any = (
        transformers.AutoModelForSequenceClassification
        if task == "text-classification"
        else transformers.AutoModelForTokenClassification
    )
    try:
        model = loader.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # corrupt weights, unknown architecture, missing files
        raise InvalidInput(f"cannot load the model in {folder}: {first_line(exc)}") from None
    return model.eval()


def head_labels(model: Any) -> HeadLabels:
    """config.id2label in index order; numbers when it is transformers' default LABEL_i."""
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    count = int(model.config.num_labels)
    if sorted(id2label) != list(range(count)):
        raise InvalidInput(f"config.json id2label must name classes 0..{count - 1}, got {sorted(id2label)}")
    names = [id2label[i] for i in range(count)]
    if names == [f"LABEL_{i}" for i in range(count)]:
        return HeadLabels([str(i) for i in range(count)], numeric=True)
    return HeadLabels(names, numeric=False)


def head_graph_inputs(model: Any, pairs: bool) -> list[str]:
    """input_ids, attention_mask, and token_type_ids when the model takes them and pairs need them
    (segment embeddings: type_vocab_size > 1) or the model insists on them."""
    parameters = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    token_types = parameters.get("token_type_ids")
    if token_types is not None:
        segments = int(getattr(model.config, "type_vocab_size", 1) or 1) > 1
        if (pairs and segments) or token_types.default is inspect.Parameter.empty:
            names.append("token_type_ids")
    return names


def export_logits(
    model: Any, destination: Path, names: list[str], sample: dict[str, Array], task: str
) -> str:
    """Write the head's logits as ONNX (dynamic batch and sequence); returns the exporter used."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(names, tensors, strict=True))).logits

    per_token = task == "token-classification"  # logits [batch, sequence, labels], else [batch, labels]
    axes = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    return export_onnx_module(
        Logits().eval(), sample, names, {"logits": axes}, destination, f"the {task} head"
    )


def sample_feed(tokenizer_path: Path, max_length_tokens: int, names: list[str]) -> dict[str, Array]:
    """A small padded pair batch to trace the export with (pairs so token types vary)."""
    encoder = TextEncoder(tokenizer_path, max_length_tokens, names)
    texts = np.array(["a first sentence", "and a second, longer one"], dtype=object)
    [(_, feed)] = encoder.group_encodings(encoder.tokenize(texts, texts[::-1].copy()))
    return feed


def refuse_int8(options: BuildOptions, task: str) -> None:
    if options.precision != "fp32":
        raise InvalidInput(
            f"--precision {options.precision}: {task} artifacts are built fp32 only (their "
            f"probabilities are verified to within {MAX_PROBABILITY_DIFF}); leave --precision out"
        )


@dataclass(frozen=True, slots=True)
class ExportedHead:
    """A head loaded from its folder and exported: what each head's exporter goes on from."""

    model: Any
    labels: HeadLabels
    max_length: int
    names: list[str]
    tokenizer_path: Path
    onnx_path: Path
    exporter: str
    options: BuildOptions
    detection: HfDetection

    def exported(
        self,
        *,
        inputs: list[TensorField],
        outputs: list[TensorField],
        verify: Verifier,
        text_inputs: list[str],
        postprocessing: Postprocessing,
        reference: str,
    ) -> ExportedModel:
        """The exporter's result: what differs by head is given, the rest is the same for both."""
        numeric = self.labels.numeric
        return ExportedModel(
            onnx_path=self.onnx_path,
            task=self.detection.task,
            inputs=inputs,
            outputs=outputs,
            verify=verify,
            calibration_feeds=[],
            preprocessing=Tokenization(
                tokenizer_file=TOKENIZER_FILE,
                max_length_tokens=self.max_length,
                graph_inputs=self.names,
                text_inputs=text_inputs,
            ),
            postprocessing=postprocessing,
            side_files={TOKENIZER_FILE: self.tokenizer_path},
            libraries=LIBRARIES,
            extra={
                "exporter": self.exporter,
                "onnx_opset": ONNX_OPSET,
                "reference": reference,
                "verification_samples": "custom" if self.options.samples else "built-in sentences",
                "labels_source": "class numbers (no id2label)" if numeric else "config.json id2label",
            },
            detected=self.detection.describe(),
            warnings=[self.labels.warning()] if numeric else [],
        )


def export_head(
    folder: Path, work_dir: Path, options: BuildOptions, report: Progress, detection: HfDetection, pairs: bool
) -> ExportedHead:
    """Load a classification head (fp32 only), write its tokenizer and export its logits graph."""
    refuse_int8(options, detection.task)
    max_length = read_text_settings(folder).max_length_tokens
    report("loading source")
    model = load_head(folder, detection.task)
    labels = head_labels(model)
    tokenizer_path = write_tokenizer(folder, work_dir / TOKENIZER_FILE, max_length)
    names = head_graph_inputs(model, pairs=pairs)
    report("exporting")
    onnx_path = work_dir / "model.onnx"
    exporter = export_logits(
        model, onnx_path, names, sample_feed(tokenizer_path, max_length, names), detection.task
    )
    return ExportedHead(
        model, labels, max_length, names, tokenizer_path, onnx_path, exporter, options, detection
    )


def export_sequence_classification(
    folder: Path, work_dir: Path, options: BuildOptions, report: Progress, detection: HfDetection
) -> ExportedModel:
    """Export the folder's sequence classification head; see the module docstring."""
    head = export_head(folder, work_dir, options, report, detection, pairs=True)
    model, labels, max_length = head.model, head.labels, head.max_length
    multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
    function = "sigmoid" if multi_label else "softmax"
    sentences = load_sentences(options.samples) if options.samples else list(VERIFICATION_SENTENCES)
    # Neighbouring sentences as pairs: the second segment (token type 1) is verified too.
    firsts, seconds = sentences[0:-1:2], sentences[1::2]

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        served = TextClassification(
            TextEncoder(artifact_dir / TOKENIZER_FILE, max_length, head.names), labels.names, function
        )

        def run(feed: dict[str, Array]) -> dict[str, Array]:
            return run_session(session, feed)

        expected = [_reference_probabilities(model, folder, max_length, sentences, None, function)]
        got = [served.predict(run, {"text": np.array(sentences, dtype=object)})["probabilities"]]
        if seconds:
            expected.append(_reference_probabilities(model, folder, max_length, firsts, seconds, function))
            pair_inputs = {
                "text": np.array(firsts, dtype=object),
                PAIR_INPUT: np.array(seconds, dtype=object),
            }
            got.append(served.predict(run, pair_inputs)["probabilities"])
        reference, artifact = np.concatenate(expected), np.concatenate(got)
        label_check = agreement_check(reference.argmax(axis=1), artifact.argmax(axis=1))
        details = {
            **label_check.details,
            "single_texts": float(len(sentences)),
            "text_pairs": float(len(seconds)),
        }
        return [
            label_check.model_copy(update={"details": details}),
            max_abs_diff_check(reference, artifact, MAX_PROBABILITY_DIFF, "max_abs_prob_diff"),
        ]

    return head.exported(
        inputs=[
            TensorField(name="text", datatype=Datatype.BYTES, shape=[-1]),
            TensorField(name=PAIR_INPUT, datatype=Datatype.BYTES, shape=[-1], optional=True),
        ],
        outputs=[
            TensorField(name="label", datatype=Datatype.BYTES, shape=[-1]),
            TensorField(name="probabilities", datatype=Datatype.FP32, shape=[-1, len(labels.names)]),
        ],
        verify=verify,
        text_inputs=["text", PAIR_INPUT],
        postprocessing=Postprocessing(labels=labels.names, score_function=function),
        reference="transformers",
    )


def _reference_probabilities(
    model: Any,
    folder: Path,
    max_length: int,
    texts: list[str],
    pairs: list[str] | None,
    function: str,
) -> Array:
    """The transformers model's probabilities, tokenized by the source folder's own tokenizer."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    rows = []
    for start in range(0, len(texts), VERIFICATION_BATCH):
        end = start + VERIFICATION_BATCH
        encoded = tokenizer(
            list(texts[start:end]),
            list(pairs[start:end]) if pairs is not None else None,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            logits = model(**encoded).logits.numpy().astype(np.float32)
        rows.append(logits)
    logits = np.concatenate(rows)
    return sigmoid(logits) if function == "sigmoid" else softmax(logits)
