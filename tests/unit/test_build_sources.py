"""Source detection, fingerprints, names and text-model settings (no model loading)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.support.fresh_process import loaded_modules

from modelfleet.build import BUNDLED_MODEL_NAME, BUNDLED_SOURCE, bundled_model_dir
from modelfleet.build.huggingface import read_text_settings
from modelfleet.build.sources import hash_source, resolve_source, safe_name
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.manifest import sha256_file


def test_bundled_source_resolves_to_the_installed_model_folder() -> None:
    resolved = resolve_source(BUNDLED_SOURCE)
    assert resolved.kind == "huggingface"
    assert resolved.path == bundled_model_dir()
    assert (resolved.path / "config.json").is_file()
    assert (resolved.path / "tokenizer.json").is_file()
    assert resolved.default_name == BUNDLED_MODEL_NAME
    assert "site-packages" in str(resolved.path) or "dist-packages" in str(resolved.path)


def test_unknown_bundled_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="bundled model is bundled:all-MiniLM-L6-v2"):
        resolve_source("bundled:bert-large")


def test_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        resolve_source(tmp_path / "nope.onnx")


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"without config\.json"):
        resolve_source(tmp_path)


@pytest.mark.parametrize(
    ("filename", "kind", "file_format", "name"),
    [
        ("classifier.skops", "sklearn", "skops", "classifier"),
        ("old model.pkl", "sklearn", "pickle", "old-model"),
        ("m.joblib", "sklearn", "pickle", "m"),
        ("resnet.onnx", "onnx", None, "resnet"),
    ],
)
def test_file_sources_are_recognised_by_suffix(
    tmp_path: Path, filename: str, kind: str, file_format: str | None, name: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(b"x")
    resolved = resolve_source(path)
    assert (resolved.kind, resolved.sklearn_format, resolved.default_name) == (kind, file_format, name)


@pytest.mark.parametrize(
    ("filename", "content", "kind"),
    [
        ("model.json", b'{"learner":{"attributes":{},"feature_names":[]},"version":[3,2,0]}', "xgboost"),
        ("model.bin", b'  {\n  "learner": {}}', "xgboost"),
        ("model.ubj", b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner{", "xgboost"),
        ("model.ubj", b"{i\x07learner{", "xgboost"),
        ("model.txt", b"tree\nversion=v4\nnum_class=1\n", "lightgbm"),
        ("booster.lgb", b"tree\r\nversion=v4\r\n", "lightgbm"),
    ],
)
def test_tree_models_are_recognised_by_content(
    tmp_path: Path, filename: str, content: bytes, kind: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    resolved = resolve_source(path)
    assert (resolved.kind, resolved.default_name) == (kind, path.stem)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("config.json", b'{"architectures": ["BertModel"], "learner": 1}'),
        ("notes.txt", b"trees\nversion=1"),
        ("empty.json", b""),
        ("model.ubj", b"{i\x07learned{"),
    ],
)
def test_files_that_only_look_like_tree_models_are_refused(
    tmp_path: Path, filename: str, content: bytes
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=r"an XGBoost model .*, a LightGBM text model .*TorchScript"):
        resolve_source(path)


def test_model_onnx_inside_an_artifact_is_named_after_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "minilm-fp32" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"x")
    assert resolve_source(path).default_name == "minilm-fp32"


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"x")
    with pytest.raises(InvalidInput, match="cannot tell what kind of model"):
        resolve_source(path)


@pytest.mark.parametrize(("text", "name"), [("My Model (v2)", "My-Model-v2"), ("_x", "x"), ("...", "model")])
def test_safe_name(text: str, name: str) -> None:
    assert safe_name(text) == name


def test_hash_of_a_file_is_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "a.onnx"
    path.write_bytes(b"hello")
    assert hash_source(path) == sha256_file(path)


def test_hash_of_a_folder_covers_content_and_names_but_not_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"1234")
    first = hash_source(tmp_path)
    (tmp_path / ".gitattributes").write_text("ignored")
    assert hash_source(tmp_path) == first
    (tmp_path / "sub" / "w.bin").write_bytes(b"1235")
    changed = hash_source(tmp_path)
    assert changed != first
    (tmp_path / "sub" / "w.bin").rename(tmp_path / "sub" / "v.bin")
    assert hash_source(tmp_path) not in (first, changed)


def test_bundled_text_settings() -> None:
    settings = read_text_settings(bundled_model_dir())
    assert settings.pooling == "mean"
    assert settings.max_length_tokens == 256
    assert settings.is_sentence_transformers


def _sentence_transformers_folder(tmp_path: Path, pooling: dict[str, bool], modules: list[str]) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 128}))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    entries = [
        {"idx": i, "path": "1_Pooling" if "Pooling" in m else "", "type": m} for i, m in enumerate(modules)
    ]
    (tmp_path / "modules.json").write_text(json.dumps(entries))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    return tmp_path


def test_cls_pooling_and_position_limit_are_read(tmp_path: Path) -> None:
    folder = _sentence_transformers_folder(
        tmp_path,
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
        ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"],
    )
    settings = read_text_settings(folder)
    assert settings.pooling == "cls"
    assert settings.max_length_tokens == 128  # capped by max_position_embeddings


def test_unsupported_pooling_is_refused(tmp_path: Path) -> None:
    folder = _sentence_transformers_folder(
        tmp_path,
        {"pooling_mode_max_tokens": True},
        ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"],
    )
    with pytest.raises(InvalidInput, match="pooling_mode_max_tokens"):
        read_text_settings(folder)


def test_unsupported_sentence_transformers_module_is_refused(tmp_path: Path) -> None:
    folder = _sentence_transformers_folder(
        tmp_path, {"pooling_mode_mean_tokens": True}, ["sentence_transformers.models.Dense"]
    )
    with pytest.raises(InvalidInput, match="Dense"):
        read_text_settings(folder)


def test_importing_the_build_package_does_not_import_heavy_frameworks() -> None:
    loaded = loaded_modules("import modelfleet.build, modelfleet.cli.build")
    assert loaded.isdisjoint({"torch", "transformers", "skl2onnx", "skops", "onnx", "sklearn"})


def test_torchscript_is_recognised_by_content_whatever_the_suffix(
    torch_sources: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "exported.bin"
    renamed.write_bytes((torch_sources / "mlp.pt").read_bytes())
    for path in (torch_sources / "mlp.pt", renamed):
        resolved = resolve_source(path)
        assert (resolved.kind, resolved.torch_callable, resolved.default_name) == ("torch", None, path.stem)


def test_a_torch_save_pickle_is_refused_with_how_to_make_torchscript(
    torch_sources: Path, tmp_path: Path
) -> None:
    old_format = tmp_path / "legacy.pth"
    old_format.write_bytes(b"\x80\x02}q\x00.")  # a bare pickle, as torch.save wrote before zip files
    for path in (torch_sources / "pickled.pt", old_format):
        with pytest.raises(
            InvalidInput, match=r"not a TorchScript file .* torch\.jit\.save\(torch\.jit\.script"
        ):
            resolve_source(path)


def test_module_function_is_found_without_importing_it(tmp_path: Path) -> None:
    package = tmp_path / "src" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('imported the package')\n")
    (package / "models.py").write_text("raise SystemExit('imported the module')\n")
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        resolved = resolve_source("mypkg.models:make_model")
    finally:
        sys.path.remove(str(tmp_path / "src"))
    assert resolved.kind == "torch" and resolved.path == (package / "models.py").resolve()
    assert resolved.torch_callable is not None and resolved.torch_callable.function == "make_model"
    assert resolved.default_name == "models" and "mypkg" not in sys.modules
    by_file = resolve_source(f"{package / 'models.py'}:build")
    assert (by_file.path, by_file.default_name) == ((package / "models.py").resolve(), "models")
    assert by_file.torch_callable is not None and by_file.torch_callable.describe() == "models.py:build"


def test_module_function_of_a_missing_module_or_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="not on the search path"):
        resolve_source("no_such_package.models:make_model")
    with pytest.raises(NotFound, match="does not exist"):
        resolve_source(f"{tmp_path / 'gone.py'}:make_model")
