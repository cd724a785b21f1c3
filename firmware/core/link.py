"""Link health: a circuit breaker over the host link, pure.

UP      every recent exchange worked.
DEGRADED some consecutive failures (connect failures, timeouts, busy answers),
        fewer than `down_after`; sales still go online.
DOWN    `down_after` consecutive failures: sales go straight to the offline
        rules, and the runtime probes the host (connect + sign-on) on full-jitter
        backoff plus a per-terminal offset derived from the terminal id, so a
        fleet does not reconnect at the same instant after an outage.
Any success makes it UP again.

A refused TLS identity (wrong CA, wrong host name, old protocol) is not a busy
host: it is a configuration error or an attack. It puts the link DOWN at once,
marked `untrusted`, so sales go to the offline rules without retrying, and the
screens say HOST NOT TRUSTED; probes go on as for any DOWN link.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from firmware.core.backoff import ceiling, full_jitter

UP, DEGRADED, DOWN = "UP", "DEGRADED", "DOWN"


@dataclass(frozen=True)
class LinkPolicy:
    down_after: int = 3
    probe_base: float = 5.0
    probe_cap: float = 120.0
    jitter: bool = True  # False only to measure what a fleet without jitter does


@dataclass(frozen=True)
class LinkHealth:
    state: str = UP
    failures: int = 0
    probes: int = 0  # probes made since the link went down
    untrusted: bool = False  # the last failure was a refused TLS identity


def record(health: LinkHealth, ok: bool, policy: LinkPolicy, *,
           untrusted: bool = False) -> LinkHealth:
    if ok:
        return LinkHealth()
    failures = health.failures + 1
    if untrusted:
        failures = max(failures, policy.down_after)
    state = DOWN if failures >= policy.down_after else DEGRADED
    probes = health.probes + 1 if health.state == DOWN else 0
    return replace(health, state=state, failures=failures, probes=probes,
                   untrusted=untrusted)


def terminal_offset(terminal_id: str, base: float) -> float:
    """A stable offset in [0, base) from the terminal id: spreads a fleet's probes."""
    digest = hashlib.sha256(terminal_id.strip().encode()).digest()
    return base * int.from_bytes(digest[:4], "big") / 2**32


def probe_delay(health: LinkHealth, policy: LinkPolicy, *, draw: float, offset: float) -> float:
    """Seconds to wait before the next probe while DOWN; `draw` uniform in [0, 1)."""
    if not policy.jitter:
        return ceiling(health.probes, policy.probe_base, policy.probe_cap)
    return offset + full_jitter(health.probes, policy.probe_base, policy.probe_cap, draw)
