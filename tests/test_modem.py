"""The modem driver: the AT parser against hostile streams, and the driver against hwsim's
modem over its pseudo-terminal (power through GPIO, failures, sockets, TLS, recovery)."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from drivers.modem import (
    DataSessionRefused,
    Modem,
    ModemError,
    ModemNotAnswering,
    ModemPower,
    NoSignalError,
    NoSimError,
    RegistrationDenied,
    bars_for,
)
from drivers.modemstatus import parse_registration, parse_rssi
from drivers.modemat import AtParser, Data, Garbage, Line, Prompt
from drivers.remote import RemoteGPIO
from firmware.core import iso
from hwsim.client import HwsimClient
from hwsim.sim import Simulator
from hwsim.testca import make_ca, make_server_cert

IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")
DEFAULTS = {"sim_present": True, "registration": 1, "rssi": 20, "netopen_error": 0,
            "cipopen_error": 0, "latency": 0.0, "boot_time": 0.2}  # fmt: skip


class SimThread:
    """A Simulator running in its own event loop on a background thread."""

    def __init__(self, dirpath: str, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = Simulator(dirpath, **kw)
        self.info: dict[str, Any] = self.run(self.sim.start())
        self.client = HwsimClient(self.sim.socket_path, timeout=10)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def stop(self) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


# -- the parser ----------------------------------------------------------------------
def _feed_split(stream: bytes, cut: Callable[[int], list[int]]) -> list[Any]:
    parser = AtParser()
    parser.expect_prompt = True
    items: list[Any] = []
    start = 0
    for end in [*cut(len(stream)), len(stream)]:
        items += parser.feed(stream[start:end])
        start = end
    return items


HOSTILE = (b"AT+CSQ\r\r\n+CSQ: 17,0\r\n\r\n+IPD13\r\n\r\nOK\r\n+IPD3\r\n\r\nOK\r\n"
           b"\r\n+IPCLOSE: 0,1\r\n\r\n>\r\n+IPD4\r\n\x00\xff\r\n\r\nERROR\r\n")
EXPECTED = [Line("AT+CSQ"), Line("+CSQ: 17,0"), Data(b"\r\nOK\r\n+IPD3\r\n"), Line("OK"),
            Line("+IPCLOSE: 0,1"), Prompt(), Data(b"\x00\xff\r\n"), Line("ERROR")]


def test_parser_keeps_ipd_payload_whole_and_urcs_in_place() -> None:
    items = _feed_split(HOSTILE, lambda n: [])
    assert items == EXPECTED
    assert [i.payload for i in items if isinstance(i, Data)] == [b"\r\nOK\r\n+IPD3\r\n",
                                                                   b"\x00\xff\r\n"]


def test_parser_gives_the_same_items_for_every_split_of_the_stream() -> None:
    for cut in range(1, len(HOSTILE)):
        assert _feed_split(HOSTILE, lambda n, c=cut: [c]) == EXPECTED, cut
    assert _feed_split(HOSTILE, lambda n: list(range(1, n))) == EXPECTED  # byte by byte


def test_parser_reports_garbage_and_goes_on() -> None:
    parser = AtParser()
    items = parser.feed(b"\r\n\x80\x81card 4761739001010010\r\nOK\r\n" + b"x" * 3000
                        + b"\r\n+IPD0\r\n+IPD99999\r\nOK\r\n> not a prompt\r\n")
    garbage = [i for i in items if isinstance(i, Garbage)]
    assert [g.reason for g in garbage] == ["bytes that are not a text line",
                                           "a line longer than 1024 bytes",
                                           "+IPD with a length of 0 (1..1500)",
                                           "+IPD with a length of 99999 (1..1500)"]
    assert garbage[0].preview == "80 81 63 61 72 64 20 34 ..."  # 8 bytes, never more
    assert all("4761739001010010" not in repr(i) for i in items)
    assert [i for i in items if isinstance(i, Line)] == [Line("OK"), Line("OK"),
                                                         Line("> not a prompt")]


def test_parser_takes_bare_cr_echo_and_prompt_only_when_expected() -> None:
    parser = AtParser()
    assert parser.feed(b"AT\r\r\nOK\r\n>") == [Line("AT"), Line("OK")]
    parser = AtParser()
    parser.expect_prompt = True
    assert parser.feed(b"AT+CIPSEND=0,5\r\r\n>") == [Line("AT+CIPSEND=0,5"), Prompt()]
    assert repr(Data(b"4761739001010010")) == "Data(16 bytes)"


def test_bars() -> None:
    assert [bars_for(r) for r in (99, 0, 1, 2, 9, 10, 14, 15, 19, 20, 31)] == \
        [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_signal_and_registration_answers_read() -> None:
    assert [parse_rssi(lines) for lines in (["+CSQ: 17,0"], ["+CSQ:99,99"], [], ["+CSQ: x"])] \
        == [17, 99, None, None]
    assert [parse_registration(lines) for lines in (
        ["+CREG: 0,1"], ["+CREG: 2,5,\"00C3\",\"0102\""], ["+CREG: 0,3"], ["+CREG: 0,7"], [],
        ["+CREG: 1"])] == ["REGISTERED", "ROAMING", "DENIED", "UNKNOWN", None, None]


# -- the driver against hwsim ----------------------------------------------------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimThread]:
    running = SimThread(str(tmp_path_factory.mktemp("modem")), tls=True, seed=3)
    yield running
    running.stop()


@pytest.fixture
def hw(sim: SimThread) -> Iterator[HwsimClient]:
    sim.client.modem(**DEFAULTS, power=False)
    yield sim.client
    sim.client.modem(**DEFAULTS)


def run(sim: SimThread, body: Callable[[Modem], Awaitable[Any]], *, power: bool = True,
        **kw: Any) -> Any:  # fmt: skip
    """Run `body(modem)` on a fresh event loop with a driver for hwsim's modem."""

    async def main() -> Any:
        gpio = RemoteGPIO(sim.sim.socket_path)
        options: dict[str, Any] = {"boot_timeout": 5.0, "command_timeout": 2.0,
                                   "register_timeout": 2.0, **kw}  # fmt: skip
        modem = Modem(sim.info["modem"], power=ModemPower(gpio) if power else None,
                      apn="internet", **options)  # fmt: skip
        try:
            return await body(modem)
        finally:
            await modem.close()
            gpio.close()

    return asyncio.run(main())


async def sign_on(reader: asyncio.StreamReader, writer: Any, stan: int = 1) -> dict[str, str]:
    doc = iso.network(IDENT, code="001", stan=stan, utc=datetime.now(timezone.utc))
    writer.write(iso.frame(iso.encode(doc)))
    size = int.from_bytes(await reader.readexactly(2), "big")
    return dict(iso.decode(await reader.readexactly(size)))


def test_start_powers_the_modem_on_through_gpio(sim: SimThread, hw: HwsimClient) -> None:
    assert not hw.modem_state()["powered"]

    async def body(modem: Modem) -> Any:
        return await modem.start()

    status = run(sim, body)
    assert status.powered and status.answering and status.sim == "READY"
    assert status.registration == "REGISTERED" and status.rssi == 20 and status.bars == 4
    assert status.data_session and status.last_error == ""
    state = hw.modem_state()
    assert state["powered"] and state["apn"] == "internet" and not state["echo"]
    assert state["last_commands"][-1] == "AT+NETCLOSE"  # close() ended the data session
    pulses = [h["level"] for h in hw.gpio_state()["history"] if h["pin"] == 17]
    assert pulses[-2:] == [1, 0]


@pytest.mark.parametrize("settings, error, text, message", [
    ({"sim_present": False}, NoSimError, "NO SIM", "+CME ERROR: 10"),
    ({"registration": 3}, RegistrationDenied, "REGISTRATION DENIED", "+CREG: 0,3"),
    ({"registration": 2, "rssi": 99}, NoSignalError, "NO SIGNAL", "+CSQ: 99"),
    ({"registration": 2, "rssi": 7}, NoSignalError, "NO SIGNAL", "still searching"),
    ({"netopen_error": 3}, DataSessionRefused, "DATA SESSION REFUSED", "error 3"),
])  # fmt: skip
def test_start_failures_name_the_reason(sim: SimThread, hw: HwsimClient, settings: dict[str, Any],
                                        error: type[ModemError], text: str,
                                        message: str) -> None:  # fmt: skip
    hw.modem(**settings)

    async def body(modem: Modem) -> Any:
        with pytest.raises(error, match=message.replace("+", r"\+")) as caught:
            await modem.start()
        return caught.value, modem.status

    exc, status = run(sim, body)
    assert exc.display == text and len(text) <= 20 and exc.device == "modem"
    assert status.last_error == str(exc) and status.error_display == text


def test_a_module_without_power_control_that_is_off_is_not_answering(
        sim: SimThread, hw: HwsimClient) -> None:  # fmt: skip
    async def body(modem: Modem) -> Any:
        started = time.monotonic()
        with pytest.raises(ModemNotAnswering, match="no answer to AT .* within 1 s"):
            await modem.start()
        return time.monotonic() - started

    elapsed = run(sim, body, power=False, boot_timeout=1.0)
    assert 0.9 < elapsed < 3.0


def test_start_again_over_a_data_session_left_open(sim: SimThread, hw: HwsimClient) -> None:
    async def first(modem: Modem) -> Any:
        await modem.start()
        modem._close_port()  # posterm killed: the modem keeps its session

    run(sim, first)
    assert hw.modem_state()["net_open"]

    async def second(modem: Modem) -> Any:
        return await modem.start()

    assert run(sim, second).data_session
    assert hw.modem_state()["last_commands"][-5:-1] == [
        'AT+CGDCONT=1,"IP","internet"', "AT+NETOPEN", "AT+NETCLOSE", "AT+NETOPEN"]


def test_tls_exchange_with_the_host_through_the_modem(sim: SimThread, hw: HwsimClient) -> None:
    context = ssl.create_default_context(cafile=sim.info["ca_file"])
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    before = len(hw.messages())

    async def body(modem: Modem) -> Any:
        await modem.start()
        reader, writer = await modem.open_connection(
            "127.0.0.1", sim.info["primary_port"], ssl=context, server_hostname="127.0.0.1",
            timeout=10)  # fmt: skip
        answers = [await sign_on(reader, writer, stan) for stan in (11, 12)]
        writer.close()
        await writer.wait_closed()
        return answers, writer.is_closing()

    answers, closing = run(sim, body)
    assert [a["39"] for a in answers] == ["00", "00"] and closing
    assert [a["11"] for a in answers] == ["000011", "000012"]
    assert len(hw.messages()) == before + 2
    state = hw.modem_state()
    assert state["connections"] >= 1 and not state["link_open"]
    assert state["bytes_sent"] > 300 and state["bytes_received"] > 300  # TLS records


def test_tls_that_does_not_verify_raises_like_asyncio(sim: SimThread, hw: HwsimClient,
                                                      tmp_path: Any) -> None:  # fmt: skip
    other_ca, other_key = make_ca(str(tmp_path))
    make_server_cert(str(tmp_path), other_ca, other_key, stem="unused")
    wrong_ca = ssl.create_default_context(cafile=os.path.join(str(tmp_path), "ca.pem"))
    right_ca = ssl.create_default_context(cafile=sim.info["ca_file"])

    cases = ((wrong_ca, "127.0.0.1"), (right_ca, "bank.example"))

    async def body(modem: Modem) -> Any:
        await modem.start()
        errors = []
        for context, name in cases:
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await modem.open_connection("127.0.0.1", sim.info["primary_port"],
                                            ssl=context, server_hostname=name, timeout=10)
            errors.append((caught.value.verify_code, caught.value.verify_message))
            # the same context straight to the host, as the primary path does it
            with pytest.raises(ssl.SSLCertVerificationError) as direct:
                await asyncio.open_connection("127.0.0.1", sim.info["host_port"], ssl=context,
                                              server_hostname=name)
            assert errors[-1] == (direct.value.verify_code, direct.value.verify_message)
        return errors

    errors = run(sim, body)
    assert "certificate" in errors[0][1] and "mismatch" in errors[1][1].lower(), errors
    assert not hw.modem_state()["link_open"]


class EchoServer:
    """A TCP echo server on the simulator's loop (the internet, for the modem)."""

    def __init__(self, sim: SimThread) -> None:
        self.sim = sim
        self.server: asyncio.Server = sim.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def echo(sim: SimThread) -> Iterator[EchoServer]:
    server = EchoServer(sim)
    yield server
    server.close()


def test_plain_bytes_that_look_like_result_codes_cross_unchanged(
        sim: SimThread, hw: HwsimClient, echo: EchoServer,
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    payload = (b"\r\nOK\r\n+IPD5\r\n>\r\n+IPCLOSE: 0,1\r\nERROR\r\n4761739001010010"
               + bytes(range(256))) * 20

    async def body(modem: Modem) -> Any:
        await modem.start()
        reader, writer = await modem.open_connection("127.0.0.1", echo.port, timeout=5)
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        writer.close()
        await writer.wait_closed()
        return got

    assert run(sim, body) == payload
    assert "4761739001010010" not in caplog.text and "[1460 bytes]" in caplog.text
    sends = [c for c in hw.modem_state()["last_commands"] if c.startswith("AT+CIPSEND")]
    assert sends and all(int(c.rsplit(",", 1)[1]) <= 1460 for c in sends)


def test_cipopen_errors_raise_oserrors(sim: SimThread, hw: HwsimClient, echo: EchoServer) -> None:
    async def body(modem: Modem) -> Any:
        await modem.start()
        raised = []
        for code in (1, 11):
            hw.modem(cipopen_error=code)
            with pytest.raises(OSError) as caught:
                await modem.open_connection("127.0.0.1", echo.port, timeout=5)
            raised.append(caught.value)
        hw.modem(cipopen_error=0)
        reader, writer = await modem.open_connection("127.0.0.1", echo.port, timeout=5)
        writer.write(b"ping")
        return raised, await reader.readexactly(4)

    (refused, dns), pong = run(sim, body)
    assert isinstance(refused, ConnectionRefusedError)
    assert "+CIPOPEN error 1" in str(refused) and "+CIPOPEN error 11 (" in str(dns)
    assert pong == b"ping"


def test_peer_close_mid_read_ends_the_stream(sim: SimThread, hw: HwsimClient,
                                             echo: EchoServer) -> None:  # fmt: skip
    async def body(modem: Modem) -> Any:
        await modem.start()
        reader, writer = await modem.open_connection("127.0.0.1", echo.port, timeout=5)
        writer.write(b"12345")
        read = asyncio.ensure_future(reader.readexactly(10))
        await asyncio.sleep(0.3)
        hw.modem(drop=True)
        with pytest.raises(asyncio.IncompleteReadError) as caught:
            await asyncio.wait_for(read, 5)
        return caught.value.partial, writer.is_closing()

    partial, closing = run(sim, body)
    assert partial == b"12345" and closing


def test_hung_modem_is_recovered_by_a_power_cycle(sim: SimThread, hw: HwsimClient,
                                                  echo: EchoServer) -> None:  # fmt: skip
    async def body(modem: Modem) -> Any:
        await modem.start()
        reader, writer = await modem.open_connection("127.0.0.1", echo.port, timeout=5)
        hw.modem(hang=True)
        for _ in range(3):
            with pytest.raises(ModemNotAnswering, match="no answer to AT\\+CSQ within 0.5 s"):
                await modem.refresh()
        assert modem.needs_recovery and not modem.status.answering
        cycles = hw.modem_state()["power_cycles"]
        status = await modem.recover()
        with pytest.raises(ConnectionResetError):
            await reader.readexactly(1)
        reader, writer = await modem.open_connection("127.0.0.1", echo.port, timeout=5)
        writer.write(b"again")
        return status, await reader.readexactly(5), hw.modem_state()["power_cycles"] - cycles

    status, data, cycles = run(sim, body, command_timeout=0.5)
    assert status.data_session and status.answering and data == b"again" and cycles == 1


def test_latency_is_applied_both_ways(sim: SimThread, hw: HwsimClient,
                                      echo: EchoServer) -> None:  # fmt: skip
    async def round_trip(modem: Modem) -> float:
        reader, writer = await modem.open_connection("127.0.0.1", echo.port, timeout=10)
        started = time.monotonic()
        writer.write(b"x" * 100)
        await reader.readexactly(100)
        elapsed = time.monotonic() - started
        writer.close()
        await writer.wait_closed()
        return elapsed

    async def body(modem: Modem) -> Any:
        await modem.start()
        fast = await round_trip(modem)
        hw.modem(latency=0.4)
        return fast, await round_trip(modem)

    fast, slow = run(sim, body)
    assert fast < 0.4 and 0.8 <= slow < 0.8 + fast + 0.5, (fast, slow)
