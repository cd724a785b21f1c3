"""The host link: one persistent TCP (or TLS) connection to the acquirer host.

host-interface.md section 1: 2-byte big-endian length framing, at most 2048
bytes; the first message on every new connection is the sign-on (0800, 70=001);
several requests may be outstanding and responses are matched by (41, 11, MTI
class), never by order. A response matching nothing outstanding is logged and
discarded (this is how a late 0210 dies). A bad frame, an undecodable message or
an unknown MTI is a protocol error: the link closes and every outstanding
request learns its outcome is unknown. A signed-on connection that ends without the
terminal closing it (the host closed it, it broke, a protocol error) is told to
`lost_listeners`: the link monitor reconnects at once (host-interface.md section 1).

`send()` either writes the whole frame or raises HostUnreachableError, which
means "nothing was written". After a successful `send()`, `Pending.wait()` gives
the response or raises ResponseTimeout / ConnectionLost / ProtocolError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from firmware.config import HostConfig
from firmware.core import iso
from firmware.core.iso import Fields, Identity, MessageError
from firmware.errors import HostError, HostNotTrustedError, HostUnreachableError, ProtocolError
from firmware.runtime.clock import SYSTEM, Clock
from firmware.runtime.paths import PRIMARY, open_direct

if TYPE_CHECKING:
    from firmware.runtime.paths import Paths

log = logging.getLogger("posterm.host")
# OpenSSL reasons that mean the host cannot be trusted with what it offers (an old
# protocol, weak ciphers, not TLS at all): a configuration error or an attack, not a
# busy host. Other handshake failures (an alert from the host, a rejected client
# certificate, a reset) count as an unreachable host.
_NOT_TRUSTED_REASONS = frozenset({
    "UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "WRONG_VERSION_NUMBER",
    "NO_PROTOCOLS_AVAILABLE", "NO_SHARED_CIPHER", "TLSV1_ALERT_INSUFFICIENT_SECURITY",
    "DH_KEY_TOO_SMALL", "EE_KEY_TOO_SMALL", "CA_MD_TOO_WEAK", "CERTIFICATE_VERIFY_FAILED",
})
wire = logging.getLogger("posterm.wire.host")


class ResponseTimeout(HostError):
    pass


class ConnectionLost(HostError):
    pass


Key = tuple[str, str, str]


class Pending:
    def __init__(self, link: HostLink, key: Key, request: Fields, *, check: bool = True) -> None:
        self.link, self.key, self.request = link, key, request
        self.check = check  # a timeout makes the link check its connection with an echo
        self.future: asyncio.Future[Fields] = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float) -> Fields:
        try:
            return await asyncio.wait_for(asyncio.shield(self.future), timeout)
        except asyncio.TimeoutError:
            if self.check:
                self.link.request_timed_out()
            raise ResponseTimeout(f"no answer to {self.request['t']} stan "
                                  f"{self.request.get('11')} within {timeout:g} s") from None
        finally:
            self.link.forget(self)


class HostLink:
    def __init__(self, cfg: HostConfig, ident: Identity, allocate_stan: Callable[[], str],
                 on_connected: Callable[[], Awaitable[None]] | None = None,
                 paths: Paths | None = None, clock: Clock = SYSTEM) -> None:
        self.cfg, self.ident, self.clock = cfg, ident, clock
        self.paths = paths
        self.path = ""  # the path of the current connection: "ETH" or "4G"
        self.allocate_stan = allocate_stan
        self.on_connected = on_connected
        self.address = f"{cfg.host}:{cfg.port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._outstanding: dict[Key, Pending] = {}
        self._connect_lock = asyncio.Lock()
        self._ssl = self._ssl_context() if cfg.tls else None
        self.last_traffic = clock.monotonic()
        self.connected_at = 0.0  # when the current connection signed on (0: none has)
        # an echo checking the connection after a timeout; new requests wait for its verdict
        self._check: asyncio.Task[None] | None = None
        # (ok, reason) per connection attempt; untrusted=True is added for a refused TLS identity
        self.listeners: list[Callable[..., None]] = []
        # (why) when a signed-on connection ends without the terminal closing it: the host
        # closed it, it broke, or the host broke the protocol (linkmonitor.py reconnects)
        self.lost_listeners: list[Callable[[str], None]] = []

    # -- connection ------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cfg.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise HostError(f"TLS set-up failed: [host] ca_file {self.cfg.ca_file}: "
                            f"{_tls_reason(exc)}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cfg.client_cert:
            try:
                ctx.load_cert_chain(self.cfg.client_cert, self.cfg.client_key or None)
            except (OSError, ssl.SSLError) as exc:
                files = self.cfg.client_cert + (f" / {self.cfg.client_key}"
                                                if self.cfg.client_key else "")
                raise HostError(f"TLS set-up failed: [host] client_cert/client_key {files}: "
                                f"{_tls_reason(exc)}") from None
        return ctx

    @property
    def outstanding(self) -> int:
        """Requests written and not yet answered (or given up on)."""
        return len(self._outstanding)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing() and \
            self._read_task is not None and not self._read_task.done()

    async def ensure_connected(self) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            await self._connect()
        if self.on_connected is not None:
            await self.on_connected()

    async def _connect(self) -> None:
        await self.close()
        self.connected_at = 0.0  # until this connection has signed on
        paths = self.paths
        order = paths.order() if paths is not None else [PRIMARY]
        failures: list[HostError] = []
        for path in order:
            try:
                reader, writer = await self._open(path)
            except HostError as exc:
                failures.append(exc)
                if paths is not None:
                    paths.failed(path, str(exc))
                continue
            break
        else:
            reason = "; ".join(str(exc) for exc in failures)
            if any(isinstance(exc, HostNotTrustedError) for exc in failures):
                raise self._untrusted(reason)
            raise self._fail(reason)
        self.path = path
        if paths is not None:
            paths.connected(path)
        self._reader, self._writer = reader, writer
        self._read_task = asyncio.create_task(self._read_loop(reader, writer),
                                              name="host-reader")
        log.info("connected to host %s%s", self.address, " (TLS)" if self._ssl else "")
        try:
            stan = self.allocate_stan()
            utc = self.clock.utc()
            answer = await self._exchange(iso.network(self.ident, code="001",
                                                      stan=int(stan), utc=utc),
                                          self.cfg.response_timeout)
        except HostError as exc:
            await self.close()
            raise self._fail(f"sign-on to host {self.address} failed: {exc}") from None
        if answer.get("39") != "00":
            await self.close()
            raise self._fail(f"sign-on to host {self.address} refused with code "
                             f"{answer.get('39')}")
        self.connected_at = self.clock.monotonic()
        log.info("signed on to host %s", self.address)
        self._notify(True, "signed on")

    async def _open(self, path: str) -> tuple[Any, Any]:
        """Open a connection on one path; a failure comes back classified, not yet reported."""
        server_name = (self.cfg.server_name or self.cfg.host) if self._ssl else None
        where = self.address if path == PRIMARY else f"{self.address} over 4G"
        try:
            if self.paths is not None:
                return await self.paths.open(path, self.cfg.host, self.cfg.port, self._ssl,
                                             server_name, self.cfg.connect_timeout)
            return await open_direct(self.cfg.host, self.cfg.port, self._ssl, server_name,
                                     self.cfg.connect_timeout)
        except ssl.SSLCertVerificationError as exc:
            raise HostNotTrustedError(
                f"host {where} NOT TRUSTED: its TLS certificate does not verify "
                f"({exc.verify_message}); check [host] ca_file and server_name, or the link "
                "is intercepted") from None
        except ssl.SSLError as exc:
            if (exc.reason or "") in _NOT_TRUSTED_REASONS:
                raise HostNotTrustedError(
                    f"host {where} NOT TRUSTED: TLS handshake refused ({exc.reason}): the host "
                    "offers only an old protocol or weak ciphers, or does not speak TLS "
                    "(TLS 1.2 or newer is required)") from None
            raise HostUnreachableError(f"TLS handshake with host {where} failed: "
                                       f"{exc.reason or exc}") from None
        except asyncio.TimeoutError:
            raise HostUnreachableError(
                f"host {where}: no connection within {self.cfg.connect_timeout:g} s") from None
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise HostUnreachableError(f"host {where}: cannot connect: {why}") from None

    def _fail(self, reason: str) -> HostUnreachableError:
        log.warning("%s", reason)
        self._notify(False, reason)
        return HostUnreachableError(reason)

    def _untrusted(self, reason: str) -> HostNotTrustedError:
        log.error("%s", reason)
        self._notify(False, reason, untrusted=True)
        return HostNotTrustedError(reason)

    def _notify(self, ok: bool, reason: str, *, untrusted: bool = False) -> None:
        for listener in self.listeners:
            if untrusted:
                listener(ok, reason, untrusted=True)
            else:
                listener(ok, reason)

    async def close(self) -> None:
        writer, task = self._writer, self._read_task
        self._writer = self._reader = None
        self._read_task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass
        self._fail_all(ConnectionLost("connection to the host closed"))

    def _fail_all(self, exc: HostError) -> None:
        pending, self._outstanding = self._outstanding, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(exc)

    # -- messages --------------------------------------------------------------
    async def send(self, doc: Fields, payload: bytes | None = None) -> Pending:
        """Write one request on a signed-on connection. Raises HostUnreachableError
        when nothing was written. While the connection is being checked after a timeout,
        a new request waits for the verdict rather than go into a dead connection."""
        check = self._check
        if check is not None and check is not asyncio.current_task():
            await asyncio.wait({check})
        await self.ensure_connected()
        pending = self._write(doc, payload=payload)
        await self.flushed()
        return pending

    def write_batch(self, doc: Fields) -> Pending:
        """Write one more request of a batch at once, after `send` connected for its first:
        no connecting, no waiting (the forwarder's pipelined queue). Raises
        HostUnreachableError when the connection is closed."""
        return self._write(doc)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the link verifies the host with (None: plain TCP)."""
        return self._ssl

    @property
    def server_name(self) -> str | None:
        """The name checked in the host's certificate (None without TLS)."""
        return (self.cfg.server_name or self.cfg.host) if self._ssl else None

    async def flushed(self) -> None:
        """Until what was written has left the terminal. Over TCP the kernel has it once
        written; over the modem it is in this process until the module confirmed it
        (AT+CIPSEND), and "written" is journaled only after that, so that a crash never
        makes the first transmission a repeat. A connection lost meanwhile is reported
        through the pending requests, not here."""
        flushed = getattr(self._writer, "flushed", None)
        if flushed is not None:
            try:
                await flushed()
            except OSError:
                pass

    async def exchange(self, doc: Fields, timeout: float) -> Fields:
        """One exchange whose failure the caller reports (the echo tests)."""
        await self.ensure_connected()
        return await self._write(doc, check=False).wait(timeout)

    async def echo(self) -> None:
        """An echo test (0800, 301) on the connection, or a HostError that says why not."""
        doc = iso.network(self.ident, code="301", stan=int(self.allocate_stan()),
                          utc=self.clock.utc())
        answer = await self.exchange(doc, self.cfg.response_timeout)
        if answer.get("39") != "00":
            raise HostError(f"echo test answered {answer.get('39')}")

    async def probe(self) -> None:
        """While the link is down (linkmonitor.py): sign on again, or, if still connected,
        echo; either way the outcome reaches the listeners."""
        if not self.connected:
            await self.ensure_connected()
            return
        try:
            await self.echo()
        except HostError as exc:
            self._notify(False, f"probe: {exc}")
            return
        self._notify(True, "")

    async def _exchange(self, doc: Fields, timeout: float) -> Fields:
        """The sign-on exchange: its failure is reported once, by _connect."""
        return await self._write(doc, notify=False, check=False).wait(timeout)

    def request_timed_out(self) -> None:
        """A request went unanswered: check the connection with an echo test. A host that
        is only slow answers it, and a late answer can still arrive; a connection that does
        not answer even that is dead (a cable cut behind a switch, a NAT that forgot it), so
        it is closed and the next request opens a new one, over the other path when there
        is one (paths.py)."""
        if self._check is not None or not self.connected or not self.connected_at:
            return
        self._check = asyncio.create_task(self._check_alive(self._writer), name="host-check")

    async def _check_alive(self, writer: asyncio.StreamWriter | None) -> None:
        try:
            doc = iso.network(self.ident, code="301", stan=int(self.allocate_stan()),
                              utc=self.clock.utc())
            await self._write(doc, notify=False, check=False).wait(
                min(self.cfg.response_timeout, 10.0))
        except ResponseTimeout:
            if self._writer is writer and writer is not None:
                where = self.address + (" over 4G" if self.path == "4G" else "")
                reason = (f"host {where}: no answer to an echo test after a request timed "
                          "out: the connection is dead; closing it")
                if self.paths is not None and self.path == PRIMARY:
                    self.paths.failed(PRIMARY, "the connection went dead")
                await self.close()
                self._fail(reason)
                if self.paths is not None and self.paths.modem_ready:
                    await self.ensure_connected()  # fail over now, not at the next probe
        except HostError as exc:
            log.debug("connection check: %s", exc)
        finally:
            self._check = None

    def _write(self, doc: Fields, *, notify: bool = True, check: bool = True,
               payload: bytes | None = None) -> Pending:
        """`payload`: `doc` encoded already (iso.encode), by a caller that had to know it
        could be before anything was sent."""
        writer = self._writer
        if writer is None or writer.is_closing():
            reason = f"connection to host {self.address} is closed"
            raise self._fail(reason) if notify else HostUnreachableError(reason) from None
        if payload is None:
            payload = iso.encode(doc)
        key = iso.match_key(doc)
        pending = Pending(self, key, doc, check=check)
        try:
            writer.write(iso.frame(payload))
        except (OSError, RuntimeError) as exc:
            reason = f"write to host {self.address} failed: {exc}"
            raise self._fail(reason) if notify else HostUnreachableError(reason) from None
        self._outstanding[key] = pending
        self.last_traffic = self.clock.monotonic()
        wire.debug(">>> %s", iso.safe_summary(doc))
        return pending

    def forget(self, pending: Pending) -> None:
        if self._outstanding.get(pending.key) is pending:
            del self._outstanding[pending.key]

    async def _read_loop(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(2)
                size = int.from_bytes(header, "big")
                if not 0 < size <= iso.MAX_FRAME:
                    raise ProtocolError(f"frame length {size} from host is out of range")
                payload = await reader.readexactly(size)
                self.last_traffic = self.clock.monotonic()
                try:
                    doc = iso.decode(payload)
                except MessageError as exc:
                    raise ProtocolError(str(exc)) from None
                if doc.get("t") not in iso.KNOWN_RESPONSES:
                    raise ProtocolError(f"unknown MTI {doc.get('t')!r} from host")
                wire.debug("<<< %s", iso.safe_summary(doc))
                pending = self._outstanding.pop(iso.match_key(doc), None)
                if pending is None or pending.future.done():
                    log.warning("discarded a response that matches nothing outstanding: %s",
                                iso.safe_summary(doc))
                    continue
                pending.future.set_result(doc)
        except ProtocolError as exc:
            log.error("protocol error on the host link: %s; closing", exc)
            self._fail_all(exc)
            lost = f"protocol error: {exc}"
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError) as exc:
            why = ("the host closed the connection" if isinstance(exc, asyncio.IncompleteReadError)
                   else (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc))
            log.warning("host connection lost: %s", why)
            self._fail_all(ConnectionLost("the connection to the host broke"))
            lost = why
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
        if self.connected_at:  # not the sign-on's own connection: _connect reports that one
            for listener in self.lost_listeners:
                listener(lost)


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
