"""Regenerate the Python code of the committed .proto files: ``python -m modelfleet.protocol.grpc.generate``.

grpcio-tools (a test dependency, pinned: its protoc decides the bytes) writes `*_pb2.py`, `*_pb2.pyi`
and `*_pb2_grpc.py`; their flat imports (`import model_config_pb2`) become package imports here, as
tritonclient does for its own copy. tests/unit/test_grpc_codegen.py regenerates into a temporary
folder and fails when the committed code is not what this writes.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from modelfleet.errors import InvalidInput

HERE = Path(__file__).resolve().parent
PROTOS = ("grpc_service.proto", "model_config.proto")
PACKAGE = "modelfleet.protocol.grpc"
# Files protoc writes that carry code (model_config.proto has no service: its _grpc file is empty).
GENERATED = (
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "grpc_service_pb2_grpc.py",
    "model_config_pb2.py",
    "model_config_pb2.pyi",
)
_FLAT_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.M)


def generate(out_dir: Path, proto_dir: Path = HERE) -> list[Path]:
    """Compile the protos of `proto_dir` into `out_dir`; returns the files written."""
    from grpc_tools import protoc  # a build-time tool, not a runtime dependency

    with tempfile.TemporaryDirectory() as raw_dir:
        args = [
            "protoc",
            f"-I{proto_dir}",
            f"--python_out={raw_dir}",
            f"--pyi_out={raw_dir}",
            f"--grpc_python_out={raw_dir}",
            *(str(proto_dir / name) for name in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise InvalidInput(f"protoc failed on {proto_dir}")
        written = []
        for name in GENERATED:
            text = (Path(raw_dir) / name).read_text()
            target = out_dir / name
            target.write_text(_FLAT_IMPORT.sub(rf"from {PACKAGE} import \1 as \2", text))
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
