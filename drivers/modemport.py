"""The modem's serial port on the event loop: pyserial opens it, `FdPump` moves its bytes,
`AtSession` turns them into answers; each command's answer is a future.

    port = AtPort("/dev/ttyUSB2", 115200, on_data=..., on_urc=..., on_lost=...,
                  on_answering=...)
    port.open()                                   # ModemError if it cannot be opened
    result, lines = await port.command("AT+CSQ", timeout=5.0, prefix="+CSQ:")
    result, urc = await port.command_with_urc("AT+NETOPEN", "+NETOPEN:", 5.0, 30.0)
    exchange = port.submit(Command(...)); ...; port.forget(exchange)
    port.close()

pyserial opens and configures the port (raw, 8N1, the speed, exclusive); on
POSIX its descriptor is non-blocking, and drivers/fdpump.py hands every burst
straight to the session on the event loop, where every waiter lives, with no
thread. One timer stands for the session's `deadline()`: when it fires,
`tick` says what timed out. posterm runs on Linux only.

A command that goes unanswered raises ModemNotAnswering and counts in `silent`
(commands in a row without an answer; any answer sets it back to 0); a probe
does not count. `on_answering(False)` tells the driver when a command went
unanswered, `on_answering(True)` when one was answered. Bytes of +IPD go to
`on_data`, a known unsolicited result nobody waits for to `on_urc`, and a port
that fails or goes away to `on_lost(why)`, after which the port is closed and
every waiter has failed with ModemNotAnswering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import serial

from drivers.fdpump import FdPump
from drivers.modemat import Data, Garbage
from drivers.modemerrors import ModemError, ModemNotAnswering
from drivers.modemsession import (
    Answered,
    AtSession,
    Command,
    Event,
    Prompted,
    Stray,
    Superseded,
    TimedOut,
    Unsolicited,
    UrcArrived,
    safe,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass
class Exchange:
    """A submitted command's futures: its final result and info lines, and its URC."""

    command: Command
    answer: asyncio.Future[tuple[str, list[str]]]
    urc: asyncio.Future[str] | None = None
    prompted: bool = False  # the `>` came and the data was written


class AtPort:
    def __init__(self, path: str, baudrate: int, *, on_data: Callable[[bytes], None],
                 on_urc: Callable[[str], None], on_lost: Callable[[str], None],
                 on_answering: Callable[[bool], None]) -> None:  # fmt: skip
        self.path, self.baudrate = path, baudrate
        self._on_data, self._on_urc = on_data, on_urc
        self._on_lost, self._on_answering = on_lost, on_answering
        self._serial: serial.Serial | None = None
        self._pump: FdPump | None = None
        self._session = AtSession()
        self._exchanges: dict[Command, Exchange] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.silent = 0  # commands in a row without an answer (kept across reopening)
        self.lost = False  # the port failed or went away (until opened again)

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        if self._serial is not None:
            return
        try:
            port = serial.Serial(self.path, self.baudrate, bytesize=serial.EIGHTBITS,
                                 parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                 timeout=0, exclusive=True)  # fmt: skip
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ModemError(f"modem: cannot open {self.path}: {exc}") from None
        self._serial, self.lost = port, False
        self._session = AtSession()
        self._pump = FdPump(port.fileno(), self._received, self._failed)
        log.info("modem: port %s open at %d baud", self.path, self.baudrate)

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pump is not None:
            self._pump.close()
            self._pump = None
        with contextlib.suppress(OSError, serial.SerialException):
            port.close()
        self._session = AtSession()
        error = ModemNotAnswering(f"MODEM NOT ANSWERING: port {self.path} closed")
        for exchange in self._exchanges.values():
            for future in (exchange.answer, exchange.urc):
                if future is not None and not future.done():
                    future.set_exception(error)
        self._exchanges.clear()

    # -- commands ---------------------------------------------------------------------
    def submit(self, command: Command) -> Exchange:
        """Queue `command`; `forget` the exchange when done with it (even on an error)."""
        if self._serial is None:
            raise ModemNotAnswering(f"MODEM NOT ANSWERING: its port {self.path} is not open")
        loop = asyncio.get_running_loop()
        exchange = Exchange(command, loop.create_future(),
                            loop.create_future() if command.urc is not None else None)
        self._exchanges[command] = exchange
        self._service(self._session.submit(command))
        return exchange

    def forget(self, exchange: Exchange) -> None:
        """Done with `exchange`: the session forgets its command wherever it is."""
        self._exchanges.pop(exchange.command, None)
        for future in (exchange.answer, exchange.urc):
            if future is not None and future.done() and not future.cancelled():
                future.exception()  # retrieved: an error nobody awaited is not reported
        if self._serial is not None:
            self._session.cancel(exchange.command)
            self._service([])

    async def command(self, text: str, *, timeout: float, prefix: str | None = None,
                      probe: bool = False) -> tuple[str, list[str]]:  # fmt: skip
        """Send one command; its final result ("OK", "ERROR", "+CME ERROR: n") and info
        lines. ModemNotAnswering if no final result comes within the timeout."""
        exchange = self.submit(Command(text, timeout, prefix=prefix, probe=probe))
        try:
            return await exchange.answer
        finally:
            self.forget(exchange)

    async def command_with_urc(self, text: str, urc: str, timeout: float,
                               urc_timeout: float) -> tuple[str, str]:  # fmt: skip
        """A command answered OK and then by an unsolicited result: (result, that line);
        (result, "") if the result is not OK."""
        exchange = self.submit(Command(text, timeout, urc=urc, urc_timeout=urc_timeout))
        try:
            result, _ = await exchange.answer
            if result != "OK" or exchange.urc is None:
                return result, ""
            return result, await exchange.urc
        finally:
            self.forget(exchange)

    # -- the session's events ---------------------------------------------------------
    def _received(self, data: bytes) -> None:
        self._service(self._session.receive(data, asyncio.get_running_loop().time()))

    def _failed(self, why: str, exc: OSError | None) -> None:
        log.error("modem: port %s lost: %s", self.path, why)
        self.lost = True
        self._on_lost(why)
        self.close()

    def _tick(self) -> None:
        self._timer = None
        self._service(self._session.tick(asyncio.get_running_loop().time()))

    def _service(self, events: list[Event]) -> None:
        """Hand `events` on, write what the session has to say, set the timer."""
        for event in events:
            self._handle(event)
        if self._pump is None:
            return
        loop = asyncio.get_running_loop()
        out = self._session.outgoing(loop.time())
        if out:
            self._pump.write(out)
        if self._pump is None:  # the write failed: the port is closed
            return
        if self._timer is not None:
            self._timer.cancel()
        deadline = self._session.deadline()
        self._timer = loop.call_at(deadline, self._tick) if deadline is not None else None

    def _handle(self, event: Event) -> None:
        if isinstance(event, Data):
            self._on_data(event.payload)
        elif isinstance(event, Unsolicited):
            self._on_urc(event.text)
        elif isinstance(event, Garbage):
            log.warning("modem: garbage on the line: %s (%d bytes: %s)", event.reason,
                        event.length, event.preview or "-")
        elif isinstance(event, Stray):
            if event.final:
                log.info("modem: %s with no command waiting (a late answer); ignored",
                         event.text)
            else:
                log.info("modem: unsolicited %s; ignored", safe(event.text))
        else:
            self._correlated(event)

    def _correlated(self, event: Answered | Prompted | UrcArrived | TimedOut | Superseded,
                    ) -> None:  # fmt: skip
        exchange = self._exchanges.get(event.command)
        if exchange is None:
            return
        if isinstance(event, Prompted | Answered):
            self.silent = 0
            self._on_answering(True)
        if isinstance(event, Prompted):
            exchange.prompted = True
        elif isinstance(event, Answered):
            _settle(exchange.answer, (event.result, list(event.lines)))
        elif isinstance(event, UrcArrived):
            _settle(exchange.urc, event.line)
        elif isinstance(event, Superseded):
            if exchange.urc is not None:
                exchange.urc.cancel()
        else:
            self._timed_out(exchange, event)

    def _timed_out(self, exchange: Exchange, event: TimedOut) -> None:
        command = exchange.command
        if event.waiting == "urc":
            assert command.urc is not None
            after = ("after the data" if command.data is not None else
                     f"within {command.urc_timeout:g} s after {command.name}")
            _fail(exchange.urc, ModemNotAnswering(
                f"MODEM NOT ANSWERING: no {command.urc[:-1]} {after}"))
            return
        if not command.probe:
            self.silent += 1
        if event.waiting == "data":
            _fail(exchange.answer, ModemNotAnswering(
                f"MODEM NOT ANSWERING: no OK after the data of {command.name}"))
            return
        if not command.probe:
            self._on_answering(False)
            log.warning("modem: no answer to %s within %g s (%d in a row)", command.name,
                        command.timeout, self.silent)
        _fail(exchange.answer, ModemNotAnswering(
            f"MODEM NOT ANSWERING: no answer to {command.name} within {command.timeout:g} s"))


def _settle(future: asyncio.Future[_T] | None, value: _T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[_T] | None, exc: Exception) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)
