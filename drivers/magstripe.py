"""Magnetic stripe card reader on a serial port (pyserial).

A reader thread owns the port: it reads with a short timeout, cuts the byte
stream into lines at CR (or LF), parses each line and hands the resulting event
to the event loop with `call_soon_threadsafe`. `run` delivers those events to
`emit` until it is cancelled, then stops the thread.

A serial error (the reader unplugged) is reported once per outage as a
`DeviceFault`; the thread then tries to reopen the port every `retry_interval`
seconds. Track data never reaches a log: the wire logger shows the line length
and the masked account number only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import serial

from drivers.tracks import CARD_NOT_READ, MAX_LINE, parse_swipe
from firmware.core.card import CardData
from firmware.core.events import CardReadFailed, CardSwiped, DeviceFault, Event
from firmware.errors import CardReaderError
from firmware.ports import Emit

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.card_reader")

DEVICE = "card_reader"
READ_TIMEOUT = 0.1  # seconds a read may block, which bounds how long stopping takes
RETRY_INTERVAL = 2.0  # seconds between attempts to reopen a lost port
_LINE_END = re.compile(rb"[\r\n]")
# pyserial's wording when a port is readable but gives nothing: the device went away.
_NO_DATA = "returned no data"


@dataclass(frozen=True)
class Overlong:
    """More than the longest allowed line arrived without a line end."""

    length: int


class LineFramer:
    """Cut the reader's byte stream into lines at CR or LF; empty lines are dropped.

    A line that grows past `max_line` bytes is reported once as `Overlong`, and
    the rest of it, up to the next line end, is discarded.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        out: list[bytes | Overlong] = []
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

    def reset(self) -> None:
        self._buffer.clear()
        self._discarding = False


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
    ) -> None:
        self._port = port
        self._baudrate = baudrate
        self._retry_interval = retry_interval
        self._read_timeout = read_timeout
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
        framer = LineFramer()
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
                if not in_outage:
                    log.warning("%s", message)
                    post(DeviceFault(DEVICE, message))
                    in_outage = True
                self._close_port()
                framer.reset()
                stop.wait(self._retry_interval)
                continue
            for item in framer.feed(data):
                post(_event_for(item))

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


def _event_for(item: bytes | Overlong) -> Event:
    if isinstance(item, Overlong):
        wire.debug("<<< %d bytes without a line end: discarded", item.length)
        return CardReadFailed(
            CARD_NOT_READ, f"more than {MAX_LINE} bytes without a carriage return"
        )
    result = parse_swipe(item)
    if isinstance(result, CardData):
        wire.debug("<<< swipe (%d bytes) card %s", len(item), result.masked)
        return CardSwiped(result)
    wire.debug("<<< swipe (%d bytes) bad read: %s", len(item), result.reason)
    log.info("bad card read: %s (%s)", result.reason, result.detail)
    return result


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
