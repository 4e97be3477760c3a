"""Which task a Hugging Face folder builds as, from `config.json`'s `architectures` (no model loading)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from modelfleet.build.messages import first_line
from modelfleet.errors import InvalidInput

# Architecture name suffix → task. A bare encoder (`BertModel`) or a sentence-transformers folder
# builds as a text embedder; any head's encoder can be asked for with --task text-embedding.
HEAD_SUFFIXES: dict[str, str] = {
    "ForQuestionAnswering": "question-answering",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
}
_ENCODER_SUFFIXES = ("Model", "ForMaskedLM", "ForPreTraining")
HF_TASKS = ("text-embedding", *HEAD_SUFFIXES.values())


@dataclass(frozen=True, slots=True)
class HfDetection:
    task: str
    architecture: str  # as config.json names it, or "sentence-transformers"

    def describe(self) -> str:
        return f"Hugging Face {self.architecture} folder"


def detect_hf_task(folder: Path, asked_task: str) -> HfDetection:
    """The task to build: `asked_task` when it is not "auto" (checked against the folder), else detected."""
    architecture = _architecture(folder)
    detected = _task_of(architecture, folder)
    if asked_task == "auto":
        if detected is None:
            raise InvalidInput(
                f"{folder.name}: architecture {architecture} is not supported; supported are encoders "
                f"(*Model, sentence-transformers) as text-embedding and the heads "
                f"{', '.join('*' + suffix for suffix in HEAD_SUFFIXES)}"
            )
        return HfDetection(detected, architecture)
    if asked_task not in HF_TASKS:
        raise InvalidInput(
            f"--task {asked_task}: a Hugging Face folder builds as one of {', '.join(HF_TASKS)}"
        )
    if asked_task != "text-embedding" and asked_task != detected:
        raise InvalidInput(
            f"--task {asked_task}: {folder.name} is a {architecture}, which has no {asked_task} head "
            f"(it builds as {detected or 'nothing supported'}); --task text-embedding takes any encoder"
        )
    return HfDetection(asked_task, architecture)


def _architecture(folder: Path) -> str:
    if (folder / "modules.json").is_file():
        return "sentence-transformers"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{folder / 'config.json'} is not valid JSON: {first_line(exc)}") from None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not architectures:
        return "unnamed encoder"  # transformers' AutoModel loads it by model_type
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise InvalidInput(f"{folder / 'config.json'}: architectures must be a list of names")
    return str(architectures[0])


def _task_of(architecture: str, folder: Path) -> str | None:
    if architecture in ("sentence-transformers", "unnamed encoder"):
        return "text-embedding"
    for suffix, task in HEAD_SUFFIXES.items():
        if architecture.endswith(suffix):
            return task
    # A bare model (BertModel) or a pre-training head over an encoder; not a causal LM (GPT2LMHeadModel).
    if architecture.endswith(_ENCODER_SUFFIXES) and "LMHead" not in architecture:
        return "text-embedding"
    return None
