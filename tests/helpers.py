"""Constants and small helpers shared by several test modules (test modules import from
here, never from each other)."""

from __future__ import annotations

# The columns of the published simplescaling/s1K dataset, in its order: what the "s1k"
# export layout must reproduce (an oracle of the tests, not used by the exporter).
S1K_COLUMNS = ("question", "solution", "cot_type", "source_type", "metadata", "cot",
               "thinking_trajectories", "attempt")
