"""Watching a deployed detector: its captured traffic against the evaluation it was gated on (docs/monitoring.md)."""
