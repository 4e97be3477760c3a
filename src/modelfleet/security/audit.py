"""Append-only JSON-lines audit log of admin actions and auth failures.

It must never hold a secret or a payload: field names that look secret (key, token, password, …) are
refused outright, and any string value that looks like an API key or a bearer credential is redacted.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

_FORBIDDEN_NAME = re.compile(
    r"(^|_)(key|api_key|apikey|token|password|passwd|secret|authorization|credentials?|payload|body|inputs?|data)$",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"mf_[a-z0-9]{8}_[A-Za-z0-9_-]{8,}|(?i:bearer)\s+\S+")
REDACTED = "[redacted]"
# The destination that means "this process's standard output" (a container's log stream).
STDOUT = "-"


class AuditLog:
    """``AuditLog(path).record("keys.create", key_id="ab12cd34", actor="ana")``: one JSON object per line.

    ``AuditLog("-")`` writes to standard output instead (what Kubernetes collects from a container).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.to_stdout = str(path) == STDOUT

    def record(self, event: str, **fields: object) -> None:
        for name in fields:
            if _FORBIDDEN_NAME.search(name):
                raise ValueError(
                    f"audit field {name!r} looks like a secret or a payload; audit logs never hold those"
                )
        entry: dict[str, object] = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        }
        entry["event"] = event
        entry.update({name: _redact(value) for name, value in fields.items()})
        line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
        if self.to_stdout:
            os.write(1, line)  # one write per line: lines up to PIPE_BUF never interleave with other output
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND with one write per line: concurrent writers (server workers, CLI) never interleave lines.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _redact(value: object) -> object:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _redact(v) for k, v in value.items()}
    return value
