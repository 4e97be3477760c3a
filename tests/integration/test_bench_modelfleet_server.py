"""`modelfleet bench` against a real `modelfleet serve` process: targets from its serve spec, bodies from metadata."""

from __future__ import annotations

from pathlib import Path

import yaml
from tests.support.servers import serve

from modelfleet.bench import run_bench
from modelfleet.config.bench import BenchSpec


def test_bench_a_real_server_from_its_serve_spec(tmp_path: Path, iris_artifact: Path) -> None:
    with serve(["--model", str(iris_artifact)], tmp_path) as server:
        spec_path = tmp_path / "serve.yaml"
        spec_path.write_text(
            yaml.safe_dump({"server": {"port": server.port}, "models": [{"path": str(iris_artifact)}]})
        )
        smoke = run_bench(BenchSpec(serve_spec=spec_path, mode="seq", repeat=3))
        load = run_bench(
            BenchSpec.model_validate(
                {
                    "serve_spec": str(spec_path),
                    "mode": "closed",
                    "points": [{"concurrency": 2, "duration_s": 1.0}],
                    "warmup_s": 0.3,
                    "window_s": 0.5,
                    "slo": "error_rate<0.1%",
                }
            )
        )
    assert smoke.run.models[0].name == "iris" and smoke.run.models[0].versions
    assert [(e.name, e.sent, e.ok) for e in smoke.points[0].endpoints] == [("iris", 3, 3)]
    point = load.points[0]
    assert point.errors == {} and point.ok == point.sent > 20
    assert load.slo is not None and load.slo.passed
