"""modelfleet: serve many ML models fast, load-test them honestly, pick the cheapest hardware."""

__version__ = "0.1.0"
