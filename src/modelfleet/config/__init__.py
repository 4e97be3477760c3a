"""Pydantic specs for every command, and `load_spec` to read them from YAML."""

from modelfleet.config.base import SpecModel, load_spec, parse_spec
from modelfleet.config.serve import BatchingConfig, ModelConfig, ServerConfig, ServeSpec, registry_root
from modelfleet.config.serve_options import SERVE_OPTIONS, serve_spec_from_sources

__all__ = [
    "SERVE_OPTIONS",
    "BatchingConfig",
    "ModelConfig",
    "ServeSpec",
    "ServerConfig",
    "SpecModel",
    "load_spec",
    "parse_spec",
    "registry_root",
    "serve_spec_from_sources",
]
