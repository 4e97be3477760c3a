"""Warm-up at load: runs at max_batch_size and batch 1 through the model's own batcher, before READY."""

from __future__ import annotations

from pathlib import Path

from modelfleet.build.samples import VERIFICATION_SENTENCES
from modelfleet.config.serve import BatchingConfig, ModelConfig
from modelfleet.server.metrics import ServerMetrics
from modelfleet.server.repository import ModelRepository, ModelState
from modelfleet.server.warmup import warmup_inputs


async def test_warm_up_runs_each_batch_size_through_the_batcher_before_ready(iris_artifact: Path) -> None:
    metrics = ServerMetrics()
    repository = ModelRepository(metrics, auto_intra_op_threads=1)
    config = ModelConfig(path=iris_artifact, warmup_runs=3, batching=BatchingConfig(max_batch_size=16))
    entry = await repository.load(config)
    try:
        assert entry.state is ModelState.READY
        assert entry.warmup is not None
        assert [items for items, _ in entry.warmup.runs] == [16, 1, 16]
        assert all(seconds > 0 for _, seconds in entry.warmup.runs)
        exposition = metrics.exposition()
        assert b'modelfleet_model_warmup_runs_total{model="iris"} 3.0' in exposition
        assert b'modelfleet_batch_size_count{model="iris"} 0.0' in exposition
    finally:
        await repository.close()


async def test_text_models_warm_up_on_the_verification_sentences(minilm_int8_artifact: Path) -> None:
    repository = ModelRepository(ServerMetrics(), auto_intra_op_threads=1)
    config = ModelConfig(path=minilm_int8_artifact, warmup_runs=2, batching=BatchingConfig(max_batch_size=8))
    entry = await repository.load(config)
    try:
        assert entry.warmup is not None and [items for items, _ in entry.warmup.runs] == [8, 1]
        # The unshared run time (the queue-wait target's unit) is the warm one-item run's, not the cold
        # first run's: a run of 8 items is not what a lone request costs.
        assert entry.batcher.service.solo_s == entry.warmup.runs[1][1]
        assert entry.model is not None
        texts = warmup_inputs(entry.model, 3)["text"]
        assert [text.decode() for text in texts] == list(VERIFICATION_SENTENCES[:3])
    finally:
        await repository.close()


async def test_no_warm_up_when_warmup_runs_is_zero(iris_artifact: Path) -> None:
    repository = ModelRepository(ServerMetrics(), auto_intra_op_threads=1)
    entry = await repository.load(ModelConfig(path=iris_artifact, warmup_runs=0))
    try:
        assert entry.state is ModelState.READY and entry.warmup is not None and entry.warmup.runs == []
    finally:
        await repository.close()
