"""The README's commands exist and its library example runs as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main"]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    """`modelfleet GROUP [SUBCOMMAND]` of every command line in the README's bash blocks."""
    found: set[tuple[str, ...]] = set()
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line.startswith("modelfleet "):
                continue
            words = [w for w in shlex.split(line)[1:] if not w.startswith("-")]
            found.add(tuple(words[:2]))
    return [list(words) for words in sorted(found)]


def test_readme_opens_with_the_two_commands() -> None:
    first_block = _blocks("bash")[0]
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")


@pytest.mark.parametrize("words", _commands(), ids=" ".join)
def test_every_readme_command_exists(words: list[str]) -> None:
    # A subcommand position may hold an argument (a path): fall back to the group's help.
    result = subprocess.run([*MODELFLEET, *words, "--help"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        result = subprocess.run([*MODELFLEET, words[0], "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_library_example_runs(tmp_path: Path) -> None:
    example = next(block for block in _blocks("python") if "build_artifact" in block)
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    cosine, serve, fleet, rule, secure_endpoint, points = result.stdout.strip().splitlines()[-6:]
    assert float(cosine) >= 0.98  # the int8 build's min cosine similarity
    assert (tmp_path / "registry").is_dir()
    assert serve == "all-MiniLM-L6-v2@production registry 0"  # the serve merge: refs, --registry, --port
    assert fleet.startswith("['minilm'] ['auth is on without auth.keys_file")  # plan and its warnings
    assert rule.startswith(  # the first alert rule: errors burning the budget 14.4x over 1 h and 5 min
        '(sum(rate(modelfleet_router_requests_total{fleet="demo",model="minilm",code=~"5.."}[1h]))'
    ) and rule.endswith("[5m]))) > 0.144")
    assert secure_endpoint == "NONE"  # the review of the spec: auth on by default, checked in its manifests
    assert points == "[1, 4]"  # the bench merge: a sweep of two closed-loop points
