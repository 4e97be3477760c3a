"""The chaos benchmark's own parts that judge or generate: its CLI, the exit-code table it reads from
docs/registry.md, and the hostile battery's cases (the issue's inputs, seeded and bounded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import _chaos_hostile  # noqa: E402
import _chaos_registry  # noqa: E402
import chaos  # noqa: E402


def test_cli_runs_every_scenario_by_default_and_refuses_unknown_ones() -> None:
    args = chaos.parse_args([])
    assert args.only == list(chaos.SCENARIOS) and not args.quick
    assert args.output == REPO / "benchmarks" / "results" / "chaos.md"
    args = chaos.parse_args(["--only", "kill", "--only", "registry", "--quick"])
    assert args.only == ["kill", "registry"] and args.quick
    with pytest.raises(SystemExit):
        chaos.parse_args(["--only", "everything"])


def test_the_registry_exit_code_table_is_read_from_the_docs() -> None:
    codes = _chaos_registry.documented_exit_codes(REPO / "docs" / "registry.md")
    assert {0, 2, 3, 4, 6, 10} <= set(codes)
    assert codes[10].startswith("internal error")


def test_the_battery_holds_the_issue_cases_and_generates_the_same_bounded_cases_per_seed() -> None:
    import random

    issue = _chaos_hostile.issue_cases("text", random_names=10, rng=random.Random(0))
    names = {case.name for case in issue}
    for expected in ("BYTES data [300000000]", "one 20 MB string", "100,000 empty strings", "16 MB header value",
                     "data [[1],2]", "shape [1,0,9223372036854775807]", "outputs[].parameters as a list",
                     "non-UTF-8 BYTES element", "model name of 100 KB", '[["a"], "b"] with shape [2]'):  # fmt: skip
        assert any(name.startswith(expected) for name in names), expected
    assert sum(case.name.startswith("random model name") for case in issue) == 10

    first = _chaos_hostile.generated_cases("text", 200, random.Random(7))
    again = _chaos_hostile.generated_cases("text", 200, random.Random(7))
    assert [(c.body, c.headers) for c in first] == [(c.body, c.headers) for c in again]
    assert len({c.body for c in first}) > 150  # varied, not one case repeated
    assert max(len(c.body) for c in first) < 64 * 1024
