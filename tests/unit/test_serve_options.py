"""serve_spec_from_sources: flag > variable > spec file > default, the registry default, errors that name the source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.support.linear_model import make_artifact

from modelfleet.config import SERVE_OPTIONS, registry_root, serve_spec_from_sources
from modelfleet.config.serve import DEFAULT_REGISTRY_ROOT
from modelfleet.errors import InvalidInput, NotFound, SpecError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return make_artifact(tmp_path / "linear")


@pytest.fixture
def spec_file(tmp_path: Path, artifact: Path) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "server: {port: 9000, host: 0.0.0.0}\n"
        "models:\n  - path: linear\n    batching: {max_batch_size: 8, max_delay_s: 0.01}\n",
        encoding="utf-8",
    )
    return path


def test_each_option_takes_the_flag_then_the_variable_then_the_file(spec_file: Path) -> None:
    assert serve_spec_from_sources(spec_file).server.port == 9000
    env = {"MODELFLEET_PORT": "9100", "MODELFLEET_WORKERS": "3"}
    from_env = serve_spec_from_sources(spec_file, env=env)
    assert (from_env.server.port, from_env.server.workers) == (9100, 3)
    from_flag = serve_spec_from_sources(spec_file, flags={"port": 9200}, env=env)
    assert (from_flag.server.port, from_flag.server.workers, from_flag.server.host) == (9200, 3, "0.0.0.0")


def test_without_a_file_the_field_defaults_apply(artifact: Path) -> None:
    spec = serve_spec_from_sources(models=[artifact])
    assert (spec.server.host, spec.server.port, spec.server.workers) == ("127.0.0.1", 8000, 1)
    assert spec.models[0].path == artifact.resolve()
    assert spec.models[0].batching.max_batch_size == 32


def test_flags_are_parsed_from_text_like_variables(artifact: Path) -> None:
    spec = serve_spec_from_sources(models=[artifact], flags={"port": "0", "max_delay_s": "0"})
    assert spec.server.port == 0 and spec.models[0].batching.max_delay_s == 0.0


def test_batching_options_apply_to_every_model_and_keep_the_rest(spec_file: Path, artifact: Path) -> None:
    spec = serve_spec_from_sources(spec_file, models=[artifact], flags={"max_batch_size": 4})
    assert [m.batching.max_batch_size for m in spec.models] == [4, 4]
    assert [m.batching.max_delay_s for m in spec.models] == [0.01, 0.002]  # the file's stays the file's


def test_a_false_switch_is_a_value_and_an_empty_variable_is_unset(artifact: Path) -> None:
    off = serve_spec_from_sources(models=[artifact], flags={"dispatch_when_idle": False})
    assert off.models[0].batching.dispatch_when_idle is False
    env_off = serve_spec_from_sources(models=[artifact], env={"MODELFLEET_DISPATCH_WHEN_IDLE": "no"})
    assert env_off.models[0].batching.dispatch_when_idle is False
    unset = serve_spec_from_sources(models=[artifact], env={"MODELFLEET_DISPATCH_WHEN_IDLE": ""})
    assert unset.models[0].batching.dispatch_when_idle is True


def test_the_audit_log_dash_means_stdout(artifact: Path) -> None:
    spec = serve_spec_from_sources(models=[artifact], env={"MODELFLEET_AUDIT_LOG": "-"})
    assert str(spec.auth.audit_log) == "-"


def test_registry_references_find_the_default_registry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = serve_spec_from_sources(refs=["emb@production"])
    assert spec.models[0].ref == "emb@production"
    assert spec.registry.root == tmp_path / ".modelfleet" / "registry"
    from_env = serve_spec_from_sources(refs=["emb"], env={"MODELFLEET_REGISTRY": str(tmp_path / "env")})
    assert from_env.registry.root == tmp_path / "env"
    from_flag = serve_spec_from_sources(
        refs=["emb"],
        flags={"registry": tmp_path / "flag"},
        env={"MODELFLEET_REGISTRY": str(tmp_path / "env")},
    )
    assert from_flag.registry.root == tmp_path / "flag"


def test_the_files_registry_wins_over_the_default_only(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("registry: {root: store}\nmodels:\n  - ref: emb@production\n", encoding="utf-8")
    assert serve_spec_from_sources(path).registry.root == tmp_path / "store"
    env = {"MODELFLEET_REGISTRY": str(tmp_path / "env")}
    assert serve_spec_from_sources(path, env=env).registry.root == tmp_path / "env"


def test_the_registry_option_is_ignored_without_a_registry_model(artifact: Path, tmp_path: Path) -> None:
    # A variable exported for the registry commands must not make every `serve --model` open a registry.
    spec = serve_spec_from_sources(models=[artifact], env={"MODELFLEET_REGISTRY": str(tmp_path / "none")})
    assert spec.registry.root is None


def test_registry_root_takes_the_argument_then_the_variable_then_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"MODELFLEET_REGISTRY": "~/env"}
    assert registry_root(Path("~/given"), env) == tmp_path / "given"
    assert registry_root(None, env) == tmp_path / "env"
    assert (
        registry_root(None, {}) == DEFAULT_REGISTRY_ROOT.expanduser() == tmp_path / ".modelfleet" / "registry"
    )
    monkeypatch.setenv("MODELFLEET_REGISTRY", str(tmp_path / "process"))
    assert registry_root() == tmp_path / "process"


def test_nothing_to_serve_says_how_to_give_models() -> None:
    with pytest.raises(InvalidInput, match=r"--spec FILE.*--model.*--ref"):
        serve_spec_from_sources()


def test_bad_options_name_their_source(artifact: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown serve options \\['prot'\\]"):
        serve_spec_from_sources(models=[artifact], flags={"prot": 1})
    with pytest.raises(InvalidInput, match="MODELFLEET_PORT 'abc' is not a int number"):
        serve_spec_from_sources(models=[artifact], env={"MODELFLEET_PORT": "abc"})
    with pytest.raises(InvalidInput, match=r"--workers: 2\.5 is not int"):
        serve_spec_from_sources(models=[artifact], flags={"workers": 2.5})
    with pytest.raises(SpecError, match=r"command line: models\.0\.batching\.max_batch_size"):
        serve_spec_from_sources(models=[artifact], flags={"max_batch_size": 0})
    with pytest.raises(SpecError, match=r"server\.port"):
        serve_spec_from_sources(models=[artifact], env={"MODELFLEET_PORT": "70000"})


def test_a_missing_artifact_fails_before_anything_is_served(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"manifest\.json is missing"):
        serve_spec_from_sources(models=[tmp_path / "nothing-here"])


def test_every_option_has_its_fields_description_and_a_documented_variable() -> None:
    documented = set(re.findall(r"`(MODELFLEET_[A-Z_]+)`", DOCS.read_text(encoding="utf-8")))
    for option in SERVE_OPTIONS:
        assert option.help.startswith(option.spec_field.description or "?"), option.key
        assert option.env in documented, f"{option.env} is not in docs/serve.md"
    assert "MODELFLEET_SERVE_SPEC" in documented
