"""Magnetic stripe card reader on a serial port (pyserial).

The port's file descriptor is watched by the event loop (`add_reader`): no
thread, no polling. When the reader sends bytes, `run` reads what the kernel
holds without blocking, cuts the byte stream into lines at CR (or LF), parses
each line and hands the resulting event to `emit`, until it is cancelled.

Bytes the reader never ends with a line end are given up once the line has been
quiet for `inter_byte_timeout` seconds (see `LineFramer`): every input ends in a
`CardSwiped` or in `CardReadFailed` events, and a bad read never spoils the next
swipe. Each bad read is one `CardReadFailed` and one WARNING log line with its
reason and a detail of lengths and counts.

A reader that is not there, or goes away (a USB-serial reader unplugged: the
port reads EIO or hangs up, its path disappears; any SerialException or OSError)
starts an outage: one ERROR log line naming the path and the error, one
`ConditionChanged("card_reader", "CARD READER FAULT")`, and a swipe the fault cut
short becomes one bad read. `run` then tries to reopen the path after pauses
that double from `retry_base` up to `retry_cap` seconds, each drawn at random in
its upper half (so a fleet does not retry in step, yet never hammers the port),
and when the port opens again logs that the reader is back, emits
`ConditionChanged("card_reader", "")` and goes on reading. A reader missing at
start (`open(required=False)`) begins in that state. `run` itself never fails for
a device problem, so its supervisor never restarts it for one.

Idle, the reader never wakes the process: only bytes from the reader do, and
the framer's timer runs only while part of a line is held; during an outage it
wakes once per reopen attempt. Track data never reaches a log:
the wire logger shows the line length and the masked account number of a good
swipe only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field

import serial

from drivers.tracks import CARD_NOT_READ, MAX_LINE, overlong, parse_swipe, unterminated
from firmware.core.card import CardData
from firmware.core.events import CardReadFailed, CardSwiped, ConditionChanged, Event
from firmware.errors import CardReaderError
from firmware.ports import Emit

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.card_reader")

DEVICE = "card_reader"
FAULT_TEXT = "CARD READER FAULT"  # the idle screen's line while the reader is away
# Pauses between attempts to reopen a lost port: the ceiling doubles from RETRY_BASE to
# RETRY_CAP; each pause is drawn in the upper half of its ceiling. A reader plugged back
# in is found again within RETRY_CAP seconds.
RETRY_BASE = 0.5
RETRY_CAP = 8.0
# Seconds of silence after which bytes without a line end are given up as a bad read.
# A swipe is one burst (~0.1 s, ~1 ms between bytes); a person cannot swipe again this
# fast. The framer's, not pyserial's inter_byte_timeout: a timer runs only while a line is
# held.
INTER_BYTE_TIMEOUT = 0.3
_LINE_END = re.compile(rb"[\r\n]")
# pyserial's wording when a port is readable but gives nothing: the device went away.
_NO_DATA = "returned no data"


@dataclass(frozen=True)
class Overlong:
    """More than the longest allowed line arrived without a line end."""

    length: int


@dataclass(frozen=True)
class Unterminated:
    """Bytes no line end followed: the reader went quiet for `silence` seconds after them
    (None: the port was lost first)."""

    data: bytes = field(repr=False)  # may hold track data: never logged
    silence: float | None


Framed = bytes | Overlong | Unterminated


class LineFramer:
    """Cut the reader's byte stream into lines at CR or LF; empty lines are dropped.

    The framer has no clock of its own: `feed(data, now)` gives it what one read
    of the port returned at time `now`, and `expire(now)` tells it that a read
    found nothing. A reader sends a whole swipe in one burst (about 100 bytes at
    9600 baud in 0.1 s, with gaps of about 1 ms), so bytes still without a line
    end once the line has been quiet for `inter_byte_timeout` seconds are given up
    and reported once, as `Unterminated`: they never spoil the next swipe.

    A line that grows past `max_line` bytes is reported once as `Overlong`, and
    the rest of it is discarded up to the next line end or the next pause of
    `inter_byte_timeout`, whichever comes first, so a swipe after a pause is read
    even if the noise before it never ended.

    Only `expire` judges a pause: `feed` never splits a line by the time between
    two reads, because the reader may have been held up while the bytes
    of one swipe queued in the kernel. A read that found nothing proves the line
    was quiet since the last read that found something.

    A start sentinel alone never starts a new line: `;` also opens track 2 in the
    middle of every swipe. A swipe starts after a pause, and `parse_swipe` turns a
    line that does not start with a sentinel into a bad read.
    """

    def __init__(
        self, max_line: int = MAX_LINE, inter_byte_timeout: float = INTER_BYTE_TIMEOUT
    ) -> None:
        if not inter_byte_timeout > 0:
            raise ValueError(f"inter_byte_timeout must be positive, got {inter_byte_timeout!r}")
        self._max_line = max_line
        self._timeout = inter_byte_timeout
        self._buffer = bytearray()
        self._discarding = False
        self._last = 0.0  # when the last bytes arrived

    @property
    def inter_byte_timeout(self) -> float:
        return self._timeout

    @property
    def quiet_deadline(self) -> float:
        """When a held part of a line is given up if nothing more arrives (monotonic)."""
        return self._last + self._timeout

    @property
    def pending(self) -> bool:
        """True while part of a line is held or an overlong line is being discarded."""
        return bool(self._buffer) or self._discarding

    def feed(self, data: bytes, now: float) -> list[Framed]:
        """Take the bytes one read returned at `now`; return the lines they complete."""
        out: list[Framed] = []
        if not data:
            return out
        self._last = now
        pieces = _LINE_END.split(data)
        for index, piece in enumerate(pieces):
            if not self._discarding:
                self._buffer += piece
                if len(self._buffer) > self._max_line:
                    out.append(Overlong(len(self._buffer)))
                    self._buffer.clear()
                    self._discarding = True
            if index < len(pieces) - 1:  # this piece was ended by CR or LF
                if self._buffer:
                    out.append(bytes(self._buffer))
                    self._buffer.clear()
                self._discarding = False
        return out

    def expire(self, now: float) -> list[Framed]:
        """A read found nothing at `now`: give up a line that has been quiet long enough."""
        if not self.pending or now < self.quiet_deadline:
            return []
        return self._give_up(self._timeout)

    def flush(self) -> list[Framed]:
        """The port was lost: report the part of a line held now, then start afresh."""
        return self._give_up(None)

    def _give_up(self, silence: float | None) -> list[Framed]:
        out: list[Framed] = []
        if self._buffer:
            out.append(Unterminated(bytes(self._buffer), silence))
        self.reset()
        return out

    def reset(self) -> None:
        """Forget whatever is held, without a report."""
        self._buffer.clear()
        self._discarding = False


def events_from_read(framer: LineFramer, data: bytes, now: float) -> list[Event]:
    """The events one read of the port gives: `data` read at `now`, b"" when it found nothing.

    Each bad read is one `CardReadFailed` and one WARNING log line; this never raises.
    """
    items = framer.feed(data, now) if data else framer.expire(now)
    return [event_for(item) for item in items]


class MagstripeReader:
    """`CardReaderPort` for a serial magnetic stripe reader in ASCII mode."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        retry_base: float = RETRY_BASE,
        retry_cap: float = RETRY_CAP,
        inter_byte_timeout: float = INTER_BYTE_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        if not inter_byte_timeout > 0:
            raise ValueError(f"inter_byte_timeout must be positive, got {inter_byte_timeout!r}")
        if not 0 < retry_base <= retry_cap:
            raise ValueError(f"need 0 < retry_base <= retry_cap, got {retry_base!r} and "
                             f"{retry_cap!r}")
        self._port = port
        self._baudrate = baudrate
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._inter_byte_timeout = inter_byte_timeout
        self._rng = rng or random.Random()
        self._serial: serial.SerialBase | None = None
        self._fault = ""  # the outage's message, logged once; "" while the reader works
        self._announced = False  # the core was told CARD READER FAULT and not yet told it ended

    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._serial is not None

    @property
    def fault(self) -> str:
        """Why the reader is away ("" while it works)."""
        return self._fault

    def open(self, *, required: bool = True) -> None:
        """Open the port now, so a wrong path shows at start. Raises CardReaderError, or
        with `required=False` logs it once and leaves the reader in the fault state: `run`
        then reports CARD READER FAULT and keeps trying to open it."""
        if self._serial is not None:
            return
        try:
            self._serial = self._open_port()
        except CardReaderError as exc:
            if required:
                raise
            self._outage(f"{exc}; starting without it, retrying")

    async def run(self, emit: Emit) -> None:
        """Emit CardSwiped / CardReadFailed / ConditionChanged until cancelled."""
        framer = LineFramer(inter_byte_timeout=self._inter_byte_timeout)
        attempt = 0  # reopen attempts that failed in a row
        while True:
            port = self._serial
            if port is None:
                try:
                    port = self._serial = self._open_port()
                except CardReaderError as exc:
                    self._outage(f"{exc}; retrying", emit)
                    await asyncio.sleep(self._pause(attempt))
                    attempt += 1
                    continue
                attempt = 0
                self._back(emit)
            elif self._fault or self._announced:  # opened by open(): the outage is over
                self._back(emit)
            try:
                await self._read(port, framer, emit)
            except (serial.SerialException, OSError) as exc:
                for item in framer.flush():  # a swipe cut short by the fault: one bad read
                    emit(event_for(item))
                self._outage(f"card reader: lost {self._port}: {_read_failure(exc)}; "
                             "reopening it", emit)
                self._close_port()
                await asyncio.sleep(self._pause(0))
                attempt = 1

    def close(self) -> None:
        self._close_port()

    async def _read(self, port: serial.SerialBase, framer: LineFramer, emit: Emit) -> None:
        """Read the open port until it fails (raises SerialException or OSError).

        The port's descriptor is watched by the event loop: the process sleeps until
        the reader sends something. The only timer is the framer's, and only while part
        of a line is held: a line quiet for `inter_byte_timeout` is given up."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = port.fileno()
        loop.add_reader(fd, readable.set)
        try:
            while True:
                if framer.pending:
                    left = framer.quiet_deadline - time.monotonic()
                    try:
                        await asyncio.wait_for(readable.wait(), max(0.0, left))
                    except TimeoutError:
                        for event in events_from_read(framer, b"", time.monotonic()):
                            emit(event)
                        continue
                else:
                    await readable.wait()
                readable.clear()
                # non-blocking (timeout 0): what the kernel holds now; a readable port
                # that gives nothing has hung up, and pyserial raises for it
                data = port.read(getattr(port, "in_waiting", 0) or 1)
                for event in events_from_read(framer, data, time.monotonic()):
                    emit(event)
        finally:
            loop.remove_reader(fd)

    def _outage(self, message: str, emit: Emit | None = None) -> None:
        """The reader is away: log it and tell the core, each once per outage."""
        if not self._fault:
            log.error("%s", message)
            self._fault = message
        if emit is not None and not self._announced:
            emit(ConditionChanged(DEVICE, FAULT_TEXT))
            self._announced = True

    def _back(self, emit: Emit) -> None:
        if self._fault:
            log.warning("card reader: %s works again", self._port)
            self._fault = ""
        if self._announced:
            emit(ConditionChanged(DEVICE, ""))
            self._announced = False

    def _pause(self, attempt: int) -> float:
        """Seconds before reopen attempt `attempt` + 1: in the upper half of the ceiling."""
        top = min(self._retry_cap, self._retry_base * 2.0 ** min(attempt, 32))
        return top / 2 + self._rng.random() * top / 2

    def _open_port(self) -> serial.SerialBase:
        try:
            port = serial.serial_for_url(self._port, baudrate=self._baudrate, timeout=0)
            port.fileno()  # a port the event loop can watch (a tty, a pty)
        except (serial.SerialException, OSError, ValueError, AttributeError) as exc:
            raise CardReaderError(
                f"card reader: cannot open {self._port}: {_reason(exc)}"
            ) from exc
        log.info("card reader: opened %s at %d baud", self._port, self._baudrate)
        return port

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("card reader: closing %s: %s", self._port, _reason(exc))


def event_for(item: Framed) -> Event:
    """The event for one framed item; a bad read also logs its one line. Never raises."""
    try:
        return _event_for(item)
    except Exception as exc:  # a parser bug must not stop the reader
        log.error("bad card read: %s (the line could not be decoded: %s)",
                  CARD_NOT_READ, type(exc).__name__)
        return CardReadFailed(CARD_NOT_READ, f"the line could not be decoded: {type(exc).__name__}")


def _event_for(item: Framed) -> Event:
    if isinstance(item, Overlong):
        return _bad_read(overlong(MAX_LINE), item.length)
    if isinstance(item, Unterminated):
        return _bad_read(unterminated(item.data, item.silence), len(item.data))
    result = parse_swipe(item)
    if isinstance(result, CardData):
        wire.debug("<<< swipe (%d bytes) card %s", len(item), result.masked)
        return CardSwiped(result)
    return _bad_read(result, len(item))


def _bad_read(event: CardReadFailed, length: int) -> CardReadFailed:
    """Log a bad read: its one line, with the reason and the detail, never card data."""
    log.warning("bad card read: %s (%s; %d bytes)", event.reason, event.detail, length)
    return event


def _read_failure(exc: BaseException) -> str:
    if _NO_DATA in str(exc):  # a tty that hung up reads as end of file, with no errno
        return "the device hung up (disconnected)"
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    """A short reason for an OS or serial error, without the library's wrapping: the
    error's text and its errno name ("Input/output error (EIO)"). pyserial wraps a
    failed read's OSError in a SerialException without errno: it is found in the chain."""
    seen: BaseException | None = exc
    for _ in range(3):
        if seen is None:
            break
        number = getattr(seen, "errno", None)
        if isinstance(number, int) and number > 0:
            return f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__
