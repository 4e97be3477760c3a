"""One error tree for the whole package.

Each class carries the HTTP status a server answers with and the exit code the CLI returns, so
every layer raises the same errors and only the edges (HTTP routes, CLI) translate them.

CLI exit codes (documented in the README):
  0 success · 1 a gate failed (SLO, verification) · 2 bad input or spec · 3 not found ·
  4 integrity or verification failure · 5 unavailable, overloaded or timed out ·
  6 conflict · 7 unauthorized or forbidden · 8 a retraining hook failed · 10 internal error
"""

from __future__ import annotations


class ModelfleetError(Exception):
    http_status: int = 500
    exit_code: int = 10

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(ModelfleetError):
    """Malformed request, wrong shape or datatype, bad CLI argument."""

    http_status = 400
    exit_code = 2


class SpecError(InvalidInput):
    """A spec file that does not parse or validate."""


class PayloadTooLarge(InvalidInput):
    http_status = 413


class NotFound(ModelfleetError):
    http_status = 404
    exit_code = 3


class IntegrityError(ModelfleetError):
    """A file whose hash, signature or content does not match what was recorded."""

    http_status = 500
    exit_code = 4


class VerificationFailed(IntegrityError):
    """A built artifact whose outputs disagree with the source framework."""

    http_status = 422


class GateFailed(ModelfleetError):
    """A quality gate (an SLO) was not met. Not a malfunction: the run worked and the answer is no."""

    http_status = 422
    exit_code = 1


class Unavailable(ModelfleetError):
    """Overloaded, not ready, or unreachable. Clients may retry after ``retry_after_s``."""

    http_status = 503
    exit_code = 5

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ModelfleetError):
    http_status = 504
    exit_code = 5


class HookFailed(ModelfleetError):
    """A retraining hook exited non-zero or wrote no model source; nothing was registered or promoted."""

    http_status = 422
    exit_code = 8

    def __init__(self, message: str, hook_exit: int | None = None) -> None:
        super().__init__(message)
        self.hook_exit = hook_exit  # the hook's own exit status, when it ran to an end


class Conflict(ModelfleetError):
    http_status = 409
    exit_code = 6


class Unauthorized(ModelfleetError):
    http_status = 401
    exit_code = 7


class Forbidden(ModelfleetError):
    http_status = 403
    exit_code = 7


class StorageError(Unavailable):
    """The disk is full or read-only: nothing was written, and retrying once there is room may work."""
