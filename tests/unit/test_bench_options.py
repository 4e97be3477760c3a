"""Flags, environment variables and YAML specs become one validated BenchSpec, with clear errors.

`BENCH_OPTIONS` is the one definition of every `bench run` option; the tests here keep the CLI,
the environment, the spec fields and the help texts from drifting apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from modelfleet.bench.options import spec_from_sources
from modelfleet.cli.bench import bench_app
from modelfleet.config.bench import BENCH_OPTIONS, ENV_PREFIX, BenchOption, BenchSpec, spec_field
from modelfleet.errors import InvalidInput, SpecError

# `bench run` parameters that are not run options: which spec file to read, where a running fleet
# is, and where and how the results are shown.
COMMAND_ONLY = {"config", "fleet", "state_dir", "output", "json_output", "quiet", "dry_run"}


def _run_params() -> dict[str, Any]:
    """The click parameters of `bench run` by name (typer's own click: typed loosely here)."""
    group: Any = typer.main.get_command(bench_app)
    return {param.name: param for param in group.commands["run"].params if param.name != "ctx"}


def test_rate_sweep_is_an_open_loop() -> None:
    spec = spec_from_sources(
        flags={
            "target": "http://h:8000",
            "models": ["a=3,b:2"],
            "rate": "100, 200",
            "duration_s": 5,
            "slo": "p99<10ms",
        }
    )
    assert spec.mode == "open" and spec.target == "http://h:8000"
    assert [(m.name, m.version, m.weight) for m in spec.models] == [("a", None, 3.0), ("b", "2", 1.0)]
    assert [(p.rate_per_s, p.duration_s) for p in spec.points] == [(100.0, 5.0), (200.0, 5.0)]


def test_defaults_closed_loop_of_one_for_ten_seconds() -> None:
    spec = spec_from_sources(flags={"target": "http://h", "models": ["m"]})
    assert spec.mode == "closed"
    assert [(p.concurrency, p.duration_s) for p in spec.points] == [(1, 10.0)]


def test_until_stable_points_have_no_stop_rule() -> None:
    spec = spec_from_sources(
        flags={"target": "http://h", "models": ["m"], "concurrency": "4", "until_stable": True}
    )
    assert spec.points[0].duration_s is None and spec.points[0].requests is None


def test_plain_http_endpoint_with_headers(tmp_path: Path) -> None:
    spec = spec_from_sources(
        flags={
            "target": "http://h/predict",
            "http": True,
            "body": '{"q": {{sample}}}',
            "headers": ["Authorization: Bearer x"],
            "rate": "5",
            "requests": 50,
        }
    )
    assert spec.protocol == "http" and spec.endpoints[0].url == "http://h/predict"
    assert spec.headers == {"Authorization": "Bearer x"}
    assert spec.points[0].requests == 50


def test_config_file_with_flag_overrides(tmp_path: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(
        "target: http://h:8000\nmodels: [{name: m}]\nmode: open\nsamples_file: samples.txt\n"
        "points: [{rate_per_s: 10, duration_s: 30}, {rate_per_s: 20, requests: 100}]\n"
    )
    spec = spec_from_sources(config, flags={"duration_s": 2, "procs": 2})
    assert [(p.rate_per_s, p.duration_s, p.requests) for p in spec.points] == [
        (10.0, 2.0, None),
        (20.0, 2.0, None),
    ]
    assert spec.procs == 2
    assert spec.samples_file == (tmp_path / "samples.txt").resolve()  # relative to the config file
    assert spec_from_sources(config).points[1].requests == 100


def test_models_file(tmp_path: Path) -> None:
    listing = tmp_path / "models.txt"
    listing.write_text("# fleet\nbert=2\n\nminilm:3\n")
    spec = spec_from_sources(flags={"target": "http://h", "models_file": listing, "mode": "seq"})
    assert [(m.name, m.version, m.weight) for m in spec.models] == [("bert", None, 2.0), ("minilm", "3", 1.0)]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"target": "http://h", "models": ["m"], "mode": "open"}, "needs --rate"),
        ({"target": "http://h", "models": ["m"], "mode": "rnd"}, "needs --requests"),
        ({"target": "http://h", "models": ["m"], "rate": "5", "concurrency": "2"}, "not both"),
        ({"target": "http://h", "models": ["m"], "rate": "-5"}, "positive"),
        ({"target": "http://h", "models": ["m"], "concurrency": "1.5"}, "whole number"),
        ({"target": "http://h", "models": ["m"], "headers": ["no-colon"]}, "NAME: VALUE"),
        ({"target": "http://h"}, "at least one model"),
        ({"target": "http://h", "models": ["m"], "mode": "seq", "rate": "3"}, "seq mode"),
        ({"http": True, "body": "{}"}, "give its URL"),
        ({"target": "http://h", "models": ["m"], "slo": "p99<<1"}, "METRIC OP VALUE"),
        ({"target": "http://h", "models": ["m"], "procs": "two"}, "--procs 'two' is not a int"),
        ({"target": "http://h", "models": ["m"], "procs": 1.5}, "--procs: 1.5 is not int"),
        ({"typo": 1}, "unknown bench options"),
    ],
)
def test_bad_options_are_bad_input(flags: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        spec_from_sources(flags=flags)


def test_malformed_config_is_a_spec_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "target: http://h\nmodels: [{name: m}]\npoints: [{concurrency: 1, duration_s: 1}]\ntypo_field: 3\n"
    )
    with pytest.raises(SpecError, match="typo_field"):
        spec_from_sources(config)


def test_precedence_flag_then_environment_then_file_then_default(tmp_path: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text("target: http://file:8000\nmodels: [{name: m}]\nprocs: 2\ntimeout_s: 5\n")
    env = {f"{ENV_PREFIX}PROCS": "3", f"{ENV_PREFIX}TARGET": "http://env:8000", "UNRELATED": "x"}
    both = spec_from_sources(config, flags={"procs": 4}, env=env)
    assert (both.procs, both.target, both.timeout_s) == (4, "http://env:8000", 5.0)  # flag, env, file
    assert spec_from_sources(config, env=env).procs == 3
    assert spec_from_sources(config).procs == 2
    assert spec_from_sources(flags={"target": "http://h", "models": ["m"]}).procs == 1  # the field default
    # a flag not given (None, False, an empty list) leaves the environment's value standing
    unset = spec_from_sources(config, flags={"procs": None, "insecure": False, "models": []}, env=env)
    assert (unset.procs, unset.verify_tls, [m.name for m in unset.models]) == (3, True, ["m"])


def test_environment_variables_hold_every_kind_of_option(tmp_path: Path) -> None:
    env = {
        f"{ENV_PREFIX}TARGET": "http://h:8000",
        f"{ENV_PREFIX}MODELS": "a=2,b c:3",  # whitespace or commas between models
        f"{ENV_PREFIX}HEADERS": "Authorization: Bearer x\nX-Team: ml",  # one header per line
        f"{ENV_PREFIX}RATE": "10,20",
        f"{ENV_PREFIX}DURATION_S": "2.5",
        f"{ENV_PREFIX}LATE_THRESHOLD_MS": "250",
        f"{ENV_PREFIX}INSECURE": "yes",
        f"{ENV_PREFIX}UNTIL_STABLE": "0",
        f"{ENV_PREFIX}REQUESTS_CSV": "requests.csv",
    }
    spec = spec_from_sources(env=env)
    assert [(m.name, m.version, m.weight) for m in spec.models] == [
        ("a", None, 2.0),
        ("b", None, 1.0),
        ("c", "3", 1.0),
    ]
    assert spec.headers == {"Authorization": "Bearer x", "X-Team": "ml"}
    assert [(p.rate_per_s, p.duration_s) for p in spec.points] == [(10.0, 2.5), (20.0, 2.5)]
    assert spec.late_send_threshold_s == pytest.approx(0.25) and spec.verify_tls is False
    assert spec.requests_csv == Path("requests.csv").resolve()  # relative to the working directory
    with pytest.raises(InvalidInput, match=f"{ENV_PREFIX}INSECURE 'maybe' is not a yes/no value"):
        spec_from_sources(env={**env, f"{ENV_PREFIX}INSECURE": "maybe"})


@pytest.mark.parametrize("option", BENCH_OPTIONS, ids=lambda o: o.key)
def test_every_flag_has_an_env_var_a_spec_key_and_the_field_description_as_help(option: BenchOption) -> None:
    field = spec_field(option.field)  # the spec key exists (KeyError/StopIteration otherwise)
    assert field.description and option.help.startswith(field.description)
    param = _run_params()[option.key]
    assert param.envvar == option.env == ENV_PREFIX + option.key.upper()
    assert getattr(param, "help", None) == option.help
    if option.flags:
        assert tuple(param.opts + param.secondary_opts) == option.flags
    if not option.shorthand:  # copied as it is onto a top-level field of the spec
        assert option.field in BenchSpec.model_fields
    default = spec_field(option.field).default  # shown by --help, in the flag's unit
    shown = option.show_default and option.kind is not bool and option.default is None
    if shown and isinstance(default, int | float | str):
        assert param.default == (default / option.scale if option.scale != 1.0 else default)


def test_bench_run_has_no_parameter_outside_the_one_definition() -> None:
    params = _run_params()
    assert set(params) - {option.key for option in BENCH_OPTIONS} == COMMAND_ONLY
    assert len({option.env for option in BENCH_OPTIONS}) == len(BENCH_OPTIONS)


def test_docs_list_every_option_with_its_variable_spec_key_and_default() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "bench.md").read_text(encoding="utf-8")
    missing = [row for row in _doc_rows() if row not in docs]
    assert not missing, "docs/bench.md options table is out of date; expected rows:\n" + "\n".join(
        _doc_rows()
    )


def _doc_rows() -> list[str]:
    rows = []
    for option in BENCH_OPTIONS:
        names = " ".join(f"`{flag}`" for flag in option.flags) or f"`{option.metavar}` (argument)"
        default = "–" if option.default_value is None else f"`{option.default_value}`"
        rows.append(f"| {names} | `{option.env}` | `{option.field}` | {default} | {option.help} |")
    return rows


def test_expected_point_time_for_the_progress_display() -> None:
    spec = spec_from_sources(
        flags={"target": "http://h", "models": ["m"], "concurrency": "1,2", "ramp_s": 2, "warmup_s": 1}
    )
    assert spec.expected_point_s() == [13.0, 13.0]  # ramp + warm-up + the default 10 s
    stable = spec_from_sources(flags={"target": "http://h", "models": ["m"], "until_stable": True})
    assert stable.expected_point_s() == [1.0 + 30 * 1.0]  # warm-up + max_windows x window_s
    counted = spec_from_sources(flags={"target": "http://h", "models": ["m"], "requests": 5})
    assert counted.expected_point_s() == [None]
