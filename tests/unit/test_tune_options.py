"""The tune spec from a file and flags: flags win, paths resolve against the file, bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.errors import InvalidInput, SpecError
from modelfleet.tune.options import tune_spec_from_sources

NO_FLAGS: dict[str, object] = {}


def test_flags_override_the_file_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    spec_file = tmp_path / "tune.yaml"
    spec_file.write_text("artifacts: [art]\nslo: p99<80ms\ntarget_rate_per_s: 100\nmax_trials: 9\n")
    spec = tune_spec_from_sources(spec_file, NO_FLAGS)
    assert (
        spec.artifacts == [(tmp_path / "art").resolve()] and spec.slo == "p99<80ms" and spec.max_trials == 9
    )
    flagged = tune_spec_from_sources(
        spec_file, {"slo": "p99<20ms", "cpus": "1,2", "max_time_s": 60.0, "max_trials": None}
    )
    assert flagged.slo == "p99<20ms" and [h.cpus for h in flagged.hardware] == [1, 2]
    assert flagged.max_time_s == 60 and flagged.max_trials == 9


def test_missing_and_bad_values_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--model ARTIFACT_DIR"):
        tune_spec_from_sources(None, {"target_rate_per_s": 10.0})
    with pytest.raises(InvalidInput, match="--target-rate"):
        tune_spec_from_sources(None, {"artifacts": [tmp_path]})
    with pytest.raises(InvalidInput, match="--cpus 'two'"):
        tune_spec_from_sources(None, {"artifacts": [tmp_path], "target_rate_per_s": 10.0, "cpus": "two"})
    with pytest.raises(SpecError, match="headroom"):
        spec_file = tmp_path / "t.yaml"
        spec_file.write_text("artifacts: [a]\ntarget_rate_per_s: 10\nheadroom: 1.5\n")
        tune_spec_from_sources(spec_file, NO_FLAGS)
    with pytest.raises(SpecError, match="min_rate_per_s <= start_rate_per_s"):
        spec_file = tmp_path / "u.yaml"
        spec_file.write_text(
            "artifacts: [a]\ntarget_rate_per_s: 10\ncapacity: {start_rate_per_s: 1, min_rate_per_s: 5}\n"
        )
        tune_spec_from_sources(spec_file, NO_FLAGS)
