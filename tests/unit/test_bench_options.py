"""Command-line options and YAML specs become one validated BenchSpec, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.bench.options import RunOptions, spec_from_options
from modelfleet.errors import InvalidInput, SpecError


def test_rate_sweep_is_an_open_loop() -> None:
    spec = spec_from_options(
        RunOptions(url="http://h:8000", models=["a=3,b:2"], rates="100, 200", duration_s=5, slo="p99<10ms")
    )
    assert spec.mode == "open" and spec.target == "http://h:8000"
    assert [(m.name, m.version, m.weight) for m in spec.models] == [("a", None, 3.0), ("b", "2", 1.0)]
    assert [(p.rate_per_s, p.duration_s) for p in spec.points] == [(100.0, 5.0), (200.0, 5.0)]


def test_defaults_closed_loop_of_one_for_ten_seconds() -> None:
    spec = spec_from_options(RunOptions(url="http://h", models=["m"]))
    assert spec.mode == "closed"
    assert [(p.concurrency, p.duration_s) for p in spec.points] == [(1, 10.0)]


def test_until_stable_points_have_no_stop_rule() -> None:
    spec = spec_from_options(RunOptions(url="http://h", models=["m"], concurrencies="4", until_stable=True))
    assert spec.points[0].duration_s is None and spec.points[0].requests is None


def test_plain_http_endpoint_with_headers(tmp_path: Path) -> None:
    spec = spec_from_options(
        RunOptions(
            url="http://h/predict",
            http=True,
            body='{"q": {{sample}}}',
            headers=["Authorization: Bearer x"],
            rates="5",
            requests=50,
        )
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
    spec = spec_from_options(RunOptions(config=config, duration_s=2, procs=2))
    assert [(p.rate_per_s, p.duration_s, p.requests) for p in spec.points] == [
        (10.0, 2.0, None),
        (20.0, 2.0, None),
    ]
    assert spec.procs == 2
    assert spec.samples_file == (tmp_path / "samples.txt").resolve()  # relative to the config file
    assert spec_from_options(RunOptions(config=config)).points[1].requests == 100


def test_models_file(tmp_path: Path) -> None:
    listing = tmp_path / "models.txt"
    listing.write_text("# fleet\nbert=2\n\nminilm:3\n")
    spec = spec_from_options(RunOptions(url="http://h", models_file=listing, mode="seq"))
    assert [(m.name, m.version, m.weight) for m in spec.models] == [("bert", None, 2.0), ("minilm", "3", 1.0)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RunOptions(url="http://h", models=["m"], mode="open"), "needs --rate"),
        (RunOptions(url="http://h", models=["m"], mode="rnd"), "needs --requests"),
        (RunOptions(url="http://h", models=["m"], rates="5", concurrencies="2"), "not both"),
        (RunOptions(url="http://h", models=["m"], rates="-5"), "positive"),
        (RunOptions(url="http://h", models=["m"], concurrencies="1.5"), "whole number"),
        (RunOptions(url="http://h", models=["m"], headers=["no-colon"]), "NAME: VALUE"),
        (RunOptions(url="http://h"), "at least one model"),
        (RunOptions(url="http://h", models=["m"], mode="seq", rates="3"), "seq mode"),
        (RunOptions(http=True, body="{}"), "give its URL"),
    ],
)
def test_bad_options_are_bad_input(options: RunOptions, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        spec_from_options(options)


def test_malformed_config_is_a_spec_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "target: http://h\nmodels: [{name: m}]\npoints: [{concurrency: 1, duration_s: 1}]\ntypo_field: 3\n"
    )
    with pytest.raises(SpecError, match="typo_field"):
        spec_from_options(RunOptions(config=config))
