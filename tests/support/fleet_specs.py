"""Fleet spec files for local-fleet tests (`modelfleet fleet up` on this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_fleet_spec(path: Path, artifacts: dict[str, Path], **overrides: Any) -> Path:
    """A fleet spec for local tests: free router port, fast health checks and back-off."""
    spec: dict[str, Any] = {
        "name": "testfleet",
        "models": [
            {"name": name, "path": str(artifact), "warmup_runs": 1} for name, artifact in artifacts.items()
        ],
        "pools": [{"name": "cpu", "replicas": 1, "resources": {"memory_mib": 1024}}],
        "router": {"port": 0, "health_interval_s": 0.2},
        "auth": {"enabled": False},
        "local": {
            "health_interval_s": 0.2,
            "restart_backoff_initial_s": 0.2,
            "restart_backoff_max_s": 2.0,
            "stop_grace_s": 5.0,
            "startup_timeout_s": 60.0,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path
