"""The sampler's reservoir stays bounded and uniform; rates, caps and the sensitive switch hold."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.config.drift import DriftConfig
from modelfleet.drift.sampling import Sampler, Window


def _request(first: int, items: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    index = np.arange(first, first + items, dtype=np.float32)
    return {"input": np.stack([index, -index], axis=1)}, {"label": index.astype(np.int64)}


def test_reservoir_is_bounded_and_uniform_however_long_it_runs() -> None:
    sampler = Sampler(DriftConfig(sample_rate=1.0, window_items=200, max_items_per_request=4), seed=1)
    for request in range(5000):
        sampler.offer(*_request(request * 4, 4), items=4)
    window = sampler.window()
    assert len(window) == 200 and sampler.items_seen == 20_000 and sampler.requests_sampled == 5000
    assert window.inputs["input"].shape == (200, 2) and window.outputs["label"].shape == (200,)
    # Algorithm R keeps every item with probability k/n: the kept indices spread over the whole run.
    kept = window.outputs["label"]
    assert len(set(kept.tolist())) == 200
    assert 7_000 < kept.mean() < 13_000
    assert (kept < 5_000).sum() > 20 and (kept >= 15_000).sum() > 20


def test_rate_is_per_request_and_large_requests_are_capped() -> None:
    sampler = Sampler(DriftConfig(sample_rate=0.25, max_items_per_request=3), seed=2)
    for request in range(2000):
        sampler.offer(*_request(request * 10, 10), items=10)
    assert 420 < sampler.requests_sampled < 580
    assert sampler.items_seen == 3 * sampler.requests_sampled  # 3 of each sampled request's 10 items


@pytest.mark.parametrize(
    "config", [DriftConfig(sample_rate=0.0), DriftConfig(sample_rate=1.0, sensitive=True)]
)
def test_off_and_sensitive_sample_nothing(config: DriftConfig) -> None:
    sampler = Sampler(config, seed=3)
    for request in range(100):
        sampler.offer(*_request(request, 1), items=1)
    assert len(sampler.window()) == 0 and sampler.rate == 0.0 and not config.sampling


def test_served_reference_is_the_first_items_once_complete() -> None:
    config = DriftConfig.model_validate(
        {"sample_rate": 1.0, "reference": {"source": "served", "served_items": 10}}
    )
    sampler = Sampler(config, seed=4)
    for request in range(9):
        sampler.offer(*_request(request, 1), items=1)
    assert sampler.served_reference() is None and sampler.served_reference_items == 9
    for request in range(9, 30):
        sampler.offer(*_request(request, 1), items=1)
    reference = sampler.served_reference()
    assert reference is not None and reference.outputs["label"].tolist() == list(range(10))


def test_window_json_round_trip_keeps_text_and_numbers() -> None:
    window = Window(
        {"text": np.array([b"caf\xc3\xa9", b"\xff"], dtype=object)},
        {"embedding": np.array([[0.5, 1.0], [2.0, 3.0]], dtype=np.float32)},
        np.array([1.0, 2.0]),
    )
    document = window.to_json()
    assert document["inputs"]["text"] == ["café", "\ufffd"]  # invalid UTF-8 replaced, never an error
    back = Window.from_json(document)
    assert back.inputs["text"].dtype == object and back.outputs["embedding"].tolist() == [
        [0.5, 1.0],
        [2.0, 3.0],
    ]
    merged = Window.concat([back, back])
    assert len(merged) == 4 and len(merged.subsample(3)) == 3
