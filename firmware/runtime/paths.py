"""Two paths to the host: the primary network (Ethernet or Wi-Fi) and the 4G modem.

`HostLink` keeps one connection at a time; `Paths` decides which path a new
connection takes and opens it:

- Normally the primary path is tried first and the modem only when the primary
  cannot connect (refused, unreachable, no answer within the connect timeout, or
  a TLS failure). Both carry the same framed ISO 8583 under the same TLS context
  (the modem's byte stream goes through `ssl.MemoryBIO`, see drivers/modem.py),
  and every new connection signs on, whichever path it took.
- Once the primary has failed, or the link monitor declared the link DOWN while
  on the primary, the modem is tried first ("failover") and the primary is
  probed in the background (a TCP connect, plus the TLS handshake when TLS is
  configured, then closed; no ISO 8583 traffic). When it has answered every
  probe for `failback_after` seconds, the link goes back to it ("failback") —
  but only when nothing is outstanding on the modem connection and no sale is in
  flight: a request is never moved between paths. A request whose answer is lost
  with its path is an unknown outcome like any other: reversed, on whichever path
  works next.
- `ModemKeeper` brings the modem up in the background (the terminal is ready
  without it), reads registration and signal every `poll_interval`, power-cycles
  a module that stops answering, and reports the path, the signal bars and one
  status line (`PathChanged`), and a modem fault as a standing condition.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from firmware.config import ModemConfig
from firmware.core.backoff import full_jitter
from firmware.core.events import ConditionChanged, Event, PathChanged
from firmware.errors import HostError
from firmware.runtime.supervisor import Wake

log = logging.getLogger("posterm.paths")

PRIMARY = "ETH"
MODEM = "4G"

Streams = tuple[Any, Any]  # (reader, writer) with what HostLink uses of asyncio's streams
Opener = Callable[[str, int, "ssl.SSLContext | None", "str | None", float], Awaitable[Streams]]


class ModemLike(Protocol):
    """What the paths need of the modem driver (drivers/modem.py `Modem`)."""

    async def start(self) -> Any: ...

    async def refresh(self) -> Any: ...

    async def recover(self) -> Any: ...

    async def open_connection(self, host: str, port: int, *, ssl: ssl.SSLContext | None,
                              server_hostname: str | None, timeout: float) -> Streams: ...

    async def close(self) -> None: ...

    @property
    def status(self) -> Any: ...


async def open_direct(host: str, port: int, ctx: ssl.SSLContext | None,
                      server_name: str | None, timeout: float) -> Streams:
    """The primary path: the operating system's own TCP (and TLS) connection."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_name), timeout)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        import socket

        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    return reader, writer


class Paths:
    """Which path the next connection takes, and the primary's health while on the modem."""

    def __init__(self, cfg: ModemConfig, modem: ModemLike | None, *,
                 emit: Callable[[Event], None] = lambda event: None,
                 clock: Callable[[], float] = time.monotonic,
                 primary: Opener = open_direct) -> None:
        self.cfg, self.modem, self.emit, self.clock = cfg, modem, emit, clock
        self.primary = primary
        self.modem_ready = False  # the modem has a data session (ModemKeeper says so)
        self.primary_failed_at: float | None = None  # None: the primary is preferred
        self.healthy_since: float | None = None  # primary probes all good since then
        self.in_use = ""  # the path of the current connection ("" when none)
        self.switches = 0
        self.last_failover = 0.0
        self.changed = Wake()  # kicked when the primary fails or the modem takes over

    @property
    def has_modem(self) -> bool:
        return self.modem is not None

    def order(self) -> list[str]:
        if self.modem is None or not self.modem_ready:
            return [PRIMARY]
        if self.primary_failed_at is not None:
            return [MODEM, PRIMARY]
        return [PRIMARY, MODEM]

    async def open(self, path: str, host: str, port: int, ctx: ssl.SSLContext | None,
                   server_name: str | None, timeout: float) -> Streams:
        if path == PRIMARY:
            streams = await self.primary(host, port, ctx, server_name, timeout)
        else:
            assert self.modem is not None
            if not self.modem_ready:
                raise ConnectionError("the 4G modem has no data session")
            streams = await self.modem.open_connection(host, port, ssl=ctx,
                                                       server_hostname=server_name,
                                                       timeout=timeout)
        return streams

    def connected(self, path: str) -> None:
        """A connection (signed on or not yet) now runs on `path`."""
        if path != self.in_use:
            if self.in_use:
                self.switches += 1
            if path == MODEM:
                log.warning("host path: 4G modem (the primary network cannot reach the host)")
            else:
                log.info("host path: primary network (ETH)")
            self.in_use = path
            if path == MODEM:
                self.last_failover = self.clock()
            self.changed.kick()
            self.report()
        if path == PRIMARY:
            self.primary_failed_at = None
            self.healthy_since = None

    def failed(self, path: str, why: str) -> None:
        """A connection attempt on `path` failed (it is logged here, once per attempt)."""
        log.warning("host path %s: %s", path, why)
        if path == PRIMARY and self.modem is not None:
            self.primary_down(why)

    def primary_down(self, why: str = "") -> None:
        if self.primary_failed_at is None:
            self.primary_failed_at = self.clock()
            log.warning("primary path down%s: the 4G modem takes over", f" ({why})" if why
                        else "")
            self.changed.kick()
        self.healthy_since = None

    def probed(self, ok: bool) -> None:
        if not ok:
            self.healthy_since = None
        elif self.healthy_since is None:
            self.healthy_since = self.clock()

    def failback_due(self) -> bool:
        return (self.primary_failed_at is not None and self.healthy_since is not None
                and self.clock() - self.healthy_since >= self.cfg.failback_after)

    def report(self, detail: str | None = None, bars: int | None = None) -> None:
        if self.modem is None:
            return
        status = self.modem.status
        self.emit(PathChanged(self.in_use or PRIMARY,
                              bars if bars is not None else _bars(status),
                              detail if detail is not None else describe(status)))


def _bars(status: Any) -> int:
    return int(getattr(status, "bars", 0) or 0)


# the modem's faults in at most 20 characters, with "4G" in front so a merchant knows
# which part of the terminal they are about
SHORT = {"REGISTRATION DENIED": "4G REG DENIED", "DATA SESSION REFUSED": "4G DATA REFUSED",
         "MODEM NOT ANSWERING": "4G NOT ANSWERING"}


def fault_text(display: str) -> str:
    return SHORT.get(display, f"4G {display}"[:20])


def describe(status: Any) -> str:
    """One line (at most 20 characters) about the modem for the status screen."""
    if status is None:
        return "4G STARTING"
    error = str(getattr(status, "error_display", "") or "")
    if error:
        return fault_text(error)
    reg = str(getattr(status, "registration", "") or "").upper()
    rssi = getattr(status, "rssi", None)
    csq = f" CSQ {rssi}" if isinstance(rssi, int) and rssi != 99 else ""
    return f"4G {reg or 'UNKNOWN'}{csq}"[:20]


def modem_facts(paths: Paths) -> dict[str, Any]:
    """The modem's part of `posterm status`."""
    status = paths.modem.status if paths.modem is not None else None
    facts: dict[str, Any] = {"ready": paths.modem_ready, "summary": describe(status),
                             "primary_failed": paths.primary_failed_at is not None,
                             "switches": paths.switches}
    for key in ("powered", "answering", "sim", "registration", "rssi", "bars", "data_session",
                "last_error"):
        if status is not None and hasattr(status, key):
            facts[key] = getattr(status, key)
    return facts


class LinkLike(Protocol):
    """The part of the host link (hostlink.py) that failover moves between paths."""

    @property
    def outstanding(self) -> int: ...

    @property
    def path(self) -> str: ...

    async def close(self) -> None: ...

    async def ensure_connected(self) -> None: ...


class Failover:
    """Moving the host link between the paths: to the modem when the link goes DOWN on
    the primary, back to the primary once it has been healthy (PrimaryProbe). Only an
    idle connection moves: a request is never moved between paths, and a sale in flight
    (`busy`) finishes where it started."""

    def __init__(self, paths: Paths, link: LinkLike, *, busy: Callable[[], bool]) -> None:
        self.paths, self.link, self.busy = paths, link, busy

    async def failback(self) -> bool:
        """Back to the primary path, when nothing is outstanding on the modem connection
        and no sale is in flight."""
        if self.link.outstanding or self.busy():
            return False
        self.paths.primary_failed_at = None
        await self.link.close()
        try:
            await self.link.ensure_connected()
        except HostError as exc:
            log.warning("failback to the primary path: %s", exc)
        return True

    async def fail_over(self) -> None:
        """The link went DOWN on the primary path: the next connection tries the modem
        first; an idle connection is closed now so that the probe reconnects over 4G."""
        if self.link.path != PRIMARY:
            return
        self.paths.primary_down("the link went down")
        if not self.link.outstanding and not self.busy():
            await self.link.close()
            try:  # over the modem now, rather than at the next probe
                await self.link.ensure_connected()
            except HostError as exc:
                log.warning("failover to the 4G modem: %s", exc)


class PrimaryProbe:
    """While on the modem: probe the primary path until it has been healthy long enough,
    then ask for failback."""

    def __init__(self, paths: Paths, host: str, port: int, ctx: ssl.SSLContext | None,
                 server_name: str | None, timeout: float, *,
                 failback: Callable[[], Awaitable[bool]], interval: float = 5.0) -> None:
        self.paths, self.host, self.port = paths, host, port
        self.ctx, self.server_name, self.timeout = ctx, server_name, timeout
        self.failback, self.interval = failback, interval

    async def once(self) -> bool:
        try:
            _reader, writer = await self.paths.primary(self.host, self.port, self.ctx,
                                                       self.server_name, self.timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            log.debug("primary probe failed: %s", exc)
            self.paths.probed(False)
            return False
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
        self.paths.probed(True)
        return True

    async def run(self) -> None:
        while True:
            if self.paths.primary_failed_at is None or self.paths.in_use == PRIMARY:
                # nothing to probe: asleep until the primary fails (at most a minute)
                await self.paths.changed.nap(60.0)
                continue
            await self.once()
            if self.paths.failback_due():
                log.info("primary path healthy for %g s: failing back",
                         self.paths.cfg.failback_after)
                if await self.failback():
                    continue
            await asyncio.sleep(self.interval)


class ModemKeeper:
    """Brings the modem up, keeps its status fresh, and recovers it when it stops answering."""

    def __init__(self, paths: Paths, modem: ModemLike, cfg: ModemConfig, *,
                 emit: Callable[[Event], None], rng: random.Random | None = None) -> None:
        self.paths, self.modem, self.cfg, self.emit = paths, modem, cfg, emit
        self.rng = rng or random.Random()
        self.fault = ""
        self.failures = 0

    def _condition(self, text: str) -> None:
        if text != self.fault:
            self.fault = text
            self.emit(ConditionChanged("modem", text))

    async def run(self) -> None:
        while True:
            try:
                if not self.paths.modem_ready:
                    await self.modem.start()
                    self.paths.modem_ready = True
                    self.failures = 0
                    log.info("4G modem ready: %s", describe(self.modem.status))
                else:
                    await self.modem.refresh()
                self._condition("")
                self.paths.report()
                await asyncio.sleep(self.cfg.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                from firmware.errors import DeviceError

                if not isinstance(exc, DeviceError):
                    raise
                self.paths.modem_ready = False
                self.failures += 1
                text = str(getattr(exc, "display", "") or "MODEM FAULT")
                if self.failures == 1 or fault_text(text) != self.fault:
                    log.error("4G modem: %s (the primary path is unaffected)", exc)
                self._condition(fault_text(text))
                self.paths.report(detail=fault_text(text), bars=0)
                delay = full_jitter(self.failures, base=2.0, cap=max(5.0, self.cfg.poll_interval),
                                    draw=self.rng.random())
                await asyncio.sleep(max(1.0, delay))
                silent = text == "MODEM NOT ANSWERING"
                if silent or getattr(self.modem, "needs_recovery", False):
                    try:  # power-cycle a module that stopped answering, and start it again
                        await self.modem.recover()
                        self.paths.modem_ready = True
                        self.failures = 0
                        log.info("4G modem recovered: %s", describe(self.modem.status))
                    except DeviceError as again:
                        log.error("4G modem: recovery failed: %s", again)
