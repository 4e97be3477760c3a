"""Drift tracking inside one server process: a sampler per served model version, its capture and its reference.

The dataplane calls `ServedDrift.offer` after every successful inference (one dict lookup and one random
draw when the model samples, one attribute test when it does not) and `prepare` when a model loads, so a
reference file that does not fit the model fails the load with one line. `GET /v2/models/{name}/drift`
answers `document`: the window, the reference's state and this replica's own assessment, computed in a
worker thread (an MMD test takes a few hundred milliseconds) and only when the window changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.config.drift import DriftConfig
from modelfleet.drift.capture import CAPTURE_DIR_ENV, CaptureWriter
from modelfleet.drift.detect import assess, assessment_json
from modelfleet.drift.reference import artifact_reference, load_reference
from modelfleet.drift.sampling import Sampler, Window
from modelfleet.drift.types import DriftAssessment
from modelfleet.errors import ModelfleetError
from modelfleet.protocol.codec import InputTensor
from modelfleet.server.metrics import ServerMetrics
from modelfleet.server.repository import LoadedModel
from modelfleet.types import Arrays

log = logging.getLogger("modelfleet.server")


def numeric_version(version: str) -> int | None:
    return int(version) if version.isdigit() else None


class ModelDrift:
    """One model version's sampler, capture writer and reference in this process."""

    def __init__(self, entry: LoadedModel) -> None:
        self.entry = entry
        self.config: DriftConfig = entry.config.drift
        self.version = numeric_version(entry.version)
        folder = self.config.capture.dir
        if folder is None and os.environ.get(CAPTURE_DIR_ENV):
            folder = Path(os.environ[CAPTURE_DIR_ENV]) / entry.name
        self.capture = (
            CaptureWriter(folder, self.config.capture, entry.name, self.version)
            if self.config.capture.enabled and folder is not None
            else None
        )
        self.sampler = Sampler(self.config, on_sampled=None if self.capture is None else self.capture.put)
        self.reference: Window | None = None
        self.reference_note = ""
        self._outputs_done = False
        self._assessment: DriftAssessment | None = None
        self._assessed_at_seen = -1
        self._lock = asyncio.Lock()

    def load_reference(self) -> None:
        """Read the file or artifact reference; InvalidInput / NotFound when it does not fit the model."""
        source, specs = self.config.reference.source, list(self.entry.model.inputs)
        if source == "file" and self.config.reference.path is not None:
            self.reference = load_reference(
                self.config.reference.path, specs, self.config.reference.max_items
            )
        elif source == "build":
            self.reference = artifact_reference(
                self.entry.config.path, specs, self.config.reference.max_items
            )
            if self.reference is None:
                self.reference_note = (
                    "the artifact has no drift_reference.jsonl; set drift.reference.source to file or served"
                )

    async def _reference(self) -> Window | None:
        """The reference with the model's outputs: a file of inputs alone is run through the model once."""
        if self.config.reference.source == "served":
            return self.sampler.served_reference()
        if self.reference is None or self._outputs_done:
            return self.reference
        if not self.reference.outputs:
            self.reference = await self._with_outputs(self.reference)
        self._outputs_done = True
        return self.reference

    async def _with_outputs(self, reference: Window) -> Window:
        model, batcher = self.entry.model, self.entry.batcher
        chunk = self.entry.config.batching.items_per_request_limit()
        loop = asyncio.get_running_loop()
        parts: list[Arrays] = []
        for start in range(0, len(reference), chunk):
            inputs = {name: array[start : start + chunk] for name, array in reference.inputs.items()}
            items = len(next(iter(inputs.values())))
            prepared = model.validate_inputs(inputs)
            parts.append(await batcher.submit(prepared, items, loop.time() + self.entry.config.timeout_s))
        outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}
        return Window(reference.inputs, outputs, reference.at)

    async def document(self, metrics: ServerMetrics, window: bool, reference: bool) -> dict[str, Any]:
        async with self._lock:  # concurrent scrapes share one assessment
            ref = None
            try:
                ref = await self._reference()
            except ModelfleetError as exc:  # the model refused its own reference run: say so, keep sampling
                self.reference_note = f"could not run the reference through the model: {exc.message}"
            current = self.sampler.window()
            if self.sampler.items_seen != self._assessed_at_seen:
                empty = Window({}, {}, np.zeros(0))
                self._assessment = await asyncio.to_thread(
                    assess, self.entry.name, self.version, ref or empty, current, self.config
                )
                self._assessed_at_seen = self.sampler.items_seen
                _export(metrics, self._assessment)
        source = self.config.reference.source
        served_items = self.sampler.served_reference_items if source == "served" else None
        document: dict[str, Any] = {
            "model": self.entry.name,
            "version": self.entry.version,
            "sampling": self.config.sampling,
            "sample_rate": self.sampler.rate,
            "requests_sampled": self.sampler.requests_sampled,
            "items_seen": self.sampler.items_seen,
            "window_items": len(current),
            "reference": {
                "source": source,
                "items": len(ref) if ref is not None else (served_items or 0),
                "ready": ref is not None,
                "note": self.reference_note,
            },
            "capture": None
            if self.capture is None
            else {
                "dir": str(self.capture.folder),
                "written_items": self.capture.written_items,
                "dropped_items": self.capture.dropped_items,
            },
            "config": self.config.model_dump(mode="json"),
            "assessment": None if self._assessment is None else assessment_json(self._assessment),
        }
        if window:
            document["window"] = current.to_json()
        if reference:
            document["reference_window"] = None if ref is None else ref.to_json()
        return document

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()


def _export(metrics: ServerMetrics, assessment: DriftAssessment) -> None:
    metrics.drift_window_items.labels(assessment.model).set(assessment.window_items)
    metrics.drift_detected.labels(assessment.model).set(1.0 if assessment.drifted else 0.0)
    for finding in assessment.findings:
        metrics.drift_score.labels(assessment.model, finding.name, finding.test).set(finding.statistic)
        if finding.p_value is not None:
            metrics.drift_p_value.labels(assessment.model, finding.name, finding.test).set(finding.p_value)
        metrics.note_drift_series(assessment.model, finding.name, finding.test)


class ServedDrift:
    """Every served model version's drift tracking in this process, created when the version loads (or
    at its first request, for versions the alias watcher loaded)."""

    def __init__(self) -> None:
        # One tracker per model name, for the version serving now: a new version starts a new window
        # (and a new served reference), and the old version's tracker goes, so memory stays bounded.
        self._models: dict[str, ModelDrift] = {}

    def prepare(self, entry: LoadedModel) -> None:
        """At load: a sampling model's tracker, with its reference read and checked (errors propagate)."""
        if not entry.config.drift.sampling:
            return
        tracker = ModelDrift(entry)
        tracker.load_reference()
        self._replace(entry.name, tracker)

    def offer(self, entry: LoadedModel, tensors: Sequence[InputTensor], outputs: Arrays, items: int) -> None:
        """After a successful inference; the hot path: the request's tensors are only looked at when drawn."""
        if not entry.config.drift.sampling:
            return
        tracker = self._models.get(entry.name)
        if tracker is None or tracker.entry is not entry:
            tracker = self.track(entry)
        if tracker.sampler.draw():
            tracker.sampler.add({tensor.name: tensor.data for tensor in tensors}, outputs, items)

    def track(self, entry: LoadedModel) -> ModelDrift:
        """A version loaded behind the dataplane's back (the alias watcher): its reference is checked here."""
        tracker = ModelDrift(entry)
        try:
            tracker.load_reference()
        except ModelfleetError as exc:
            tracker.reference_note = exc.message
            log.error("model %s: %s", entry.name, exc.message)
        self._replace(entry.name, tracker)
        return tracker

    def _replace(self, name: str, tracker: ModelDrift) -> None:
        previous = self._models.get(name)
        self._models[name] = tracker
        if previous is not None:
            previous.close()

    def tracker(self, entry: LoadedModel) -> ModelDrift | None:
        tracker = self._models.get(entry.name)
        return tracker if tracker is not None and tracker.entry is entry else None

    def close(self) -> None:
        for tracker in self._models.values():
            tracker.close()
