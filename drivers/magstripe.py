"""Magnetic stripe card reader on a serial port (pyserial).

A reader thread owns the port: it reads with a short timeout, cuts the byte
stream into lines at CR (or LF), parses each line and hands the resulting event
to the event loop with `call_soon_threadsafe`. `run` delivers those events to
`emit` until it is cancelled, then stops the thread.

Bytes the reader never ends with a line end are given up once the line has been
quiet for `inter_byte_timeout` seconds (see `LineFramer`): every input ends in a
`CardSwiped` or in `CardReadFailed` events, and a bad read never spoils the next
swipe. Each bad read is one `CardReadFailed` and one WARNING log line with its
reason and a detail of lengths and counts.

A serial error (the reader unplugged) is reported once per outage as a
`DeviceFault`; the thread then tries to reopen the port every `retry_interval`
seconds. Track data never reaches a log: the wire logger shows the line length
and the masked account number of a good swipe only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from drivers.tracks import CARD_NOT_READ, MAX_LINE, overlong, parse_swipe, unterminated
from firmware.core.card import CardData
from firmware.core.events import CardReadFailed, CardSwiped, DeviceFault, Event
from firmware.errors import CardReaderError
from firmware.ports import Emit

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.card_reader")

DEVICE = "card_reader"
READ_TIMEOUT = 0.1  # seconds a read may block, which bounds how long stopping takes
RETRY_INTERVAL = 2.0  # seconds between attempts to reopen a lost port
# Seconds of silence after which bytes without a line end are given up as a bad read.
# A swipe is one burst (~0.1 s, ~1 ms between bytes); a person cannot swipe again this
# fast. The framer's, not pyserial's inter_byte_timeout. Noticed within one READ_TIMEOUT.
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
    two reads, because the reading thread may have been held up while the bytes
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
        if not self.pending or now - self._last < self._timeout:
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


@dataclass(frozen=True)
class _ThreadFailed:
    error: BaseException


_Item = Event | _ThreadFailed
_Post = Callable[[_Item], None]


class MagstripeReader:
    """`CardReaderPort` for a serial magnetic stripe reader in ASCII mode."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        retry_interval: float = RETRY_INTERVAL,
        read_timeout: float = READ_TIMEOUT,
        inter_byte_timeout: float = INTER_BYTE_TIMEOUT,
    ) -> None:
        if not inter_byte_timeout > 0:
            raise ValueError(f"inter_byte_timeout must be positive, got {inter_byte_timeout!r}")
        self._port = port
        self._baudrate = baudrate
        self._retry_interval = retry_interval
        self._read_timeout = read_timeout
        self._inter_byte_timeout = inter_byte_timeout
        self._serial: serial.SerialBase | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._serial is not None

    def open(self) -> None:
        """Open the port now, so a wrong path shows at start. Raises CardReaderError."""
        if self._serial is None:
            self._serial = self._open_port()

    async def run(self, emit: Emit) -> None:
        """Emit CardSwiped / CardReadFailed / DeviceFault until cancelled."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stop = threading.Event()

        def post(item: _Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        thread = threading.Thread(
            target=self._pump_guarded, args=(post, stop), name="card-reader", daemon=True
        )
        self._stop, self._thread = stop, thread
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _ThreadFailed):
                    raise RuntimeError("card reader thread stopped unexpectedly") from item.error
                emit(item)
        finally:
            self._stop_thread()

    def close(self) -> None:
        self._stop_thread()
        self._close_port()

    # -- the reader thread ---------------------------------------------------

    def _pump_guarded(self, post: _Post, stop: threading.Event) -> None:
        try:
            self._pump(post, stop)
        except Exception as exc:  # hand a programming error to run(), never lose it
            log.error("card reader thread failed: %s", type(exc).__name__)
            post(_ThreadFailed(exc))

    def _pump(self, post: _Post, stop: threading.Event) -> None:
        framer = LineFramer(inter_byte_timeout=self._inter_byte_timeout)
        in_outage = False
        while not stop.is_set():
            port = self._serial
            if port is None:
                try:
                    port = self._serial = self._open_port()
                except CardReaderError as exc:
                    if not in_outage:
                        log.warning("%s", exc)
                        post(DeviceFault(DEVICE, str(exc)))
                        in_outage = True
                    stop.wait(self._retry_interval)
                    continue
                if in_outage:
                    log.info("card reader: %s is back", self._port)
                    in_outage = False
            try:
                data = port.read(getattr(port, "in_waiting", 0) or 1)
            except (serial.SerialException, OSError) as exc:
                message = f"card reader: lost {self._port}: {_read_failure(exc)}"
                for item in framer.flush():  # a swipe cut short by the fault: one bad read
                    post(event_for(item))
                if not in_outage:
                    log.warning("%s", message)
                    post(DeviceFault(DEVICE, message))
                    in_outage = True
                self._close_port()
                stop.wait(self._retry_interval)
                continue
            for event in events_from_read(framer, data, time.monotonic()):
                post(event)

    def _open_port(self) -> serial.SerialBase:
        try:
            port = serial.serial_for_url(
                self._port, baudrate=self._baudrate, timeout=self._read_timeout
            )
        except (serial.SerialException, OSError, ValueError) as exc:
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

    def _stop_thread(self) -> None:
        stop, thread = self._stop, self._thread
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._read_timeout + 1.0)
        self._stop = self._thread = None


def event_for(item: Framed) -> Event:
    """The event for one framed item; a bad read also logs its one line. Never raises."""
    try:
        return _event_for(item)
    except Exception as exc:  # a parser bug must not kill the reader thread
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
    if _NO_DATA in str(exc):
        return "the device disconnected"
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    """A short reason for an OS or serial error, without the library's wrapping."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number > 0:
        return os.strerror(number)
    return str(exc) or type(exc).__name__
