"""`image context`: a build folder with Dockerfile, source and verified artifacts; the Dockerfile's promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.support.linear_model import make_artifact

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import Conflict, IntegrityError
from modelfleet.fleet.image_context import assemble_image_context, find_source_root
from modelfleet.kubeobjects import RUN_AS_ID
from modelfleet.manifest import sha256_file

ROOT = Path(__file__).resolve().parents[2]


def _spec(artifact: Path) -> FleetSpec:
    return parse_spec(
        {
            "name": "demo",
            "models": [
                {"name": "lin", "path": str(artifact)},
                {"name": "reg", "ref": "reg@prod", "memory_mib": 10},
            ],
        },
        FleetSpec,
    )


def test_context_holds_dockerfile_source_and_verified_models(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "artifact", "linear")
    out = tmp_path / "ctx"
    context = assemble_image_context(_spec(artifact), out)
    assert (out / "Dockerfile").read_bytes() == (ROOT / "Dockerfile").read_bytes()
    assert (out / "app" / "pyproject.toml").is_file()
    assert (out / "app" / "src" / "modelfleet" / "fleet" / "router.py").is_file()
    assert not list(out.rglob("__pycache__"))
    assert sha256_file(out / "models" / "lin" / "model.onnx") == sha256_file(artifact / "model.onnx")
    assert context.skipped_refs == ["reg"]
    assert set(context.models) == {"lin"}
    recorded = json.loads((out / "context.json").read_text())
    assert recorded["files"]["models/lin/model.onnx"] == sha256_file(artifact / "model.onnx")
    assert recorded["files"]["Dockerfile"] == sha256_file(out / "Dockerfile")


def test_corrupt_artifact_never_reaches_the_context(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "artifact", "linear")
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (artifact / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.onnx is corrupt"):
        assemble_image_context(_spec(artifact), tmp_path / "ctx")


def test_non_empty_output_needs_force(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "artifact", "linear")
    out = tmp_path / "ctx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(Conflict, match="--force"):
        assemble_image_context(_spec(artifact), out)
    assert (out / "keep.txt").read_text() == "mine"
    assemble_image_context(_spec(artifact), out, force=True)
    assert not (out / "keep.txt").exists()


def test_source_root_is_this_checkout() -> None:
    assert find_source_root() == ROOT


def test_dockerfile_is_multi_stage_non_root_pinned_and_torch_free() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) == 2 and " AS build" in froms[0] and " AS runtime" in froms[1]
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None and re.fullmatch(r"python:3\.11[\w.-]*(@sha256:[0-9a-f]{64})?", base.group(1))
    assert "latest" not in base.group(1)
    user = [line for line in instructions if line.startswith("USER ")]
    assert user and user[-1] == f"USER {RUN_AS_ID}:{RUN_AS_ID}"  # the user every rendered pod runs as
    assert instructions.index(user[-1]) > max(
        i for i, line in enumerate(instructions) if line.startswith("RUN ")
    )
    assert not any(line.startswith("HEALTHCHECK") for line in instructions)
    assert 'ENTRYPOINT ["modelfleet", "serve"]' in instructions
    assert "torch" not in " ".join(instructions) and "[export" not in text
