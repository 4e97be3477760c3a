"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt at the next bytecode the main thread runs, wherever that is. In a probe of
8 Ctrl-Cs sent to `modelfleet build` while it wrote, one landed inside a library object's `__del__`
(regex's pattern cleanup), where Python prints the exception and drops it: the build went on, wrote its
output and exited 0. The handler installed here also records the interrupt, so a commit point (the rename
that publishes a build or a bundle) refuses after a swallowed KeyboardInterrupt, and the CLI exits 130
whatever the command then returned. A library user who never calls `install` sees no change.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_requested = False


def install() -> None:
    """Route SIGINT through this module, in the main thread, unless it is ignored or someone else's."""
    global _requested
    _requested = False
    if threading.current_thread() is not threading.main_thread():
        return
    # SIG_IGN: a job started in the background by a shell, which must stay deaf to the terminal's Ctrl-C.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def requested() -> bool:
    """Whether Ctrl-C came since `install`, even if its KeyboardInterrupt was swallowed on the way."""
    return _requested


def check() -> None:
    """Raise KeyboardInterrupt now if Ctrl-C came: call it just before publishing anything."""
    if _requested:
        raise KeyboardInterrupt
