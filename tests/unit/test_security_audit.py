"""The audit log: JSON lines, append-only, and never a secret or payload."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from modelfleet.security.audit import REDACTED, AuditLog


def test_records_are_json_lines_with_time_and_event(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    log.record("keys.create", actor="ana", key_id="ab12cd34", scopes=["read"])
    log.record("registry.promote", actor="ben", model="iris", to_version=2)
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [entry["event"] for entry in lines] == ["keys.create", "registry.promote"]
    assert lines[0]["key_id"] == "ab12cd34" and lines[1]["to_version"] == 2
    assert all(entry["at"].endswith("Z") for entry in lines)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "field", ["key", "api_key", "token", "password", "secret", "authorization", "payload", "inputs", "body"]
)
def test_secret_looking_field_names_are_refused(tmp_path: Path, field: str) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="never hold"):
        log.record("x", **{field: "value"})
    assert not log.path.exists()


def test_key_like_values_are_redacted_wherever_they_hide(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    key = "mf_ab12cd34_" + "Z" * 43
    log.record("x", reason=f"user pasted {key} by mistake", notes=["Bearer abc.def", {"inner": key}])
    text = log.path.read_text()
    assert key not in text and "abc.def" not in text
    assert text.count(REDACTED) == 3
