"""TLS over the modem's byte stream: `ssl.MemoryBIO` and `SSLContext.wrap_bio`.

The modem carries raw bytes (AT+CIPSEND out, +IPD in), so TLS runs in memory
here, with the very `SSLContext` the primary path uses: the same CA, the same
minimum version, the same host name check. `TlsSession` is sans-I/O: the
caller feeds what arrived and sends what `outgoing()` returns. `handshake()`
drives the handshake over two callables and lets the ssl module's own
exceptions through, so a certificate that does not verify raises
`ssl.SSLCertVerificationError` exactly as `asyncio.open_connection(ssl=...)`
would, and the host link classifies it the same way.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable


class TlsSession:
    """One client TLS session over memory buffers."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=False,
                                     server_hostname=server_hostname)  # fmt: skip
        self.handshake_done = False
        self.eof = False  # the peer sent close_notify, or the stream ended

    @property
    def version(self) -> str | None:
        return self._obj.version()

    def feed(self, data: bytes) -> None:
        """Bytes that arrived from the peer."""
        self._incoming.write(data)

    def feed_eof(self) -> None:
        self._incoming.write_eof()

    def outgoing(self) -> bytes:
        """Bytes to send to the peer now (handshake records, alerts, data)."""
        return self._outgoing.read()

    def step(self) -> bool:
        """Advance the handshake with what has arrived; True once it is complete.

        SSL errors (a certificate that does not verify, a protocol the context
        refuses) propagate unchanged."""
        if self.handshake_done:
            return True
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.handshake_done = True
        return True

    def read(self) -> bytes:
        """All application data that can be decrypted from what has arrived.

        After the peer's close_notify (or the end of the stream) `eof` is True."""
        chunks: list[bytes] = []
        while not self.eof:
            try:
                chunk = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        """The records that carry `data` (plus anything else waiting to go out)."""
        view = memoryview(data)
        while view:
            written = self._obj.write(view)
            view = view[written:]
        return self.outgoing()

    def close_notify(self) -> bytes:
        """The close_notify alert to send before closing (b"" if it cannot be made)."""
        try:
            self._obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError, ValueError):
            pass  # the alert is written before unwrap waits for the peer's
        return self.outgoing()


async def handshake(session: TlsSession, send: Callable[[bytes], None],
                    received: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
    """Run the client handshake: `send(records)` queues bytes to the peer and
    `await received()` returns once more bytes were fed to the session (or raises
    ConnectionResetError when the stream ended)."""
    while not session.step():
        out = session.outgoing()
        if out:
            send(out)
        await received()
    out = session.outgoing()
    if out:
        send(out)
