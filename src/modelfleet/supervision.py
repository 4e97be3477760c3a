"""One restart policy for every supervisor: a server's worker pool and the local fleet's supervisor.

After a process exits, `RestartPolicy.after_exit` says how long to wait before starting it again, or
to give up. The wait doubles with each failure in a row, from `initial_s` up to `max_s`; a process
that stayed ready for `stable_after_s` before it exited starts the count again, so a crash once a day
waits `initial_s`, not the cap. It is a pure function of (exit code, uptime, failures so far).

Giving up: an exit code of an error that a restart cannot mend (a bad spec, a model that is not there,
a file that fails its hash: `PERMANENT_ERRORS` of the error tree) means the next start fails the
same way. A server's worker pool gives up on one and exits with that code, so whoever supervises the
server (Kubernetes, the fleet supervisor) sees the cause. The fleet supervisor is the last one up: it
uses `backoff` alone and keeps retrying at the capped wait, the way Kubernetes restarts a crashing
pod, so one broken model never stops the fleet's other servers, and `fleet status` shows the process
in back-off with its last exit.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet.errors import IntegrityError, InvalidInput, ModelfleetError, NotFound

# Errors whose cause is on disk or in the spec, not in the process: starting again fails the same way.
PERMANENT_ERRORS: tuple[type[ModelfleetError], ...] = (InvalidInput, NotFound, IntegrityError)
PERMANENT_EXIT_CODES = frozenset(error.exit_code for error in PERMANENT_ERRORS)


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the process again after `delay_s`; `failures` (this exit included) goes into the next call."""

    delay_s: float
    failures: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Do not restart: the process failed with a permanent error, and its exit code says which."""

    exit_code: int


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    stable_after_s: float = 60.0

    def __post_init__(self) -> None:
        # A zero wait would restart a crashing process in a tight loop. (initial_s above max_s is
        # allowed, as in the fleet spec: every wait is then max_s.)
        if min(self.initial_s, self.max_s, self.stable_after_s) <= 0:
            raise ValueError(f"a restart policy needs positive times, got {self}")

    def backoff(self, uptime_s: float, failures: int) -> Restart:
        """The wait after an exit, whatever its cause.

        `uptime_s`: how long the process was ready before it exited (0 if it never was); `failures`:
        exits in a row before this one, as returned by the previous call (0 for the first).
        """
        if uptime_s >= self.stable_after_s:
            failures = 0
        # The exponent is capped: 2**failures of a process failing for days would overflow a float.
        delay_s = min(self.max_s, self.initial_s * 2 ** min(failures, 64))
        return Restart(delay_s=delay_s, failures=failures + 1)

    def after_exit(self, exit_code: int | None, uptime_s: float, failures: int) -> Restart | GiveUp:
        """`backoff`, unless `exit_code` (None: killed by a signal) is one of `PERMANENT_EXIT_CODES`."""
        if exit_code is not None and exit_code in PERMANENT_EXIT_CODES:
            return GiveUp(exit_code)
        return self.backoff(uptime_s, failures)
