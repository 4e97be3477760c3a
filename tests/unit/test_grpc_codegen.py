"""The committed gRPC code is what grpcio-tools makes of the committed .proto files, and it registers the
same descriptors as tritonclient's copy (so both load in one process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.protocol.grpc import generate


def test_committed_code_is_current(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    stale = [path.name for path in written if path.read_text() != (generate.HERE / path.name).read_text()]
    assert not stale, f"regenerate with `python -m modelfleet.protocol.grpc.generate`: {stale}"


def test_descriptors_match_tritonclient() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    from modelfleet.protocol.grpc import grpc_service_pb2, model_config_pb2

    assert grpc_service_pb2.DESCRIPTOR.serialized_pb == service_pb2.DESCRIPTOR.serialized_pb
    theirs = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    assert model_config_pb2.DESCRIPTOR.serialized_pb == theirs.DESCRIPTOR.serialized_pb
