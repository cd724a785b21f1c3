"""Fleet reconnect benchmark: how hard does a fleet hit the host after an outage?

One process, one asyncio loop. Every terminal is a real LinkMonitor whose probe is
a real HostLink.ensure_connected() (TCP connect + 0800/0810 sign-on) against a
counting host on 127.0.0.1 that records the time of every connection it accepts.
The whole fleet signs on; the host goes down (open connections are reset, new
ones are accepted and reset at once); each terminal's next sales or echoes fail
until its breaker is DOWN, then only its monitor probes, on its backoff; after the
outage the host serves again and the run ends when every terminal is UP. It runs
twice: with jitter (full jitter plus the per-terminal offset of host-interface.md
section 6) and without (every terminal waits the same ceiling).

Time is scaled 1:10 throughout: probe base 0.5 s and cap 12 s stand for the
production 5 s and 120 s, so a 1 s window here is a 10 s window in production and
a 100 ms window here is 1 s. Connect and response timeouts keep production values
(they guard against a silent host; this one always answers or resets at once).

    python bench/fleet.py [--terminals N] [--outage S] [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import resource
import socket
import struct
import sys
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

import iso8583
from iso8583.specs import default as SPEC

from firmware.config import HostConfig
from firmware.core.iso import Identity
from firmware.core.link import DOWN, UP, LinkPolicy
from firmware.errors import HostError
from firmware.runtime.hostlink import HostLink
from firmware.runtime.linkmonitor import LinkMonitor

log = logging.getLogger("posterm.bench.fleet")

SCALE = 10.0  # one bench second stands for ten production seconds
PROBE_BASE, PROBE_CAP = 5.0 / SCALE, 120.0 / SCALE
DETECT_SPREAD = 5.0 / SCALE  # gap between a till's sales/echoes once the link is lost
FDS_PER_TERMINAL = 2  # the terminal's socket and the host's end of it
FD_RESERVE = 200


# -- the counting host ---------------------------------------------------------------
def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with SO_LINGER 0: the peer gets a reset, not an orderly close."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


class CountingHost:
    """Answers 0800 with 0810 while up; while down accepts and resets. Counts accepts."""

    def __init__(self) -> None:
        self.up = True
        self.attempts: list[float] = []
        self.open: set[asyncio.Transport] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self, backlog: int) -> int:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _HostProtocol(self), "127.0.0.1", 0, backlog=backlog)
        return int(self.server.sockets[0].getsockname()[1])

    def go_down(self) -> None:
        self.up = False
        for transport in list(self.open):
            _reset(transport)
        self.open.clear()


class _HostProtocol(asyncio.Protocol):
    def __init__(self, host: CountingHost) -> None:
        self.host, self.buffer = host, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.host.attempts.append(time.monotonic())
        if not self.host.up:
            _reset(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.host.open.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.host.open.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2 and self.transport is not None:
            size = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + size:
                return
            payload, self.buffer = self.buffer[2:2 + size], self.buffer[2 + size:]
            try:
                doc, _ = iso8583.decode(payload, SPEC)
            except iso8583.DecodeError:
                _reset(self.transport)
                return
            if doc.get("t") == "0800":
                answer = {"t": "0810", "39": "00"}
                answer.update({k: doc[k] for k in ("7", "11", "41", "70") if k in doc})
                raw, _ = iso8583.encode(answer, SPEC)
                self.transport.write(len(raw).to_bytes(2, "big") + bytes(raw))


# -- the fleet -----------------------------------------------------------------------
@dataclass
class Fleet:
    """Who is not UP, who has been DOWN, and the failure reports the links made."""
    not_up: set[str] = field(default_factory=set)
    went_down: set[str] = field(default_factory=set)
    last_change: float = 0.0
    host_back: bool = False
    failures: int = 0
    late_failures: int = 0

    def on_change(self, tid: str) -> Callable[[str], None]:
        def changed(state: str) -> None:
            self.last_change = time.monotonic()
            (self.not_up.discard if state == UP else self.not_up.add)(tid)
            if state == DOWN:
                self.went_down.add(tid)
        return changed

    def on_attempt(self, ok: bool, reason: str) -> None:
        if not ok:
            self.failures += 1
            self.late_failures += self.host_back


@dataclass
class Terminal:
    tid: str
    link: HostLink
    monitor: LinkMonitor


def make_terminal(n: int, port: int, policy: LinkPolicy, fleet: Fleet, seed: int) -> Terminal:
    """A terminal wired as the firmware wires it: every link attempt drives the breaker."""
    tid = f"T{n:07d}"
    stans = itertools.count(1)
    cfg = HostConfig(host="127.0.0.1", port=port, tls=False, connect_timeout=5.0,
                     response_timeout=5.0)
    link = HostLink(cfg, Identity(tid, "BENCHMERCHANT01", "978"),
                    lambda: f"{next(stans) % 999999 + 1:06d}")
    monitor = LinkMonitor(policy, tid, link.ensure_connected, fleet.on_change(tid),
                          rng=random.Random(f"{seed}/{tid}"))
    link.listeners.append(lambda ok, reason: monitor.report(ok, reason))
    link.lost_listeners.append(monitor.lost)  # a loss: a connection attempt at once
    link.listeners.append(fleet.on_attempt)
    return Terminal(tid, link, monitor)


async def notice_outage(t: Terminal, rng: random.Random) -> None:
    """The till's sales and echoes after the loss: each reconnects and fails, until DOWN."""
    while t.monitor.state != DOWN:
        await asyncio.sleep(rng.uniform(0.0, DETECT_SPREAD))
        if t.monitor.state == DOWN:
            break
        try:
            await t.link.ensure_connected()
        except HostError as exc:
            log.debug("%s: %s", t.tid, exc)


@dataclass
class Result:
    jitter: bool
    terminals: int
    outage: float
    attempts: list[float]  # monotonic accept times at the host, sorted
    down_at: float
    up_at: float
    all_down_after: float | None
    all_up_after: float | None
    failures: int
    late_failures: int


async def scenario(n: int, outage: float, jitter: bool, seed: int) -> Result:
    policy = LinkPolicy(probe_base=PROBE_BASE, probe_cap=PROBE_CAP, jitter=jitter)
    host, fleet = CountingHost(), Fleet()
    port = await host.start(backlog=max(128, n))
    terminals = [make_terminal(i, port, policy, fleet, seed) for i in range(n)]
    gate = asyncio.Semaphore(100)

    async def sign_on(t: Terminal) -> None:
        async with gate:
            await t.link.ensure_connected()
    await asyncio.gather(*(sign_on(t) for t in terminals))
    if not all(t.link.connected and t.monitor.state == UP for t in terminals):
        raise RuntimeError("not every terminal signed on before the outage")
    tasks = [asyncio.create_task(t.monitor.run()) for t in terminals]

    down_at = time.monotonic()
    host.go_down()
    tasks += [asyncio.create_task(notice_outage(t, random.Random(f"{seed}/till/{t.tid}")))
              for t in terminals]
    await asyncio.sleep(outage)
    all_down_after = fleet.last_change - down_at if len(fleet.went_down) == n else None
    host.up = fleet.host_back = True
    up_at = time.monotonic()
    deadline = up_at + 4 * PROBE_CAP + 10.0
    while fleet.not_up and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    all_up_after = None if fleet.not_up else fleet.last_change - up_at

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(t.link.close() for t in terminals), return_exceptions=True)
    host.go_down()
    if host.server is not None:
        host.server.close()
    return Result(jitter, n, outage, sorted(host.attempts), down_at, up_at, all_down_after,
                  all_up_after, fleet.failures, fleet.late_failures)


# -- figures -------------------------------------------------------------------------
def count(times: list[float], start: float, end: float) -> int:
    return bisect_left(times, end) - bisect_left(times, start)


def peak(times: list[float], start: float, end: float, window: float) -> int:
    """Most attempts in [start, end) within any `window` s, sliding in 100 ms steps."""
    steps = range(max(1, int((end - start) / 0.1) + 1))
    return max(count(times, max(start, s), min(end, s + window))
               for s in (start + k * 0.1 for k in steps))


def _secs(value: float | None, scale: float = 1.0, missing: str = "never") -> str:
    return missing if value is None else f"{value * scale:.{0 if scale > 1 else 2}f}"


def figures(r: Result) -> list[tuple[str, str]]:
    end = r.up_at + (r.all_up_after if r.all_up_after is not None else 4 * PROBE_CAP)
    probing = r.down_at + (r.all_down_after or 0.0)  # fleet DOWN: only probes from here
    phases = [("whole run", r.down_at, end), ("probing", probing, r.up_at),
              ("recovery", r.up_at, end)]
    refused = count(r.attempts, r.down_at, r.up_at)
    rows = [("terminals", str(r.terminals)), ("outage (s)", f"{r.outage:g}"),
            ("whole fleet DOWN after (s)", _secs(r.all_down_after, missing="not all")),
            ("attempts, total", str(count(r.attempts, r.down_at, end))),
            ("attempts, while host down", str(refused)),
            ("attempts, after host back", str(count(r.attempts, r.up_at, end)))]
    prod = [(f"PRODUCTION SCALE (x{SCALE:g})", ""), ("  outage (s)", f"{r.outage * SCALE:g}")]
    for name, a, b in phases:
        p1, p01 = peak(r.attempts, a, b, 1.0), peak(r.attempts, a, b, 0.1)
        rows += [(f"peak per 1 s, {name}", str(p1)), (f"peak per 100 ms, {name}", str(p01))]
        prod += [(f"  peak per 10 s, {name}", str(p1)), (f"  peak per 1 s, {name}", str(p01))]
    rows += [("whole fleet UP again after (s)", _secs(r.all_up_after)),
             ("failed sign-ons after host back", str(r.late_failures)),
             ("failure reports per refused attempt",
              f"{(r.failures - r.late_failures) / max(1, refused):.2f}")]
    return rows + prod + [("  whole fleet UP again after (s)", _secs(r.all_up_after, SCALE))]


def table(results: list[Result]) -> str:
    cols = [figures(r) for r in results]
    heads = ["jitter + offset" if r.jitter else "no jitter" for r in results]
    lines = [f"{'':38}" + "".join(f"{h:>17}" for h in heads)]
    for i, (key, _) in enumerate(cols[0]):
        lines.append(f"{key:38}" + "".join(f"{c[i][1]:>17}" for c in cols))
    return "\n".join(lines)


def raise_fd_limit(wanted: int) -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


NOTES = f"""
An attempt is a TCP connection the host accepted. "probing" runs from the moment
the whole fleet is DOWN until the host is back; "recovery" from then until every
terminal is UP. Terminals notice the outage through their next sales or echoes,
{DETECT_SPREAD:g} s apart at most; {LinkPolicy().down_after} failure reports take a \
terminal DOWN.
Without jitter the bursts are capped by how fast this one process can connect; a
real fleet would land them closer together."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fleet reconnect benchmark (time scaled 1:10).")
    ap.add_argument("--terminals", type=int, help="fleet size (default 1000, quick 200)")
    ap.add_argument("--outage", type=float, help="outage in bench seconds (20, quick 6)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 terminals, 6 s outage")
    ap.add_argument("--seed", type=int, default=1, help="seed of every terminal's random draws")
    args = ap.parse_args(argv)
    n = args.terminals if args.terminals is not None else (200 if args.quick else 1000)
    outage = args.outage if args.outage is not None else (6.0 if args.quick else 20.0)
    if n < 1 or outage <= 0:
        ap.error("--terminals and --outage must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("posterm").setLevel(logging.ERROR)  # thousands of expected failures

    limit = raise_fd_limit(n * FDS_PER_TERMINAL + FD_RESERVE)
    fit = (limit - FD_RESERVE) // FDS_PER_TERMINAL
    if fit < 1:
        print(f"the open-file hard limit ({limit}) is too low to run any terminal")
        return 1
    if fit < n:
        print(f"the open-file hard limit is {limit}: enough for {fit} terminals, not {n}; "
              f"running with {fit} (raise the hard limit to run the full fleet)")
        n = fit

    print(f"fleet reconnect benchmark: {n} terminals, {outage:g} s outage; time scaled "
          f"1:{SCALE:g}: probe base {PROBE_BASE:g} s and cap {PROBE_CAP:g} s stand for "
          f"{PROBE_BASE * SCALE:g} s and {PROBE_CAP * SCALE:g} s", flush=True)
    results = []
    for jitter in (True, False):
        started = time.monotonic()
        results.append(asyncio.run(scenario(n, outage, jitter, args.seed)))
        print(f"  run {'with' if jitter else 'without'} jitter took "
              f"{time.monotonic() - started:.1f} s", flush=True)
    print("\n" + table(results) + "\n" + NOTES)
    if any(r.all_up_after is None for r in results):
        print("FAILED: some terminals were not UP again before the deadline")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
