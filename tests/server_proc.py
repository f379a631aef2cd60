"""The tests' server starter: :mod:`server.launcher` (shared with bench/ and the soak)."""

from server.launcher import VLLM_SERVER, ServerProcess, free_port, metric_value

__all__ = ["VLLM_SERVER", "ServerProcess", "free_port", "metric_value"]
