"""The README's tuning example runs as written and prints what it says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tune_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "modelfleet.tune" in block)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    mapping, figures = out.getvalue().strip().splitlines()
    assert mapping == "['c7i.large', 'c7i.large']"
    assert figures == "0.0992 6"
