"""Link health: the pure circuit breaker, probe timing, and one report per failed attempt."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from firmware.config import HostConfig
from firmware.core import link
from firmware.core.iso import Identity
from firmware.core.link import LinkHealth, LinkPolicy
from firmware.errors import HostUnreachableError
from firmware.runtime.hostlink import HostLink
from firmware.runtime.linkmonitor import LinkMonitor

POLICY = LinkPolicy(down_after=3, probe_base=5.0, probe_cap=120.0)


def test_breaker_goes_degraded_then_down_and_up_on_success() -> None:
    h = LinkHealth()
    h = link.record(h, False, POLICY)
    assert h.state == link.DEGRADED
    h = link.record(link.record(h, False, POLICY), False, POLICY)
    assert h.state == link.DOWN and h.probes == 0
    h = link.record(h, False, POLICY)  # a failed probe
    assert h.state == link.DOWN and h.probes == 1
    assert link.record(h, True, POLICY) == LinkHealth()


def test_probe_delay_grows_is_capped_and_offset_per_terminal() -> None:
    down = LinkHealth(state=link.DOWN, failures=9, probes=10)
    assert link.probe_delay(down, POLICY, draw=0.999999, offset=0.0) == pytest.approx(120.0,
                                                                                    rel=1e-3)
    first = LinkHealth(state=link.DOWN, failures=3, probes=0)
    assert link.probe_delay(first, POLICY, draw=0.5, offset=1.0) == pytest.approx(3.5)
    offsets = {link.terminal_offset(f"T{n:07d}", 5.0) for n in range(200)}
    assert all(0 <= o < 5.0 for o in offsets) and len(offsets) == 200
    assert link.terminal_offset("TERM0001", 5.0) == link.terminal_offset("TERM0001 ", 5.0)
    no_jitter = LinkPolicy(jitter=False)
    assert link.probe_delay(first, no_jitter, draw=0.1, offset=3.0) == 5.0


def _resetting_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.setblocking(False)
    return srv, srv.getsockname()[1]


def test_each_refused_attempt_is_reported_once() -> None:
    async def scenario() -> LinkMonitor:
        srv, port = _resetting_server()
        loop = asyncio.get_running_loop()

        async def reset_all() -> None:
            while True:
                conn, _ = await loop.sock_accept(srv)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

        acceptor = asyncio.create_task(reset_all())
        hl = HostLink(HostConfig(host="127.0.0.1", port=port, tls=False, response_timeout=1.0),
                      Identity("TERM0001", "M", "978"), lambda: "000001")
        monitor = LinkMonitor(POLICY, "TERM0001", hl.ensure_connected)
        hl.listeners.append(monitor.report)
        for _ in range(2):
            with pytest.raises(HostUnreachableError):
                await hl.ensure_connected()
            await asyncio.sleep(0.05)
        acceptor.cancel()
        srv.close()
        return monitor

    monitor = asyncio.run(scenario())
    assert monitor.health.failures == 2 and monitor.state == link.DEGRADED
