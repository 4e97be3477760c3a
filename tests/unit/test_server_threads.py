"""`intra_op_threads` belongs to each model: every model's session gets its own value, 0 = cores ÷ workers."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from modelfleet.config.serve import ServeSpec
from modelfleet.runtime.onnx import OnnxModel, default_intra_op_threads
from modelfleet.server.app import create_app


def _session_threads(model: object) -> int:
    options = cast(OnnxModel, model)._session.get_session_options()
    return int(options.intra_op_num_threads)


@pytest.mark.timeout(120)
async def test_each_model_runs_with_its_own_intra_op_threads(iris_artifact: Path) -> None:
    spec = ServeSpec.model_validate(
        {
            "models": [
                {"path": str(iris_artifact), "name": "one", "intra_op_threads": 1, "warmup_runs": 0},
                {"path": str(iris_artifact), "name": "three", "intra_op_threads": 3, "warmup_runs": 0},
                {"path": str(iris_artifact), "name": "auto", "warmup_runs": 0},
            ]
        }
    )
    app = create_app(spec)
    await app.lifecycle.startup()
    try:
        await app.dataplane.wait_loaded()
        assert app.dataplane.load_error is None
        threads = {entry.name: _session_threads(entry.model) for entry in app.dataplane.repository.loaded()}
    finally:
        await app.lifecycle.shutdown()
    # Before, the smallest explicit value (1) went to every model.
    assert threads == {"one": 1, "three": 3, "auto": default_intra_op_threads(spec.server.workers)}


def test_auto_threads_share_the_cores_among_the_workers() -> None:
    cores = default_intra_op_threads(1)
    assert default_intra_op_threads(2) == max(1, cores // 2)
    assert default_intra_op_threads(10_000) == 1


def test_a_cpu_budget_sets_the_automatic_thread_count_whatever_the_machine_has() -> None:
    assert default_intra_op_threads(1, cpu_cores=1.0) == 1
    assert default_intra_op_threads(2, cpu_cores=1.0) == 1  # never 0
    assert default_intra_op_threads(1, cpu_cores=3.5) == 3
    assert default_intra_op_threads(2, cpu_cores=8.0) == 4


def _spinning(model: object) -> str:
    options = cast(OnnxModel, model)._session.get_session_options()
    return options.get_session_config_entry("session.intra_op.allow_spinning")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("models", "spinning"),
    [
        ([{"name": "alone"}], "1"),  # runs alone: its threads spin within a run
        ([{"name": "alone", "instances": 2}], "0"),  # two runs at once on one session
        ([{"name": "one"}, {"name": "two"}], "0"),  # two sessions' runs may overlap
    ],
)
async def test_intra_op_threads_spin_only_for_a_server_of_one_model_running_alone(
    iris_artifact: Path, models: list[dict[str, object]], spinning: str
) -> None:
    spec = ServeSpec.model_validate(
        {"models": [{"path": str(iris_artifact), "warmup_runs": 0, **model} for model in models]}
    )
    app = create_app(spec)
    await app.lifecycle.startup()
    try:
        await app.dataplane.wait_loaded()
        assert app.dataplane.load_error is None
        found = {_spinning(entry.model) for entry in app.dataplane.repository.loaded()}
    finally:
        await app.lifecycle.shutdown()
    assert found == {spinning}
