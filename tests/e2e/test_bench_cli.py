"""`modelfleet bench …` and `modelfleet report` in a subprocess: exit codes, files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.support.ports import refused_port
from tests.support.refserver import RefServer, refserver
from tests.support.servers import MODELFLEET

RELAXED = ["--late-threshold-ms", "250"]  # shared machine: lateness is tested elsewhere


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*MODELFLEET, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def server() -> Iterator[RefServer]:
    with refserver("v2", service_ms=5.0) as running:
        yield running


def test_run_report_merge_compare(server: RefServer, tmp_path: Path) -> None:
    common = [
        server.url,
        "-m",
        "echo=2,vector",
        "--concurrency",
        "2",
        "--duration-s",
        "1",
        "--warmup-s",
        "0.2",
        *RELAXED,
    ]
    first = _cli(
        "bench", "run", *common, "--slo", "p99<500ms,error_rate<1%", "-o", "a.json", "--json", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["slo_passed"] is True and summary["results_file"] == "a.json"
    assert summary["points"][0]["latency_ms"]["p50_ms"] >= 5.0
    second = _cli("bench", "run", *common, "-o", "b.json", cwd=tmp_path)
    assert second.returncode == 0 and "results → b.json" in second.stdout and "p99" in second.stdout

    report = _cli("report", "a.json", "-o", "out/report.html", cwd=tmp_path)
    assert report.returncode == 0 and (tmp_path / "out" / "report.html").read_text().count("<svg") == 4

    merged = _cli("bench", "merge", "a.json", "b.json", "-o", "m.json", "--slo", "p99<500ms", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["run"]["generators"] == 2 and data["points"][0]["concurrency"] == 4

    compared = _cli("bench", "compare", "a.json", "b.json", "--html", "cmp.html", cwd=tmp_path)
    assert compared.returncode == 0 and "throughput" in compared.stdout and (tmp_path / "cmp.html").exists()


def test_failed_gate_exits_1_with_the_reason(server: RefServer, tmp_path: Path) -> None:
    result = _cli(
        "bench",
        "run",
        server.url,
        "-m",
        "echo",
        "--mode",
        "rnd",
        "--requests",
        "20",
        "--warmup-s",
        "0",
        "--slo",
        "p50<1ms",
        "-o",
        "r.json",
        "-q",
        *RELAXED,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "SLO failed" in result.stderr and "p50<1ms" in result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["slo"]["passed"] is False  # results are kept


def test_results_to_stdout_are_one_mergeable_line(server: RefServer, tmp_path: Path) -> None:
    runs = [
        _cli(
            "bench",
            "run",
            server.url,
            "-m",
            "echo",
            "--rate",
            "50",
            "--duration-s",
            "0.5",
            "--warmup-s",
            "0",
            "-o",
            "-",
            "-q",
            *RELAXED,
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    assert all(r.returncode == 0 and len(r.stdout.splitlines()) == 1 for r in runs)
    (tmp_path / "pods.log").write_text("".join(r.stdout for r in runs))
    merged = _cli("bench", "merge", "pods.log", "-o", "merged.json", "--json", cwd=tmp_path)
    assert merged.returncode == 0 and json.loads(merged.stdout)["points"][0]["label"] == "rate 100/s"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["bench", "run", "http://127.0.0.1:{free}", "-m", "echo"], 5, "cannot reach"),
        (["bench", "run", "{url}", "-m", "nosuch", "--mode", "seq"], 3, "not on the server"),
        (["bench", "run", "--config", "bad.yaml"], 2, "bad.yaml"),
        (["bench", "run", "{url}", "-m", "echo", "--slo", "p99<<1"], 2, "METRIC OP VALUE"),
        (["bench", "run", "ftp://x", "-m", "echo"], 2, "http:// or https://"),
        (["bench", "merge", "missing.json"], 3, "does not exist"),
        (["report", "bad.yaml"], 2, "no modelfleet bench result"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(
    server: RefServer, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text("target: http://x\nmodels: [{name: m}]\npoints: [{concurrency: 0}]\n")
    with refused_port() as free:
        filled = [a.format(free=free, url=server.url) for a in args]
        result = _cli(*filled, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_dry_run_and_render_job(server: RefServer, tmp_path: Path) -> None:
    dry = _cli(
        "bench",
        "run",
        server.url,
        "-m",
        "echo",
        "--rate",
        "1000,2000",
        "--duration-s",
        "30",
        "--slo",
        "p99<50ms",
        "--dry-run",
        cwd=tmp_path,
    )
    assert dry.returncode == 0
    (tmp_path / "bench.yaml").write_text(dry.stdout)
    assert yaml.safe_load(dry.stdout)["points"][1]["rate_per_s"] == 2000
    job = _cli(
        "bench",
        "render-job",
        "--config",
        "bench.yaml",
        "--pods",
        "4",
        "--image",
        "modelfleet:test",
        "--target",
        "http://models:8000",
        cwd=tmp_path,
    )
    assert job.returncode == 0, job.stderr
    config_map, manifest = yaml.safe_load_all(job.stdout)
    assert manifest["spec"]["parallelism"] == 4
    assert yaml.safe_load(config_map["data"]["pod-3.yaml"])["points"][0]["rate_per_s"] == 250


def test_flag_beats_environment_beats_spec_file(tmp_path: Path) -> None:
    """The CLI merges as the library does: only flags typed on the command line override the variables."""
    (tmp_path / "bench.yaml").write_text(
        "target: http://file:8000\nmodels: [{name: m}]\nprocs: 2\ntimeout_s: 5\nwarmup_s: 3\n"
        "points: [{concurrency: 2, duration_s: 4}]\n"
    )
    env = {
        **os.environ,
        "MODELFLEET_BENCH_PROCS": "3",
        "MODELFLEET_BENCH_TIMEOUT_S": "7",
        "MODELFLEET_BENCH_HEADERS": "Authorization: Bearer x\nX-Team: ml",
    }

    def dry(*args: str) -> dict[str, object]:
        result = subprocess.run(
            [*MODELFLEET, "bench", "run", "--config", "bench.yaml", *args, "--dry-run"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        spec: dict[str, object] = yaml.safe_load(result.stdout)
        return spec

    spec = dry("--procs", "4")
    assert (spec["procs"], spec["timeout_s"], spec["warmup_s"]) == (4, 7.0, 3.0)  # flag, env, file
    assert spec["headers"] == {"Authorization": "Bearer x", "X-Team": "ml"}
    assert spec["points"] == [
        {"concurrency": 2, "duration_s": 4.0, "ramp_s": 0.0}
    ]  # defaults do not override
    del env["MODELFLEET_BENCH_PROCS"]
    assert dry()["procs"] == 2
