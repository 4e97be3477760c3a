"""Rollouts on a real local fleet (supervisor, router, servers reading a real registry) under steady load:
a broken canary (a real artifact that loads but answers 500) is rolled back automatically and traffic
returns fully to the old version; a good canary, shadowed first, is promoted and the alias moves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.fleet_specs import write_fleet_spec
from tests.support.linear_model import infer_body, make_artifact, make_broken_artifact

from modelfleet.config.rollout import RolloutGates, RolloutOptions
from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.fleet.local import start_fleet, stop_fleet
from modelfleet.fleet.router_config import read_traffic_split
from modelfleet.fleet.state import FleetPaths
from modelfleet.operate.events import read_events
from modelfleet.operate.rollout import prepare_rollout, run_rollout
from modelfleet.registry import Registry
from modelfleet.registry.rollouts import rollouts

pytestmark = pytest.mark.timeout(150)
# Every input ≥ 1: the good versions answer, the broken one drops the rows and its server answers 500.
BODY = infer_body(rows=2, seed=3, low=1.5)


class Load:
    """Two closed-loop clients through the router; every answer is kept with its monotonic time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(2)]

    def _client(self) -> None:
        with httpx.Client(timeout=8.0) as client:
            while not self._stop.is_set():
                status = client.post(self.url, json=BODY).status_code
                self.results.append((time.monotonic(), status))
                time.sleep(0.004)  # a steady few hundred requests a second, not a saturating storm

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Registry, str]]:
    root = tmp_path_factory.mktemp("rollout")
    registry = Registry(root / "registry")
    good = registry.add(make_artifact(root / "v1", "linear", 1), actor="test")
    registry.promote(good.ref, actor="test", reason="first")
    registry.add(make_artifact(root / "v2", "linear", 2), actor="test")
    registry.add(make_broken_artifact(root / "v3", "linear"), actor="test")
    spec_file = write_fleet_spec(
        root / "fleet.yaml", {}, models=[{"name": "linear", "ref": "linear@production", "warmup_runs": 1}]
    )
    state_root = root / "state"
    with pytest.MonkeyPatch.context() as patch:
        # The supervisor, the fleet's servers and the canary inherit it from this process.
        patch.setenv("MODELFLEET_REGISTRY", str(registry.root))
        state = start_fleet(spec_file, state_root=state_root, wait_s=90)
        try:
            yield spec_file, state_root, registry, f"{state.router_url}/v2/models/linear/infer"
        finally:
            stop_fleet(spec_file, state_root)


def _options(steps: list[float], interval_s: float, shadow_percent: float = 0.0) -> RolloutOptions:
    return RolloutOptions(
        canary_percent=steps[0],
        steps_percent=steps,
        interval_s=interval_s,
        shadow_percent=shadow_percent,
        # The latency gate has its unit tests; on a shared 2-core VM only a wide slack keeps it out of here.
        gates=RolloutGates(min_requests=20, check_interval_s=0.1, p99_slack_ms=500),
    )


def _cli(*args: str, registry: Registry, state_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELFLEET_REGISTRY": str(registry.root), "MODELFLEET_STATE_DIR": str(state_root)}
    return subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_bad_input_is_refused_before_anything_starts(fleet: tuple[Path, Path, Registry, str]) -> None:
    spec_file, state_root, registry, _ = fleet
    with pytest.raises(NotFound, match="model 'nope' is not in fleet testfleet"):
        prepare_rollout(spec_file, "nope", "linear:2", state_root=state_root, registry_dir=registry.root)
    with pytest.raises(NotFound, match="version 9"):
        prepare_rollout(spec_file, "linear", "linear:9", state_root=state_root, registry_dir=registry.root)
    with pytest.raises(InvalidInput, match="--to"):
        prepare_rollout(spec_file, "linear", "linear:two", state_root=state_root, registry_dir=registry.root)
    with pytest.raises(Conflict, match="already points at version 1"):
        prepare_rollout(spec_file, "linear", "linear:1", state_root=state_root, registry_dir=registry.root)
    # The CLI: one line on stderr, the documented exit code, and nothing started.
    unknown = _cli(
        "fleet", "rollout", "testfleet", "nope", "--to", "linear:2", registry=registry, state_root=state_root
    )
    assert unknown.returncode == 3 and unknown.stderr.strip().count("\n") == 0
    assert "model 'nope' is not in fleet testfleet" in unknown.stderr
    share = _cli("fleet", "rollout", "testfleet", "linear", "--to", "linear:2", "--canary", "150%",
                 registry=registry, state_root=state_root)  # fmt: skip
    assert share.returncode == 2 and "--canary '150%': a share must be in (0, 100] percent" in share.stderr
    assert not (
        FleetPaths.for_fleet("testfleet", state_root).root / "specs" / "canary-linear-0.yaml"
    ).exists()


def test_broken_canary_rolls_back_and_traffic_returns_to_the_old_version(
    fleet: tuple[Path, Path, Registry, str],
) -> None:
    spec_file, state_root, registry, url = fleet
    paths = FleetPaths.for_fleet("testfleet", state_root)
    with Load(url) as load:
        time.sleep(0.5)
        began = time.monotonic()
        record = run_rollout(
            spec_file, "linear", "linear:3", _options([20.0, 100.0], 3.0),
            state_root=state_root, registry_dir=registry.root, actor="ci",
        )  # fmt: skip
        ended = time.monotonic()
        time.sleep(1.0)
    assert record.outcome == "rolled_back", record
    assert "error rate" in record.reason and "gates.max_error_rate_increase_percent" in record.reason
    assert len(record.steps) == 1 and record.steps[0].canary_percent == 20.0
    assert record.rollback_s is not None and record.rollback_s < 2.0
    # Failures only while the canary had its share, about that share of them, and none after.
    during = [status for at, status in load.results if began <= at <= ended]
    failed = [status for status in during if status != 200]
    assert failed and set(failed) == {500}
    assert len(failed) <= 0.35 * len(during), (len(failed), len(during))
    after = [status for at, status in load.results if at > ended]
    assert len(after) > 50 and set(after) == {200}
    assert read_traffic_split(paths.split_file).routes == []
    assert registry.get("linear@production").version == 1
    [stored] = rollouts(registry, "linear")
    assert stored.outcome == "rolled_back" and stored.actor == "ci" and stored.to_version == 3
    kinds = [event.kind for event in read_events(paths.events_file)[0]]
    assert kinds[-2:] == ["rollout_started", "rollout_rolled_back"]


def test_good_canary_is_shadowed_then_promoted(fleet: tuple[Path, Path, Registry, str]) -> None:
    spec_file, state_root, registry, url = fleet
    paths = FleetPaths.for_fleet("testfleet", state_root)
    with Load(url) as load:
        time.sleep(0.3)
        record = run_rollout(
            spec_file, "linear", "linear:2", _options([50.0, 100.0], 1.0, shadow_percent=50.0),
            state_root=state_root, registry_dir=registry.root, actor="ci",
        )  # fmt: skip
        time.sleep(0.5)
    assert record.outcome == "promoted", record
    assert [(step.phase, step.canary_percent) for step in record.steps] == [
        ("shadow", 0.0), ("canary", 50.0), ("canary", 100.0),
    ]  # fmt: skip
    assert all(step.verdict == "passed" for step in record.steps)
    assert record.shadow is not None and record.shadow["compared"] > 10
    # Two different random linear layers: their scores point different ways, and the record says so.
    assert record.shadow["cosine_mean"] is not None and record.shadow["cosine_mean"] < 0.999
    assert {status for _, status in load.results} == {200}
    assert registry.get("linear@production").version == 2
    history = registry.history("linear", "production")
    assert history[-1].action == "promote" and "every step passed" in history[-1].reason
    assert [r.outcome for r in rollouts(registry, "linear")] == ["rolled_back", "promoted"]
    assert read_traffic_split(paths.split_file).routes == []
    saved = json.loads((paths.root / "rollouts" / "linear.json").read_text())
    assert saved["outcome"] == "promoted"
    kinds = [event.kind for event in read_events(paths.events_file)[0]]
    assert kinds[-5:] == [
        "rollout_started", "rollout_advanced", "rollout_advanced", "rollout_advanced", "rollout_finished",
    ]  # fmt: skip
    answer = httpx.post(url, json=BODY, timeout=5).json()
    assert answer["model_version"] == "2"
    listed = _cli("registry", "rollouts", "linear", "--json", registry=registry, state_root=state_root)
    assert listed.returncode == 0, listed.stderr
    assert [(r["outcome"], r["to_version"]) for r in json.loads(listed.stdout)] == [
        ("rolled_back", 3),
        ("promoted", 2),
    ]
