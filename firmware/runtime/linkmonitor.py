"""The link monitor: runs the circuit breaker of core/link.py against the real link.

It hears every connect/sign-on result (HostLink listeners) and every sale's
outcome (timeouts and busy answers count as failures). While the link is DOWN it
probes — connect and sign on — after `probe_delay`; while UP and idle for
`echo_interval` seconds it sends an echo test (0800, 70=301). Each change of
state is reported through `on_change` (the display's offline indicator and the
"online" LED follow it).

While DEGRADED with no connection (right after start-up with the host away, or
after a refused connection) it probes too, so that an unreachable host shows as
OFFLINE before the first customer rather than at the first sale. A refused TLS
identity is reported apart (`untrusted`): the link goes DOWN at once.

A connection lost (`lost`: the host closed it, it broke, a protocol error), idle or
not, is followed at once by a connection attempt (host-interface.md section 1), so the
link state on the glass is never older than an attempt. Until the attempt ends the
glass keeps what it showed; its outcome is reported like any attempt's: signed on
again, nothing changes (a drop with the host still accepting shows nothing); refused
or unanswered, the link is DEGRADED (BANK SLOW) and the probes' backoff and jitter
take over from there, to DOWN (OFFLINE) after `down_after` failures, and to the
modem path where one is configured (Paths, Failover). Only one attempt in
`probe_base` seconds is made at once: a host that drops every connection right after
its sign-on is probed on the backoff like a DEGRADED link, not in a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

from firmware.core import link as health
from firmware.core.link import LinkHealth, LinkPolicy
from firmware.errors import HostError, HostUnreachableError
from firmware.runtime import failpoints

log = logging.getLogger("posterm.link")


class LinkMonitor:
    def __init__(self, policy: LinkPolicy, terminal_id: str,
                 probe: Callable[[], Awaitable[object]],
                 on_change: Callable[[str], None] = lambda state: None, *,
                 echo: Callable[[], Awaitable[object]] | None = None,
                 idle_seconds: Callable[[], float] | None = None,
                 echo_interval: float = 60.0, rng: random.Random | None = None,
                 connected: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.health = LinkHealth()
        self.offset = health.terminal_offset(terminal_id, policy.probe_base)
        self.probe, self.echo, self.on_change = probe, echo, on_change
        self.idle_seconds = idle_seconds
        self.echo_interval = echo_interval
        self.rng = rng or random.Random()
        self.connected = connected
        self.clock = clock
        self._wake = asyncio.Event()
        self._lost = False  # a connection was lost: attempt a new one, at once if allowed
        self._at_once = -math.inf  # when the last attempt at once was made
        self.reconnects = 0  # attempts made at once after a loss (for tests and status)

    @property
    def state(self) -> str:
        return self.health.state

    def report(self, ok: bool, reason: str = "", *, untrusted: bool = False) -> None:
        before, was_untrusted = self.health.state, self.health.untrusted
        self.health = health.record(self.health, ok, self.policy, untrusted=untrusted)
        if self.health.state != before or self.health.untrusted != was_untrusted:
            level = logging.INFO if self.health.state == health.UP else logging.WARNING
            if self.health.untrusted:
                level = logging.ERROR
            log.log(level, "host link %s -> %s%s%s", before, self.health.state,
                    " (HOST NOT TRUSTED)" if self.health.untrusted else "",
                    f" ({reason})" if reason and not ok else "")
            self.on_change(self.health.state)
            self._wake.set()

    def lost(self, why: str = "") -> None:
        """The connection ended without the terminal closing it (HostLink's lost_listeners;
        HostLink has logged why)."""
        self._lost = True
        self._wake.set()

    def _should_probe(self) -> bool:
        if self.health.state == health.DOWN:
            return True
        if self.connected():
            self._lost = False
            return False
        return self._lost or self.health.state == health.DEGRADED

    def next_probe_in(self) -> float:
        return health.probe_delay(self.health, self.policy, draw=self.rng.random(),
                                  offset=self.offset)

    def _delay(self) -> float:
        """At once after a loss while nothing else has failed (at most once a probe_base),
        otherwise the probes' backoff."""
        now = self.clock()
        if self._lost and self.health.state == health.UP \
                and now - self._at_once >= self.policy.probe_base:
            self._at_once = now
            self.reconnects += 1
            log.info("reconnecting to the host at once (the connection was lost)")
            return 0.0
        return self.next_probe_in()

    async def run(self) -> None:
        while True:
            if self._should_probe():
                delay = self._delay()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self._should_probe():
                    continue
                self._lost = False
                failpoints.hit("link_probe")
                try:
                    await self.probe()
                except HostError as exc:  # the probe's own listener reports the failure
                    log.debug("probe failed: %s", exc)
                continue
            self._wake.clear()
            wait = self.echo_interval
            if self.echo is not None and self.idle_seconds is not None:
                idle = self.idle_seconds()
                if idle >= self.echo_interval:
                    failpoints.hit("link_probe")
                    try:
                        await self.echo()
                        self.report(True)
                    except HostUnreachableError:
                        pass  # the link's own listener has reported this failure
                    except HostError as exc:
                        self.report(False, f"echo test failed: {exc}")
                    continue
                wait = self.echo_interval - idle
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, wait))
            except asyncio.TimeoutError:
                pass

