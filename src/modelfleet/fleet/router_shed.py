"""Why the router cannot place a request: one wording and one metric for its HTTP and gRPC sides."""

from __future__ import annotations

from modelfleet.fleet.router_metrics import SHED_OVERLOADED, SHED_SATURATED, SHED_WINDOW, RouterMetrics
from modelfleet.fleet.routing import RoutingTable, window_refusal


def no_replica(
    table: RoutingTable, metrics: RouterMetrics, model: str, after: str, now: float
) -> tuple[str, float | None]:
    """(the refusal's message, seconds until a held replica takes ``model`` again or None), counted in
    the shed metric by reason: every ready replica held, windowed or at its limit; or none ready.
    ``after`` is appended to the message (the failure that led here, or empty)."""
    held_s = table.hold_left_s(model, now)
    if held_s is not None:
        metrics.shed(model, SHED_OVERLOADED)
        message = (
            f"model {model!r} is overloaded: every ready replica refused it and asked for a retry; "
            f"retry after {held_s:.3f} s (router max_overload_hold_s)"
        )
        return message, held_s
    if table.windowed(model):
        metrics.shed(model, SHED_WINDOW)
        return window_refusal(model, after), None
    if table.ready_replicas(model) > 0:
        metrics.shed(model, SHED_SATURATED)
        message = (
            f"model {model!r}: every ready replica has its limit of requests in flight "
            f"(router max_in_flight_per_replica){after}; retry shortly"
        )
        return message, None
    return f"model {model!r}: no ready replica{after}; retry shortly", None
