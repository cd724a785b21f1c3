"""Chip card reader over PC/SC (pyscard's low-level `smartcard.scard`).

The reader is the first PC/SC reader whose name is the configured one, or else the
first that starts with it (a USB reader's name carries its serial number and slot:
"ACS ACR39U ICC Reader 00 00").

Watching. `run` starts one thread that waits in `SCardGetStatusChange` on the
reader: it sleeps in pcscd until the reader's state changes (a card in, a card
out) or one second passes, the timeout there only so that the thread sees it must
stop (and `close` cancels the wait with `SCardCancel`). Each change is one event on
the loop: `ChipInserted(atr)` (the ATR in hex, "" for a mute card),
`ChipRemoved()`; a removal and an insertion between two waits (the reader's event
counter moved on) are both told. A card already in at start is told as inserted.

Outage. No reader of that name, no pcscd, a reader unplugged, pcscd stopped or
restarted: one ERROR log line and one `ChipReaderFailed("CHIP READER FAULT",
detail)` per outage (the detail names the readers PC/SC does show when the one
configured is missing), then the thread establishes a new context and looks for
the reader again after pauses that double from `retry_base` up to `retry_cap`
(each drawn in its upper half). When the reader is back it logs so and tells the
reader's state again: `ChipInserted` if a card is in, else `ChipRemoved`, so the
core learns the outage is over either way.

Commands (`power_on`, `transmit`, `power_off`: blocking, run by the runtime in a
worker thread, on a PC/SC context of their own). `power_on` connects SHARED with
T=0 or T=1, whichever the ATR offers, and returns the ATR. `transmit` is the
transport layer of EMV Book 1 9.3 (TTL): under T=0 a case 4 command goes without
its Le (Book 1 9.3.1.1), `61xx` is followed by GET RESPONSE with Le = xx (again
while the card answers 61xx, the data put together), `6Cxx` by the same command
with Le = xx, and a `62xx`/`63xx` warning to a case 4 command by GET RESPONSE
with Le = 00, the warning kept as the status (Book 1 9.3.1.1.4 and Annex A). The
same 61xx/6Cxx handling applies under T=1 should a card use them. At most 64 GET
RESPONSEs and 64 KiB of data per command: a card past that is an error.

Errors: the card out (SCARD_W_REMOVED_CARD, SCARD_E_NO_SMARTCARD) raises
`ChipRemovedError`; a mute card (no usable ATR, SCARD_W_UNRESPONSIVE_CARD,
SCARD_W_UNPOWERED_CARD, a timeout) `ChipMuteError`; the reader or pcscd gone
`ChipReaderGoneError`. A failed exchange PC/SC cannot explain
(SCARD_E_NOT_TRANSACTED, SCARD_F_COMM_ERROR) is settled by the reader's state:
the card leaving within `settle` seconds makes it `ChipRemovedError`, else
`ChipMuteError`. The wire logger shows each command's INS and the card's SW and
lengths, never the data (card data).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from smartcard import scard

from firmware.core.events import ChipInserted, ChipReaderFailed, ChipRemoved, Event
from firmware.errors import ChipError, ChipMuteError, ChipReaderGoneError, ChipRemovedError
from firmware.ports import Emit

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.chip_reader")

DEVICE = "chip_reader"
FAULT_TEXT = "CHIP READER FAULT"
RETRY_BASE = 0.5
RETRY_CAP = 8.0
WAIT_MS = 1000  # one SCardGetStatusChange wait: only so the thread sees it must stop
SETTLE = 1.0  # after an unexplained failed exchange: how long the reader may take to see
# the card gone (pcscd polls a reader without interrupts every 400 ms)
MAX_GET_RESPONSES = 64
MAX_DATA = 65536

_REMOVED = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD}
_MUTE = {scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_W_UNPOWERED_CARD, scard.SCARD_E_TIMEOUT,
         scard.SCARD_E_PROTO_MISMATCH, scard.SCARD_W_UNSUPPORTED_CARD,
         scard.SCARD_E_INVALID_ATR}
_UNEXPLAINED = {scard.SCARD_E_NOT_TRANSACTED, scard.SCARD_F_COMM_ERROR}
_GONE = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED,
         scard.SCARD_E_READER_UNAVAILABLE, scard.SCARD_E_UNKNOWN_READER,
         scard.SCARD_E_NO_READERS_AVAILABLE, scard.SCARD_E_INVALID_HANDLE}
_READER_AWAY = scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE | scard.SCARD_STATE_IGNORE


class _Outage(Exception):
    """The reader or PC/SC is away; the message says why."""


def pcsc_text(code: int) -> str:
    """PC/SC's name and words for a result code."""
    names = [n for n in dir(scard) if n.startswith(("SCARD_E_", "SCARD_W_", "SCARD_F_"))
             and getattr(scard, n) == code]
    words = scard.SCardGetErrorMessage(code).strip().rstrip(".")
    return f"{words} ({names[0] if names else hex(code)})"


def match_reader(names: list[str], wanted: str) -> str | None:
    """The reader named `wanted`, or else the first whose name starts with it."""
    if wanted in names:
        return wanted
    return next((n for n in names if n.startswith(wanted)), None)


def is_case4(apdu: bytes) -> bool:
    """A short case 4 command: header, Lc, Lc bytes of data, Le (ISO 7816-4 5.1)."""
    return len(apdu) > 5 and apdu[4] > 0 and len(apdu) == 5 + apdu[4] + 1


def usable_atr(atr: bytes) -> bool:
    """TS is 3B (direct) or 3F (inverse) and T0 follows (EMV Book 1 8.3)."""
    return len(atr) >= 2 and atr[0] in (0x3B, 0x3F)


class PcscReader:
    """`ChipReaderPort` over PC/SC."""

    def __init__(self, reader: str, *, retry_base: float = RETRY_BASE,
                 retry_cap: float = RETRY_CAP, settle: float = SETTLE,
                 rng: random.Random | None = None) -> None:
        if not reader:
            raise ValueError("chip reader: the reader's name (or a prefix of it) is empty")
        if not 0 < retry_base <= retry_cap:
            raise ValueError(f"need 0 < retry_base <= retry_cap, got {retry_base!r} and "
                             f"{retry_cap!r}")
        self._wanted = reader
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._settle = settle
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._watch_ctx: int | None = None
        self._watch_lock = threading.Lock()
        self._fault = ""
        # the commands' side
        self._lock = threading.RLock()
        self._ctx: int | None = None
        self._card: int | None = None
        self._protocol = 0
        self._reader = ""
        self._state = 0  # the reader's event state when the card was powered

    # ---- watching -------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        """Emit ChipInserted / ChipRemoved / ChipReaderFailed until cancelled."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def post(event: Event) -> None:
            loop.call_soon_threadsafe(emit, event)

        def main() -> None:
            error: BaseException | None = None
            try:
                self._watch(post)
            except BaseException as exc:  # a bug: reported to the loop, never hidden
                error = exc
            finally:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_settle_future, ended, error)

        self._stop.clear()
        thread = threading.Thread(target=main, name="chip-reader", daemon=True)
        thread.start()
        try:
            await ended
        finally:
            self._stop.set()
            self._cancel_watch()
            thread.join(timeout=WAIT_MS / 1000 + 1)

    def _watch(self, post: Callable[[Event], None]) -> None:
        attempt = 0
        announced = False
        while not self._stop.is_set():
            try:
                ctx = self._establish_watch()
                reader = self._find(ctx)
                if self._fault:
                    log.warning("chip reader: %s works again", reader)
                    self._fault = ""
                attempt = 0
                self._follow(ctx, reader, post, tell_empty=announced)
                announced = False
            except _Outage as exc:
                if self._stop.is_set():
                    break
                if not self._fault:
                    self._fault = str(exc)
                    log.error("chip reader: %s; retrying", exc)
                if not announced:
                    post(ChipReaderFailed(FAULT_TEXT, str(exc)))
                    announced = True
                self._release_watch()
                self._stop.wait(self._pause(attempt))
                attempt += 1
        self._release_watch()

    def _follow(self, ctx: int, reader: str, post: Callable[[Event], None],
                tell_empty: bool) -> None:
        """Report the reader's state changes until stopped; raises _Outage."""
        known = scard.SCARD_STATE_UNAWARE
        present: bool | None = None
        while not self._stop.is_set():
            hr, states = scard.SCardGetStatusChange(ctx, WAIT_MS, [(reader, known)])
            if hr in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
                continue
            if hr != scard.SCARD_S_SUCCESS:
                raise _Outage(f"{reader}: {pcsc_text(hr)}")
            _, event, atr = states[0]
            if event & _READER_AWAY:
                raise _Outage(f"{reader} is gone")
            now = bool(event & scard.SCARD_STATE_PRESENT)
            moved = (event >> 16) != (known >> 16)  # the reader's card event counter
            text = "" if event & scard.SCARD_STATE_MUTE else bytes(atr).hex().upper()
            if present is None:
                log.info("chip reader: %s, %s", reader, f"card in, ATR {text or 'none'}"
                         if now else "no card")
                if now:
                    post(ChipInserted(text))
                elif tell_empty:
                    post(ChipRemoved())
            else:
                if present and (not now or moved):
                    log.info("chip reader: card removed")
                    post(ChipRemoved())
                if now and (not present or moved):
                    log.info("chip reader: card inserted, ATR %s", text or "none (mute)")
                    post(ChipInserted(text))
            present = now
            known = event & ~scard.SCARD_STATE_CHANGED

    def _establish_watch(self) -> int:
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr != scard.SCARD_S_SUCCESS:
            raise _Outage(f"PC/SC is not available: {pcsc_text(hr)}")
        with self._watch_lock:
            self._watch_ctx = ctx
        return int(ctx)

    def _release_watch(self) -> None:
        with self._watch_lock:
            ctx, self._watch_ctx = self._watch_ctx, None
        if ctx is not None:
            scard.SCardReleaseContext(ctx)

    def _cancel_watch(self) -> None:
        with self._watch_lock:
            if self._watch_ctx is not None:
                scard.SCardCancel(self._watch_ctx)

    def _find(self, ctx: int) -> str:
        hr, names = scard.SCardListReaders(ctx, [])
        if hr == scard.SCARD_E_NO_READERS_AVAILABLE:
            names = []
        elif hr != scard.SCARD_S_SUCCESS:
            raise _Outage(f"cannot list the readers: {pcsc_text(hr)}")
        reader = match_reader(list(names), self._wanted)
        if reader is None:
            seen = ", ".join(repr(n) for n in names) or "none"
            raise _Outage(f"no reader named {self._wanted!r} (PC/SC shows: {seen})")
        return reader

    def _pause(self, attempt: int) -> float:
        top = min(self._retry_cap, self._retry_base * 2.0 ** min(attempt, 32))
        return top / 2 + self._rng.random() * top / 2

    # ---- commands -------------------------------------------------------------------

    def power_on(self) -> bytes:
        """Connect to the card (T=0 or T=1) and return its ATR."""
        with self._lock:
            self._disconnect(scard.SCARD_UNPOWER_CARD)
            ctx = self._context()
            hr, names = scard.SCardListReaders(ctx, [])
            if hr != scard.SCARD_S_SUCCESS:
                raise self._error(hr, "power on")
            reader = match_reader(list(names), self._wanted)
            if reader is None:
                raise ChipReaderGoneError(f"chip reader: no reader named {self._wanted!r}",
                                          DEVICE)
            hr, card, protocol = scard.SCardConnect(
                ctx, reader, scard.SCARD_SHARE_SHARED,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            if hr != scard.SCARD_S_SUCCESS:
                raise self._error(hr, "power on")
            self._card, self._protocol, self._reader = card, protocol, reader
            hr, _, _, _, atr = scard.SCardStatus(card)
            if hr != scard.SCARD_S_SUCCESS:
                raise self._error(hr, "power on")
            atr = bytes(atr)
            if not usable_atr(atr):
                self._disconnect(scard.SCARD_UNPOWER_CARD)
                raise ChipMuteError(f"chip reader: the card gave no usable ATR "
                                    f"({len(atr)} bytes)", DEVICE)
            hr, states = scard.SCardGetStatusChange(
                ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
            self._state = states[0][1] & ~scard.SCARD_STATE_CHANGED if hr == 0 else 0
            log.info("chip reader: card powered, T=%d, ATR %s",
                     0 if protocol == scard.SCARD_PROTOCOL_T0 else 1, atr.hex().upper())
            return atr

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU (as the kernel built it); return data and SW1SW2."""
        if len(apdu) < 4:
            raise ValueError(f"a command APDU has at least 4 bytes, got {len(apdu)}")
        with self._lock:
            t0 = self._protocol == scard.SCARD_PROTOCOL_T0
            case4 = is_case4(apdu)
            command = apdu[:-1] if t0 and case4 else apdu
            data, sw = self._exchange(command)
            out = bytearray()
            warning: int | None = None
            if t0 and case4 and sw >> 8 in (0x62, 0x63) and not data:
                warning = sw  # Book 1 9.3.1.1.4: fetch the data, keep the warning
                command = bytes([apdu[0] & 0x03, 0xC0, 0, 0, 0])  # class bits kept
                data, sw = self._exchange(command)
            for _ in range(MAX_GET_RESPONSES + 1):
                out += data
                if len(out) > MAX_DATA:
                    raise ChipError(f"chip reader: the card sent more than {MAX_DATA} bytes "
                                    f"to INS {apdu[1]:02X}", DEVICE)
                if sw >> 8 == 0x61:
                    command = bytes([apdu[0] & 0x03, 0xC0, 0, 0, sw & 0xFF])
                elif sw >> 8 == 0x6C and len(command) <= 5:
                    command = command[:4] + bytes([sw & 0xFF])
                else:
                    if warning is not None:
                        return bytes(out), warning if sw == 0x9000 else sw
                    return bytes(out), sw
                data, sw = self._exchange(command)
            raise ChipError(f"chip reader: the card kept asking for GET RESPONSE (more than "
                            f"{MAX_GET_RESPONSES}) to INS {apdu[1]:02X}", DEVICE)

    def power_off(self) -> None:
        with self._lock:
            self._disconnect(scard.SCARD_UNPOWER_CARD)

    def close(self) -> None:
        self._stop.set()
        self._cancel_watch()
        with self._lock:
            self._disconnect(scard.SCARD_UNPOWER_CARD)
            ctx, self._ctx = self._ctx, None
            if ctx is not None:
                scard.SCardReleaseContext(ctx)

    def _exchange(self, command: bytes) -> tuple[bytes, int]:
        if self._card is None:
            raise ChipRemovedError("chip reader: no card powered (power_on first)", DEVICE)
        hr, response = scard.SCardTransmit(self._card, self._protocol, list(command))
        if hr != scard.SCARD_S_SUCCESS:
            wire.debug(">>> INS %02X: %s", command[1], pcsc_text(hr))
            raise self._error(hr, f"INS {command[1]:02X}")
        if len(response) < 2:  # vpcd's answer when its card went away mid-command
            wire.debug(">>> INS %02X <<< %d bytes", command[1], len(response))
            raise self._error(scard.SCARD_E_NOT_TRANSACTED, f"INS {command[1]:02X}",
                              f"an answer of {len(response)} bytes, no status word")
        sw = response[-2] << 8 | response[-1]
        wire.debug(">>> INS %02X (%d bytes) <<< SW %04X (%d bytes)", command[1], len(command),
                   sw, len(response) - 2)
        return bytes(response[:-2]), sw

    def _error(self, hr: int, doing: str, what: str = "") -> ChipError:
        """The ChipError for a failed PC/SC call; drops what the failure made useless."""
        text = f"chip reader: {doing}: {what or pcsc_text(hr)}"
        if hr in _UNEXPLAINED:
            hr = scard.SCARD_W_REMOVED_CARD if self._card_left() else scard.SCARD_E_TIMEOUT
            text += ("; the card left the reader" if hr == scard.SCARD_W_REMOVED_CARD
                     else "; the card is still in: it stopped answering")
        if hr in _GONE:
            self._forget_card()
            self._drop_context()
            log.warning("%s", text)
            return ChipReaderGoneError(text, DEVICE)
        if hr in _REMOVED:
            self._disconnect(scard.SCARD_LEAVE_CARD)
            log.info("%s", text)
            return ChipRemovedError(text, DEVICE)
        if hr in _MUTE:
            self._disconnect(scard.SCARD_UNPOWER_CARD)
            log.warning("%s", text)
            return ChipMuteError(text, DEVICE)
        log.warning("%s", text)
        return ChipError(text, DEVICE)

    def _card_left(self) -> bool:
        """After an unexplained failure: did the card leave (within `settle` seconds)?"""
        if self._ctx is None or not self._reader:
            return False
        hr, states = scard.SCardGetStatusChange(
            self._ctx, int(self._settle * 1000), [(self._reader, self._state)])
        if hr != scard.SCARD_S_SUCCESS:
            return hr != scard.SCARD_E_TIMEOUT
        event = states[0][1]
        return not event & scard.SCARD_STATE_PRESENT or (event >> 16) != (self._state >> 16)

    def _context(self) -> int:
        if self._ctx is None:
            hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hr != scard.SCARD_S_SUCCESS:
                raise ChipReaderGoneError(f"chip reader: PC/SC is not available: "
                                          f"{pcsc_text(hr)}", DEVICE)
            self._ctx = ctx
        return int(self._ctx)

    def _disconnect(self, disposition: int) -> None:
        card = self._forget_card()
        if card is not None:
            hr = scard.SCardDisconnect(card, disposition)
            if hr != scard.SCARD_S_SUCCESS:
                log.debug("chip reader: disconnect: %s", pcsc_text(hr))

    def _forget_card(self) -> int | None:
        card, self._card = self._card, None
        return card

    def _drop_context(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            scard.SCardReleaseContext(ctx)


def _settle_future(future: asyncio.Future[None], error: Any) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
