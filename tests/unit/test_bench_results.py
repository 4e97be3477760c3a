"""Results files: versioned JSON, atomic writes, pod logs, and exact merges of many generators."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from tests.support.bench_results import SETTINGS, synthetic_point, synthetic_result

from modelfleet.bench import merge_results, read_result, read_results, stats, write_result
from modelfleet.bench.merge import merge_point_raws
from modelfleet.errors import InvalidInput, NotFound


def test_write_and_read_round_trip_with_normal_permissions(tmp_path: Path) -> None:
    result = synthetic_result([synthetic_point(0, [5.0] * 300)], slo="p99<10ms")
    path = tmp_path / "out" / "r.json"
    write_result(result, path)
    assert read_result(path) == result
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "modelfleet.bench.result"
    assert data["points"][0]["summary"]["latency"]["p50_ms"] == pytest.approx(5.0, rel=0.001)
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_a_pod_log_with_several_result_lines_reads_as_several_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for run_id in ("a", "b"):
        write_result(synthetic_result([synthetic_point(0, [5.0] * 10)], run_id=run_id), "-")
    log = tmp_path / "pods.log"
    log.write_text("starting generator\n" + capsys.readouterr().out + "warning: something on stderr\n")
    assert [r.run.id for r in read_results(log)] == ["a", "b"]
    with pytest.raises(InvalidInput, match="holds 2 results"):
        read_result(log)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_result(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(InvalidInput, match="no modelfleet bench result"):
        read_result(tmp_path / "other.json")
    document = json.loads(synthetic_result([synthetic_point(0, [5.0])]).to_json_bytes())
    document["schema_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(document))
    with pytest.raises(InvalidInput, match="schema version 99"):
        read_result(tmp_path / "future.json")
    document["schema_version"] = 1
    document["points"][0]["sent"] = "many"
    (tmp_path / "broken.json").write_text(json.dumps(document))
    with pytest.raises(InvalidInput, match=r"points\.0\.sent"):
        read_result(tmp_path / "broken.json")


def test_merging_generators_is_exact() -> None:
    first = [1.0 + i % 50 for i in range(2000)]
    second = [100.0 + i % 7 for i in range(1000)]
    merged = merge_point_raws([synthetic_point(0, first), synthetic_point(0, second, rate_per_s=50.0)])
    alone = synthetic_point(0, first + second)
    assert merged.ok == 3000 and merged.sent == 3000
    assert merged.target_rate_per_s == 150.0 and merged.label == "rate 150/s"
    merged_hist, alone_hist = stats.decode(merged.corrected), stats.decode(alone.corrected)
    assert merged_hist.get_total_count() == alone_hist.get_total_count()
    for percentile in (50, 90, 99, 99.9, 100):
        assert merged_hist.get_value_at_percentile(percentile) == alone_hist.get_value_at_percentile(
            percentile
        )
    # windows merge by index: the first has 100 + 50 requests
    assert merged.windows[0].ok == 150 and len(merged.windows) == 20


def test_merge_results_recomputes_summaries_and_gates() -> None:
    a = synthetic_result([synthetic_point(0, [10.0] * 1000)], slo="p99<50ms", run_id="a")
    b = synthetic_result([synthetic_point(0, [80.0] * 1000)], slo="p99<50ms", run_id="b")
    merged = merge_results([a, b])
    assert merged.run.sources == ["a", "b"] and merged.run.generators == 2
    summary = merged.points[0].summary
    assert summary is not None
    assert summary.throughput_per_s == pytest.approx(200.0)
    assert summary.latency.p50_ms == pytest.approx(10.0, rel=0.001)
    assert summary.latency.p99_ms == pytest.approx(80.0, rel=0.001)
    assert merged.slo is not None and not merged.slo.passed  # gates carried over from the inputs
    assert merge_results([a, b], gates=[]).slo is None


def test_merge_refuses_different_settings_or_plans() -> None:
    a = synthetic_result([synthetic_point(0, [10.0] * 10)])
    b = synthetic_result([synthetic_point(0, [10.0] * 10)])
    b.settings = SETTINGS.model_copy(update={"window_s": 2.0})
    with pytest.raises(InvalidInput, match="different settings"):
        merge_results([a, b])
    c = synthetic_result([synthetic_point(0, [10.0] * 10), synthetic_point(1, [10.0] * 10)])
    with pytest.raises(InvalidInput, match="does not match"):
        merge_results([a, c])
    with pytest.raises(InvalidInput):
        merge_results([])
