"""Model runtimes: load an artifact, run a batch. No HTTP, no asyncio."""

from modelfleet.runtime.base import Model
from modelfleet.runtime.loader import load_model

__all__ = ["Model", "load_model"]
