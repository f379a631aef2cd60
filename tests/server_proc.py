"""The tests' server starter: :mod:`server.launcher` (shared with bench/ and the soak)."""

from server.launcher import ServerProcess, free_port, metric_value

__all__ = ["ServerProcess", "free_port", "metric_value"]
