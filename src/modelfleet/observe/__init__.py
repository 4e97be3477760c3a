"""Seeing what a server or fleet does: OpenTelemetry traces (tracing.py) and the live dashboard (ui.py)."""
