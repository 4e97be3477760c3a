"""What a fresh interpreter has imported after running some code: how import-time promises are tested
(serving never imports torch; a server process never imports scipy before a drift check)."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_modules(code: str) -> set[str]:
    """Every module in `sys.modules` of a new `python -c` process once `code` has run (SystemExit included)."""
    script = (
        "import json, sys\n"
        f"try:\n    exec({code!r})\nexcept SystemExit:\n    pass\n"
        "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout.rsplit("\nMODULES ", 1)[1]))
