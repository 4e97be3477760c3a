"""While the spec's models are still loading, the server is live but not ready, and asks callers to retry."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson
import pytest

from modelfleet.config.serve import ModelConfig
from modelfleet.errors import NotFound, Unavailable
from modelfleet.protocol.codec import decode_request
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.metrics import ServerMetrics
from modelfleet.server.repository import ModelRepository

IRIS_BODY = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
)


async def test_a_model_still_loading_is_a_retryable_503_not_a_404(iris_artifact: Path) -> None:
    release = threading.Event()

    def slow_resolver(config: ModelConfig) -> tuple[Path, str | None]:
        release.wait(30)  # stands in for a large artifact being read and verified
        assert config.path is not None
        return config.path, None

    repository = ModelRepository(ServerMetrics(), auto_intra_op_threads=1, resolver=slow_resolver)
    dataplane = DataPlane(repository, [ModelConfig(path=iris_artifact)])
    dataplane.start()
    try:
        await asyncio.sleep(0.05)
        assert dataplane.loading and not dataplane.ready()
        with pytest.raises(Unavailable, match="still loading") as raised:
            await dataplane.infer("iris", None, decode_request(IRIS_BODY, None))
        assert raised.value.http_status == 503
        assert raised.value.retry_after_s == 1.0
        assert dataplane.model_ready("iris", None) is False

        release.set()
        await asyncio.wait_for(dataplane.wait_loaded(), 30)
        assert dataplane.ready()
        response = await dataplane.infer("iris", None, decode_request(IRIS_BODY, None))
        assert response.model_name == "iris"
        with pytest.raises(NotFound):  # once loading is over, an unknown name is a plain 404
            await dataplane.infer("no-such-model", None, decode_request(IRIS_BODY, None))
    finally:
        release.set()
        await dataplane.shutdown(1.0)


async def test_ready_waits_for_every_worker_sharing_the_port(iris_artifact: Path) -> None:
    peers = {"loaded": False}
    repository = ModelRepository(ServerMetrics(), auto_intra_op_threads=1)
    dataplane = DataPlane(repository, [ModelConfig(path=iris_artifact)], peers_ready=lambda: peers["loaded"])
    dataplane.start()
    try:
        await asyncio.wait_for(dataplane.wait_loaded(), 30)
        assert not dataplane.ready(), "this worker is loaded but a sibling is not"
        peers["loaded"] = True
        assert dataplane.ready()
    finally:
        await dataplane.shutdown(1.0)
