"""Full-jitter exponential backoff, pure: the caller brings the random draw."""

from __future__ import annotations


def ceiling(attempt: int, base: float, cap: float) -> float:
    """The upper bound of the wait before repeat number `attempt` (0-based)."""
    return float(min(cap, base * (2 ** min(attempt, 32))))


def full_jitter(attempt: int, base: float, cap: float, draw: float) -> float:
    """Wait uniformly in [0, ceiling): `draw` is a uniform random number in [0, 1)."""
    return draw * ceiling(attempt, base, cap)
