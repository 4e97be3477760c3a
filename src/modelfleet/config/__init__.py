"""Pydantic specs for every command, and `load_spec` to read them from YAML."""

from modelfleet.config.base import SpecModel, load_spec, parse_spec
from modelfleet.config.serve import BatchingConfig, ModelConfig, ServerConfig, ServeSpec

__all__ = [
    "BatchingConfig",
    "ModelConfig",
    "ServeSpec",
    "ServerConfig",
    "SpecModel",
    "load_spec",
    "parse_spec",
]
