"""Helpers every command group shares: consoles, JSON output, error translation."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# stdout carries results (human tables or --json); stderr carries progress and errors.
console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
