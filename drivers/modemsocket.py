"""Link 0 of the modem as an asyncio-style stream pair, with TLS over it when asked.

`ModemSocket` is the byte stream of one modem connection: bytes from `+IPD`
feed an asyncio.StreamReader (through a `TlsSession` with TLS), and bytes
written are sent by the modem in AT+CIPSEND blocks, one block at a time, by a
sender task. `ModemStreamWriter` gives it asyncio.StreamWriter's names. The
modem (drivers/modem.py) owns the AT commands; this module only calls its
`send_block`, `close_link` and `forget` (the `Link` protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
from typing import Any, Protocol

from drivers.modemtls import TlsSession
from firmware.errors import DeviceError

log = logging.getLogger(__name__)

MAX_SEND = 1460  # bytes per AT+CIPSEND block (the module takes up to 1500)
SEND_BUFFER_HIGH = 64 * 1024  # drain() waits while more than this is queued


class Link(Protocol):
    """What a socket needs from the modem."""

    command_timeout: float

    async def send_block(self, block: bytes) -> None: ...

    async def close_link(self, sock: ModemSocket) -> None: ...

    def forget(self, sock: ModemSocket) -> None: ...


class ModemSocket:
    """Link 0: a byte stream through the modem, with TLS over it when asked."""

    def __init__(self, modem: Link, peer: str, context: ssl.SSLContext | None,
                 server_hostname: str | None) -> None:  # fmt: skip
        self.modem = modem
        self.peer = peer
        self.reader = asyncio.StreamReader()
        self.tls = TlsSession(context, server_hostname) if context is not None else None
        self.opened = False
        self.closing = False
        self.lost = False
        self._buffer = bytearray()
        self._wake_sender = asyncio.Event()
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._error: Exception | None = None
        self._sender = asyncio.ensure_future(self._send_loop())
        self._closer: asyncio.Task[None] | None = None

    # from the modem
    def raw_received(self, data: bytes) -> None:
        if self.tls is None:
            self.reader.feed_data(data)
            return
        self.tls.feed(data)
        self._arrived.set()
        if self.tls.handshake_done:
            self._decrypt()

    def _decrypt(self) -> None:
        assert self.tls is not None
        try:
            plain = self.tls.read()
        except ssl.SSLError as exc:
            log.warning("modem: TLS error from %s: %s", self.peer, exc.reason or exc)
            self.raw_closed(exc, "TLS error")
            self.close()
            return
        if plain:
            self.reader.feed_data(plain)
        out = self.tls.outgoing()
        if out:
            self.send_raw(out)
        if self.tls.eof and not self.reader.at_eof():
            self.reader.feed_eof()

    def raw_closed(self, exc: Exception | None, why: str) -> None:
        """The link is gone: the host closed it (exc None) or the modem failed."""
        if self.lost:
            return
        self.lost = True
        if exc is None:
            self.opened = False  # +IPCLOSE: the module has closed link 0 itself
        log.info("modem: link 0 to %s closed: %s", self.peer, why)
        self._error = exc or ConnectionResetError(errno.ECONNRESET, f"modem: {why}")
        if exc is None:
            self.reader.feed_eof()
        else:
            self.reader.set_exception(exc)
        self._arrived.set()
        self._wake_sender.set()

    async def wait_raw(self) -> None:
        """Until more bytes arrived (for the TLS handshake)."""
        if self.lost:
            raise ConnectionResetError(errno.ECONNRESET, f"modem: the connection to "
                                       f"{self.peer} closed during the TLS handshake")
        self._arrived.clear()
        await self._arrived.wait()
        if self.lost and self.tls is not None and not self.tls.handshake_done:
            raise ConnectionResetError(errno.ECONNRESET, f"modem: the connection to "
                                       f"{self.peer} closed during the TLS handshake")

    # to the modem
    def send_raw(self, data: bytes) -> None:
        self._buffer += data
        self._drained.clear()
        self._wake_sender.set()

    async def _send_loop(self) -> None:
        while True:
            await self._wake_sender.wait()
            self._wake_sender.clear()
            while self._buffer and not self.lost:
                block = bytes(self._buffer[:MAX_SEND])
                try:
                    await self.modem.send_block(block)
                except (DeviceError, OSError) as exc:
                    log.warning("modem: sending to %s failed: %s", self.peer, exc)
                    self._buffer.clear()
                    self.modem.forget(self)
                    self.raw_closed(exc if isinstance(exc, OSError) else ConnectionResetError(
                        errno.ECONNRESET, str(exc)), "sending failed")
                    break
                del self._buffer[:len(block)]
            if not self._buffer:
                self._drained.set()
            if self.lost or (self.closing and not self._buffer):
                self._buffer.clear()
                self._drained.set()
                return

    def write(self, data: bytes) -> None:
        if self.closing or self.lost:
            raise self._error if isinstance(self._error, OSError) else ConnectionResetError(
                errno.ECONNRESET, f"modem: the connection to {self.peer} is closed")
        if not data:
            return
        self.send_raw(self.tls.encrypt(data) if self.tls is not None else bytes(data))

    async def drain(self) -> None:
        if len(self._buffer) > SEND_BUFFER_HIGH:
            await self._drained.wait()
        if self.lost and isinstance(self._error, OSError):
            raise self._error

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.tls is not None and self.tls.handshake_done and not self.lost:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self.send_raw(self.tls.close_notify())
        self._wake_sender.set()
        self._closer = asyncio.ensure_future(self._finish())

    async def _finish(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._sender), self.modem.command_timeout * 2)
        except (asyncio.TimeoutError, Exception):
            self._sender.cancel()
        await self.modem.close_link(self)
        if not self.lost:
            self.lost = True
            if not self.reader.at_eof():
                self.reader.feed_eof()

    def abort(self) -> None:
        """Given up while opening: drop it and close the link in the background."""
        self._buffer.clear()
        self.raw_closed(ConnectionResetError(errno.ECONNRESET, "modem: connection abandoned"),
                        "abandoned while opening")
        self.close()

    async def wait_closed(self) -> None:
        if self._closer is not None:
            await asyncio.shield(self._closer)


class ModemStreamWriter:
    """The writer half of a modem connection, with asyncio.StreamWriter's names."""

    def __init__(self, sock: ModemSocket) -> None:
        self._sock = sock

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sock.write(bytes(data))

    async def drain(self) -> None:
        await self._sock.drain()

    async def flushed(self) -> None:
        """Until every byte written so far has been taken by the module (its AT+CIPSEND
        confirmed): only then has it left the terminal, beyond what a crash of this
        process can lose. Raises the connection's error if it was lost first."""
        await self._sock._drained.wait()
        if self._sock.lost and isinstance(self._sock._error, OSError):
            raise self._sock._error

    def close(self) -> None:
        self._sock.close()

    def is_closing(self) -> bool:
        return self._sock.closing or self._sock.lost

    async def wait_closed(self) -> None:
        await self._sock.wait_closed()

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            host, _, port = self._sock.peer.rpartition(":")
            return host, int(port)
        if name == "path":
            return "4G"
        if name == "ssl_object":
            return None
        return default
