"""The decision draws of sampled budget decisions: one uniform per (seed, position).

Below the minimum, a sampled request's end attempt happens with the model's own
probability of the attempt tokens (the s1 rule for sampling). The draw that
decides it is counter-based (splitmix64 of the request's decision seed and the
output position), so a seeded request decides the same way however the batch
around it changes, after preemption, and on every tensor-parallel rank. Pure
Python (numpy for the vectorised block), no vLLM or torch.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1


def uniform_bits(seed: int, position: int) -> int:
    """53 random bits that depend only on (seed, position): a uniform draw times 2**53.

    Counter-based (splitmix64), so a seeded request decides the same way however
    the batch around it changes, after preemption, and on every tensor-parallel
    rank. An integer, so it travels to the device exactly.
    """
    z = (seed * 0x9E3779B97F4A7C15 + (position + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return z >> 11


def uniform_bits_block(seed: int, start: int, count: int) -> list[int]:
    """``[uniform_bits(seed, p) for p in range(start, start + count)]``, vectorised
    (numpy's uint64 arithmetic wraps modulo 2**64, as the masks above do)."""
    import numpy as np

    with np.errstate(over="ignore"):
        pos = np.arange(start + 1, start + count + 1, dtype=np.uint64)
        z = np.uint64((seed * 0x9E3779B97F4A7C15) & _MASK64) + pos * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).tolist()
