"""The card side of vpcd: a simulated chip card in pcscd's virtual reader.

vpcd (Debian `vsmartcard-vpcd`) is a pcscd reader driver whose reader holds a
"card" that is a program connected to it over TCP: vpcd listens on port P (its
first reader, P + 1 its second) and the card connects. Every message, both ways,
is a 2-byte big-endian length and the payload. From vpcd, a 1-byte payload is a
control code: 00 power off, 01 power on, 02 reset (none of them answered), 04
"your ATR" (answered with the ATR); a longer payload is a command APDU, answered
with the response APDU (data and SW1 SW2). Closing the connection takes the card
out of the reader.

How vpcd uses them (vsmartcard 0.8, pcsc-lite 1.9): pcscd asks every reader
whether a card is present every 400 ms, and vpcd answers that by sending 04: any
non-empty answer means present. To power a card it sends 01 then 04, and the
answer to that 04 is the ATR PC/SC reports; an empty answer there fails the power
up (and vpcd drops the connection). So:

- 04 while the card is not powered is a presence probe, answered with the card's
  last ATR, or `PROBE_ATR` when it has none yet (or a mute card's empty one):
  pcscd never reports that answer, it powers the card and asks again;
- 04 while powered is answered with what the card's `power_on()` (or `reset()`)
  returned, b"" for a mute card;
- after a mute card's empty ATR vpcd forgets the connection (it takes an empty
  ATR for a card gone, yet the socket may stay open): the link closes it and
  connects again at once, within pcscd's 400 ms poll, so the card stays in the
  reader, mute, as a real mute card does (PC/SC: present and mute, SCardConnect
  fails);
- when vpcd is not there (pcscd stopped) the link tries again every `retry`
  seconds until it is back or `stop()` is called;
- a card method raising an exception named `CardPulled` (hwsim's chip card model
  defines it) closes the connection without an answer: the card left the reader
  mid-command; the link then stays out until `stop()`.

The card object: `power_on() -> bytes` (the ATR; b"" = mute), `reset() -> bytes`,
`power_off()`, `apdu(bytes) -> bytes`. Frames that make no sense (an unknown
control code, an APDU shorter than its 4-byte header, a connection cut mid-frame)
are logged in one line each, never with APDU data, and the link carries on: a
short APDU is answered 6700 (wrong length) so vpcd is not left waiting.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from typing import Protocol

log = logging.getLogger(__name__)

POWER_OFF, POWER_ON, RESET, ATR = 0x00, 0x01, 0x02, 0x04
PROBE_ATR = bytes.fromhex("3B00")  # TS direct convention, no interface byte: "a card is here"
SW_WRONG_LENGTH = bytes.fromhex("6700")
SW_NO_DIAGNOSIS = bytes.fromhex("6F00")


class Card(Protocol):
    def power_on(self) -> bytes: ...

    def reset(self) -> bytes: ...

    def power_off(self) -> None: ...

    def apdu(self, command: bytes) -> bytes: ...


class _Pulled(Exception):
    """The card raised CardPulled: it left the reader."""


class _Closed(Exception):
    """vpcd closed the connection (or it failed)."""


class _Mute(Exception):
    """The powered card answered its ATR empty: vpcd gives the card up."""


class VpcdLink:
    """One simulated card in one vpcd reader: `start()` inserts it, `stop()` removes it."""

    def __init__(self, card: Card, port: int, host: str = "127.0.0.1", *,
                 retry: float = 0.2) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"vpcd port out of range: {port}")
        self._card = card
        self._addr = (host, port)
        self._retry = retry
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._powered = False
        self._atr: bytes = b""
        self.pulled = False  # the card raised CardPulled: it is out until stop()

    @property
    def connected(self) -> bool:
        """True while vpcd holds the connection (the card is in its reader)."""
        with self._lock:
            return self._sock is not None

    def start(self) -> VpcdLink:
        if self._thread is not None:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"vpcd-{self._addr[1]}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the card out: close the connection and end the thread."""
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _main(self) -> None:
        told = False  # "vpcd not there" logged once per absence
        while not self._stop.is_set() and not self.pulled:
            try:
                sock = socket.create_connection(self._addr, timeout=2)
            except OSError as exc:
                if not told:
                    log.info("vpcd %s:%d not reachable (%s); retrying every %.1f s",
                             *self._addr, exc, self._retry)
                    told = True
                self._stop.wait(self._retry)
                continue
            told = False
            sock.settimeout(None)
            with self._lock:
                self._sock = sock
            log.info("vpcd %s:%d: card in the reader", *self._addr)
            try:
                self._serve(sock)
            except _Pulled:
                self.pulled = True
                log.info("vpcd %s:%d: card pulled out", *self._addr)
            except _Mute:
                log.info("vpcd %s:%d: the card is mute (empty ATR): connecting again",
                         *self._addr)
            except _Closed as exc:
                if not self._stop.is_set():
                    log.info("vpcd %s:%d: connection closed (%s)", *self._addr, exc)
            finally:
                with self._lock:
                    self._sock = None
                sock.close()
                self._powered = False

    def _serve(self, sock: socket.socket) -> None:
        while True:
            payload = _read_frame(sock)
            if not payload:
                continue
            answer = self.handle(payload)
            if answer is not None:
                try:
                    sock.sendall(struct.pack(">H", len(answer)) + answer)
                except OSError as exc:
                    raise _Closed(str(exc)) from exc
                if not answer and payload == bytes([ATR]):
                    raise _Mute()

    def handle(self, payload: bytes) -> bytes | None:
        """The answer to one frame from vpcd (None: no answer). Raises _Pulled."""
        if len(payload) == 1:
            return self._control(payload[0])
        if len(payload) < 4:
            log.warning("vpcd: a %d-byte frame is neither a control code nor an APDU; "
                        "answered 6700", len(payload))
            return SW_WRONG_LENGTH
        try:
            answer = self._card.apdu(payload)
        except Exception as exc:
            if type(exc).__name__ == "CardPulled":
                raise _Pulled() from exc
            log.error("vpcd: the card failed on INS %02X: %s: %s; answered 6F00",
                      payload[1], type(exc).__name__, exc)
            return SW_NO_DIAGNOSIS
        if len(answer) < 2:
            log.error("vpcd: the card answered INS %02X with %d bytes (no status word); "
                      "answered 6F00", payload[1], len(answer))
            return SW_NO_DIAGNOSIS
        return answer

    def _control(self, code: int) -> bytes | None:
        try:
            if code == POWER_OFF:
                self._card.power_off()
                self._powered = False
            elif code == POWER_ON:
                self._atr = bytes(self._card.power_on())
                self._powered = True
            elif code == RESET:
                self._atr = bytes(self._card.reset())
                self._powered = True
            elif code == ATR:
                if self._powered:
                    return self._atr  # b"": a mute card
                return self._atr or PROBE_ATR
            else:
                log.warning("vpcd: unknown control code %02X ignored", code)
        except Exception as exc:
            if type(exc).__name__ == "CardPulled":
                raise _Pulled() from exc
            log.error("vpcd: the card failed on control %02X: %s: %s", code,
                      type(exc).__name__, exc)
            if code == ATR:
                return b""
        return None


def _read_frame(sock: socket.socket) -> bytes:
    head = _read_exact(sock, 2, "length")
    (size,) = struct.unpack(">H", head)
    if size == 0:
        log.warning("vpcd: an empty frame ignored")
        return b""
    return _read_exact(sock, size, "payload")


def _ack_now(sock: socket.socket) -> None:
    """Acknowledge at once (Linux's TCP_QUICKACK, which the kernel clears again after a
    while, hence after every read): vpcd writes a frame's length and its payload in two
    writes, and with Nagle on its side the payload waits for our ACK of the length,
    which a delayed ACK holds up to 40 ms: about 50 ms an APDU, most of a chip sale."""
    quick = getattr(socket, "TCP_QUICKACK", None)
    if quick is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, quick, 1)
        except OSError:
            pass


def _read_exact(sock: socket.socket, size: int, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        try:
            chunk = sock.recv(size - len(buf))
        except OSError as exc:
            raise _Closed(str(exc)) from exc
        _ack_now(sock)
        if not chunk:
            if buf or what == "payload":
                log.warning("vpcd: connection closed mid-frame (%s: %d of %d bytes)",
                            what, len(buf), size)
            raise _Closed("end of stream")
        buf += chunk
    return bytes(buf)
