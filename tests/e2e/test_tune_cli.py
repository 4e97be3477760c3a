"""`modelfleet tune` in a subprocess against real servers on loopback: results, --json, --write-fleet,
the report page, --resume, and the error exits (unknown instance type, an SLO nobody meets, a model
that fails to load, an existing results file)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.support.linear_model import make_artifact
from tests.support.servers import MODELFLEET

from modelfleet.config.base import load_spec
from modelfleet.config.fleet import FleetSpec

# Short probes; a shared 2-core machine makes late sends and p99 noisy, which other tests cover.
CAPACITY = {
    "start_rate_per_s": 100,
    "min_rate_per_s": 50,
    "max_rate_per_s": 200,
    "probe_duration_s": 0.5,
    "warmup_s": 0.2,
    "window_s": 0.25,
    "repeats": 1,
    "max_late_fraction": 0.3,
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*MODELFLEET, *args], capture_output=True, text=True, cwd=cwd, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _spec(folder: Path, artifact: Path, **overrides: object) -> Path:
    data: dict[str, object] = {
        "artifacts": [str(artifact), str(artifact)],  # the same bytes twice: measured once
        "slo": "p99<200ms",
        "target_rate_per_s": 300,
        "hardware": [{"cpus": 1}],
        "space": {"max_batch_size": [1, 8]},
        "capacity": CAPACITY,
        "verify_floor_ms": 200,
    }
    data.update(overrides)
    path = folder / f"tune-{len(list(folder.glob('tune-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("tune") / "linear")


def test_tune_json_fleet_report_and_resume(artifact: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, artifact)
    run = _cli("tune", str(spec), "--json", "--write-fleet", "fleet.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["status"] == "complete" and summary["results_file"] == "tune-results.json"
    assert len(summary["trials"]) == 2  # two settings × one distinct artifact
    assert any("byte-identical" in note for note in summary["notes"])
    assert any("1cpu → c5.large" in note for note in summary["notes"])  # the mapping is said
    winner = next(t for t in summary["trials"] if t["key"] == summary["recommendation"]["key"])
    assert winner["status"] == "ok" and winner["capacity_per_s"] > 0 and winner["replicas"] >= 1
    assert winner["cost_per_million"] > 0 and winner["fleet_price_per_h"] > 0
    assert summary["verification"]["passed"] is True
    fleet = load_spec(tmp_path / "fleet.yaml", FleetSpec)
    assert fleet.models[0].batching.max_batch_size == winner["settings"]["max_batch_size"]
    assert fleet.pools[0].instance_type == "c5.large"
    assert fleet.pools[0].autoscaling.min_replicas == max(2, winner["replicas"])

    report = _cli("report", "tune-results.json", "-o", "tune.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Pareto front" in (tmp_path / "tune.html").read_text()

    resumed = _cli("tune", str(spec), "--resume", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads(resumed.stdout)
    assert [t["key"] for t in after["trials"]] == [t["key"] for t in summary["trials"]]  # nothing re-measured
    assert [t["capacity_per_s"] for t in after["trials"]] == [t["capacity_per_s"] for t in summary["trials"]]

    exists = _cli("tune", str(spec), cwd=tmp_path)
    assert exists.returncode == 6 and "--resume" in exists.stderr


def test_an_slo_nobody_meets_exits_1_naming_the_closest(artifact: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, artifact, slo="p99<0.001ms", space={"max_batch_size": [1]})
    run = _cli("tune", str(spec), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    line = run.stderr.strip()
    assert len(line.splitlines()) == 1
    assert (
        "no configuration met p99<0.001ms" in line and "closest: fp32 batch 1" in line and "ms over" in line
    )
    assert json.loads((tmp_path / "tune-results.json").read_text())["recommendation"] is None


def test_bad_input_exits_with_one_line(artifact: Path, tmp_path: Path) -> None:
    unknown = _cli(
        "tune",
        str(_spec(tmp_path, artifact, hardware=[{"cpus": 1, "instance_type": "c7i.larg"}])),
        cwd=tmp_path,
    )
    assert unknown.returncode == 2
    assert "unknown instance type 'c7i.larg' (hardware.0.instance_type)" in unknown.stderr
    assert "c7i.large" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1

    broken = tmp_path / "broken"
    make_artifact(broken)
    (broken / "model.onnx").write_bytes(b"not onnx")
    failed = _cli(
        "tune", "-m", str(broken), "--target-rate", "10", "--slo", "p99<50ms", "-o", "b.json", cwd=tmp_path
    )
    assert failed.returncode == 4, failed.stderr
    assert f"model {broken} failed to load" in failed.stderr and "corrupt" in failed.stderr

    missing = _cli("tune", "-m", str(tmp_path / "nothing"), "--target-rate", "10", cwd=tmp_path)
    assert missing.returncode == 3 and "is not an artifact folder" in missing.stderr
