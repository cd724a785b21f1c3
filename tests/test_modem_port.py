"""The modem's bytes on the event loop: drivers/fdpump.py on a pipe, and drivers/modemport.py
on a pseudo-terminal whose other end the test plays as the modem."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from drivers.fdpump import FdPump
from drivers.modemerrors import ModemError, ModemNotAnswering
from drivers.modemport import AtPort
from drivers.modemsession import Command


# -- the pump -----------------------------------------------------------------------------
def test_pump_hands_bursts_on_and_writes_more_than_the_descriptor_takes_at_once() -> None:
    async def main() -> None:
        read_end, write_end = os.pipe()
        got = bytearray()
        lost: list[Any] = []
        arrived = asyncio.Event()

        def on_data(data: bytes) -> None:
            got.extend(data)
            if len(got) >= len(big):
                arrived.set()

        reader = FdPump(read_end, on_data, lambda why, exc: lost.append((why, exc)))
        writer = FdPump(write_end, lambda data: None, lambda why, exc: lost.append((why, exc)))
        big = os.urandom(1 << 20)  # far more than a pipe holds
        writer.write(big)
        assert 0 < writer.pending < len(big)  # the rest waits for the loop
        await asyncio.wait_for(arrived.wait(), 10)
        assert bytes(got) == big and writer.pending == 0 and lost == []
        writer.close()
        os.close(write_end)  # the end of the stream: told once, reading stops
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert lost == [("the port was closed (device gone)", None)]
        reader.close()
        os.close(read_end)

    asyncio.run(main())


def test_pump_tells_a_failed_write_drops_what_waits_and_never_closes_the_fd() -> None:
    async def main() -> None:
        read_end, write_end = os.pipe()
        lost: list[Any] = []
        pump = FdPump(write_end, lambda data: None, lambda why, exc: lost.append((why, exc)))
        os.close(read_end)
        pump.write(b"x")  # EPIPE
        assert [why for why, _ in lost] == ["write failed: Broken pipe"]
        assert isinstance(lost[0][1], BrokenPipeError) and pump.pending == 0
        pump.close()
        pump.write(b"after close")
        assert pump.pending == 0 and len(lost) == 1
        os.fstat(write_end)  # still open: the owner closes it
        os.close(write_end)

    asyncio.run(main())


# -- the port -----------------------------------------------------------------------------
class FakeModem:
    """The pty's master: the test reads what the port wrote and answers for the modem."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)

    async def read(self, size: int) -> bytes:
        got = b""
        for _ in range(200):
            try:
                got += os.read(self.master, 4096)
            except BlockingIOError:
                pass
            if len(got) >= size:
                return got
            await asyncio.sleep(0.01)
        return got

    def say(self, data: bytes) -> None:
        os.write(self.master, data)

    def hang_up(self) -> None:
        """The device goes away: reads on the port fail."""
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)


def with_port(body: Callable[[AtPort, FakeModem, dict[str, list[Any]]], Awaitable[None]],
              ) -> None:  # fmt: skip
    async def main() -> None:
        modem = FakeModem()
        seen: dict[str, list[Any]] = {"data": [], "urc": [], "lost": [], "answering": []}
        port = AtPort(modem.path, 115200, on_data=seen["data"].append,
                      on_urc=seen["urc"].append, on_lost=seen["lost"].append,
                      on_answering=seen["answering"].append)  # fmt: skip
        port.open()
        try:
            await body(port, modem, seen)
        finally:
            port.close()
            modem.close()

    asyncio.run(main())


def test_port_answers_in_order_and_hands_data_and_urcs_on() -> None:
    async def body(port: AtPort, modem: FakeModem, seen: dict[str, list[Any]]) -> None:
        first = asyncio.ensure_future(port.command("AT+CSQ", timeout=2.0, prefix="+CSQ:"))
        second = asyncio.ensure_future(port.command("AT+CREG?", timeout=2.0, prefix="+CREG:"))
        assert await modem.read(7) == b"AT+CSQ\r"  # only the first: one at a time
        modem.say(b"\r\n+CSQ: 20,0\r\n\r\n+IPD3\r\nOK\r\n\r\n+IPCLOSE: 0,1\r\n\r\nOK\r\n")
        assert await first == ("OK", ["+CSQ: 20,0"])
        assert await modem.read(9) == b"AT+CREG?\r"
        modem.say(b"\r\n+CREG: 0,5\r\n\r\nOK\r\n")
        assert await second == ("OK", ["+CREG: 0,5"])
        assert seen["data"] == [b"OK\r"] and seen["urc"] == ["+IPCLOSE: 0,1"]
        assert seen["answering"] == [True, True] and port.silent == 0

    with_port(body)


def test_port_timeouts_count_silence_and_a_probe_does_not() -> None:
    async def body(port: AtPort, modem: FakeModem, seen: dict[str, list[Any]]) -> None:
        with pytest.raises(ModemNotAnswering, match="no answer to AT within 0.1 s"):
            await port.command("AT", timeout=0.1, probe=True)
        assert port.silent == 0 and seen["answering"] == []
        for n in (1, 2):
            with pytest.raises(ModemNotAnswering, match=r"no answer to AT\+CSQ within 0.1 s"):
                await port.command("AT+CSQ", timeout=0.1, prefix="+CSQ:")
            assert port.silent == n
        assert seen["answering"] == [False, False]
        with pytest.raises(ModemNotAnswering, match=r"no \+NETOPEN within 0.1 s after "):
            await asyncio.gather(port.command_with_urc("AT+NETOPEN", "+NETOPEN:", 1.0, 0.1),
                                 _answer(modem, b"\r\nOK\r\n"))
        assert port.silent == 0 and seen["answering"][-1] is True

    with_port(body)


async def _answer(modem: FakeModem, data: bytes) -> None:
    await modem.read(1)
    modem.say(data)


def test_port_sends_data_after_the_prompt() -> None:
    async def body(port: AtPort, modem: FakeModem, seen: dict[str, list[Any]]) -> None:
        exchange = port.submit(Command("AT+CIPSEND=0,5", 1.0, data=b"hello", urc="+CIPSEND:",
                                       urc_timeout=1.0))  # fmt: skip
        try:
            assert await modem.read(15) == b"AT+CIPSEND=0,5\r"
            modem.say(b"\r\n>")
            assert await modem.read(5) == b"hello"
            modem.say(b"\r\nOK\r\n\r\n+CIPSEND: 0,5,5\r\n")
            assert await exchange.answer == ("OK", []) and exchange.prompted
            assert exchange.urc is not None and await exchange.urc == "+CIPSEND: 0,5,5"
        finally:
            port.forget(exchange)

    with_port(body)


def test_a_cancelled_command_frees_the_port_for_the_next() -> None:
    async def body(port: AtPort, modem: FakeModem, seen: dict[str, list[Any]]) -> None:
        hung = asyncio.ensure_future(port.command("AT+CSQ", timeout=30.0))
        assert await modem.read(7) == b"AT+CSQ\r"
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
        nxt = asyncio.ensure_future(port.command("ATE0", timeout=2.0))
        assert await modem.read(5) == b"ATE0\r"
        modem.say(b"\r\nOK\r\n")
        assert await nxt == ("OK", [])

    with_port(body)


def test_a_port_that_goes_away_fails_every_waiter_and_says_so() -> None:
    async def body(port: AtPort, modem: FakeModem, seen: dict[str, list[Any]]) -> None:
        waiting = asyncio.ensure_future(port.command("AT+CSQ", timeout=30.0))
        await modem.read(7)
        modem.hang_up()
        with pytest.raises(ModemNotAnswering, match="closed"):
            await asyncio.wait_for(waiting, 5)
        assert len(seen["lost"]) == 1 and port.lost and not port.is_open
        with pytest.raises(ModemNotAnswering, match="is not open"):
            await port.command("AT", timeout=1.0)

    with_port(body)


def test_a_port_that_cannot_be_opened_is_a_modem_error() -> None:
    port = AtPort("/nonexistent/ttyUSB9", 115200, on_data=print, on_urc=print, on_lost=print,
                  on_answering=print)  # fmt: skip
    with pytest.raises(ModemError, match="cannot open /nonexistent/ttyUSB9"):
        port.open()
