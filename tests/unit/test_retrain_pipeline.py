"""The retraining pipeline on a real registry and real files, fleet not running: a passing run registers the
hook's model with lineage and moves the alias; bad input and failing hooks are one-line errors with their
exit codes, recorded in the registry's retraining history and the event log, and nothing is promoted."""

from __future__ import annotations

import fcntl
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.linear_model import _onnx_bytes, make_artifact

from modelfleet.drift.retrain import Trigger, prepare_retrain, run_retrain
from modelfleet.errors import Conflict, HookFailed, InvalidInput, ModelfleetError
from modelfleet.fleet.state import FleetPaths
from modelfleet.operate.events import read_events
from modelfleet.registry import Registry
from modelfleet.registry.retraining import retraining_runs


def _setup(
    tmp_path: Path, command: list[str], items: int = 60, **retrain: Any
) -> tuple[Path, Registry, FleetPaths]:
    registry = Registry(tmp_path / "registry")
    registry.promote(
        registry.add(make_artifact(tmp_path / "v1", "linear", 1), actor="test").ref,
        actor="test",
        reason="first",
    )
    spec = {
        "name": "unitfleet",
        "models": [
            {
                "name": "linear",
                "ref": "linear@production",
                "retrain": {"command": command, "min_window_items": 20, **retrain},
            },
            {"name": "plain", "path": str(tmp_path / "v1")},
        ],
        "auth": {"enabled": False},
    }
    spec_file = tmp_path / "fleet.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    paths = FleetPaths.for_fleet("unitfleet", tmp_path / "state")
    if items:
        folder = paths.capture_dir / "linear"
        folder.mkdir(parents=True)
        lines = [
            {
                "at": 1000.0 + i,
                "model": "linear",
                "version": 1,
                "inputs": {"input": [i / 10, 1.0, 2.0, 3.0]},
                "outputs": {},
            }
            for i in range(items)
        ]
        (folder / "capture-000001.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return spec_file, registry, paths


def _retrain(spec_file: Path, registry: Registry, **kwargs: Any) -> Any:
    return run_retrain(
        spec_file,
        "linear",
        state_root=spec_file.parent / "state",
        registry_dir=registry.root,
        actor="test",
        **kwargs,
    )


def test_a_passing_run_registers_with_lineage_and_moves_the_alias(tmp_path: Path) -> None:
    (tmp_path / "v2.onnx").write_bytes(_onnx_bytes(2))
    command = [
        "sh",
        "-c",
        f'test -s "$MODELFLEET_WINDOW_FILE" && cp {tmp_path / "v2.onnx"} "$MODELFLEET_OUTPUT_DIR/model.onnx"',
    ]
    spec_file, registry, paths = _setup(tmp_path, command, gates={"p99_slack_ms": 100, "latency_runs": 10})
    record = _retrain(spec_file, registry, trigger=Trigger("schedule", "schedule: every 3600 s"))
    assert record.outcome == "promoted", record.reason
    assert "alias moved; fleet not running" in record.reason
    assert registry.get("linear@production").version == 2 == record.new_version
    lineage = registry.get("linear:2").lineage
    assert lineage.parent_version == 1 and lineage.retraining is not None
    assert lineage.retraining.trigger == {
        "kind": "schedule",
        "summary": "schedule: every 3600 s",
        "details": {},
    }
    assert lineage.retraining.window["items"] == 60 and lineage.retraining.window["holdout_items"] == 12
    assert lineage.retraining.hook_command == command and lineage.retraining.hook_exit_code == 0
    run_dir = paths.retrain_dir / record.id
    assert len((run_dir / "window.jsonl").read_text().splitlines()) == 48
    assert [g["name"] for g in record.gates] == ["p99_latency_ms"]  # a generic model has no quality gate
    assert [r.id for r in retraining_runs(registry, "linear")] == [record.id]


@pytest.mark.parametrize(
    ("command", "items", "error", "exit_code", "fragment"),
    [
        (["sh", "-c", "exit 0"], 0, InvalidInput, 2, "no captured data for model 'linear'"),
        (
            ["sh", "-c", "exit 0"],
            5,
            InvalidInput,
            2,
            "under the minimum of 20 (retrain.min_window_items)",
        ),
        (["./missing-hook.sh"], 60, InvalidInput, 2, "was not found at"),
        (
            ["sh", "-c", "echo training >&2; echo out of memory >&2; exit 3"],
            60,
            HookFailed,
            8,
            "exited with 3: out of memory",
        ),
    ],
)
def test_bad_input_and_failing_hooks_are_recorded_and_promote_nothing(
    tmp_path: Path,
    command: list[str],
    items: int,
    error: type[ModelfleetError],
    exit_code: int,
    fragment: str,
) -> None:
    spec_file, registry, paths = _setup(tmp_path, command, items)
    with pytest.raises(error, match=re.escape(fragment)) as caught:
        _retrain(spec_file, registry)
    assert caught.value.exit_code == exit_code
    assert [v.version for v in registry.list_versions("linear")] == [1]
    assert registry.get("linear@production").version == 1
    [record] = retraining_runs(registry, "linear")
    assert record.outcome == "failed" and fragment in record.reason and record.steps[-1].status == "failed"
    if error is HookFailed:
        assert record.hook["exit_code"] == 3 and "out of memory" in record.hook["stderr_tail"]
    [started, ended] = [e for e in read_events(paths.events_file)[0] if e.kind == "retraining"]
    assert started.severity == "info" and "started" in started.summary
    assert ended.severity == "critical" and ended.details["outcome"] == "failed"


def test_labels_that_do_not_match_are_refused(tmp_path: Path) -> None:
    spec_file, registry, _ = _setup(tmp_path, ["sh", "-c", "exit 0"])
    (tmp_path / "labels.jsonl").write_text(
        json.dumps({"inputs": {"input": [0.0, 1.0, 2.0, 3.0]}, "label": 1}) + "\n"
    )
    with pytest.raises(InvalidInput, match="59 of 60 items have no row"):
        _retrain(spec_file, registry, labels="labels.jsonl")


def test_a_second_run_while_one_runs_is_recorded_as_skipped(tmp_path: Path) -> None:
    spec_file, registry, paths = _setup(tmp_path, ["sh", "-c", "exit 0"])
    paths.retrain_dir.mkdir(parents=True)
    with (paths.retrain_dir / "linear.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(Conflict, match="already under way; this drift trigger was skipped"):
            _retrain(spec_file, registry, trigger=Trigger("drift", "input[2] drifted"))
    [record] = retraining_runs(registry, "linear")
    assert record.outcome == "skipped" and record.trigger["kind"] == "drift"


def test_a_model_needs_a_retrain_section(tmp_path: Path) -> None:
    spec_file, registry, _ = _setup(tmp_path, ["true"])
    with pytest.raises(InvalidInput, match="has no `retrain:` section"):
        prepare_retrain(spec_file, "plain", state_root=tmp_path / "state", registry_dir=registry.root)
    with pytest.raises(ModelfleetError, match="is not in fleet unitfleet"):
        prepare_retrain(spec_file, "nope", state_root=tmp_path / "state", registry_dir=registry.root)
