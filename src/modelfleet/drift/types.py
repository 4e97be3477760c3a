"""What the drift parts hand each other: captured items, findings, assessments, and who listens for them.

Pure data at the bottom of the drift package: sampling and capture write `CapturedItem`s, detection turns a
reference and a window of them into a `DriftAssessment`, the fleet's drift monitor hands each assessment to its
`DriftListener`s (the notifier's event log, the retraining controller).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

DriftTest = Literal["ks", "chi2", "wasserstein", "jensen_shannon", "psi", "mmd", "domain_classifier"]


@dataclass(frozen=True, slots=True)
class CapturedItem:
    """One served item (one row of a batch), as sampled; one JSON line in a capture file.

    `inputs` and `outputs` map tensor names to the item's values as JSON-native lists (or a string for BYTES).
    Never holds the API key or any header.
    """

    at: float  # Unix seconds when it was served
    model: str
    version: int | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DriftFinding:
    """One test on one feature, on the outputs, or on the embedding vectors."""

    name: str  # "input[2]", "output:label", "embedding"
    test: DriftTest
    statistic: float
    p_value: float | None  # None for distance tests judged against a threshold
    threshold: float  # the corrected alpha for p-value tests, the distance threshold otherwise
    drifted: bool


@dataclass(frozen=True, slots=True)
class DriftAssessment:
    """A window judged against the reference. `judged` is False when either is too small to judge."""

    model: str
    version: int | None
    window_items: int
    reference_items: int
    judged: bool
    drifted: bool
    reason: str  # one line for people: what drifted, or why nothing could be judged
    findings: tuple[DriftFinding, ...] = ()
    at: float = 0.0  # Unix seconds
    details: dict[str, Any] = field(default_factory=dict)


class DriftListener(Protocol):
    """Told of every assessment the fleet's drift monitor makes (judged or not); must not block."""

    def on_assessment(self, assessment: DriftAssessment) -> None: ...
