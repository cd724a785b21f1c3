"""hwsim's primary path: the proxy the firmware's [host] points at, cut and restored."""

from __future__ import annotations

import asyncio
import errno
import socket
import tomllib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from drivers.modem import Modem, ModemPower
from drivers.remote import RemoteGPIO
from firmware.core import iso
from hwsim.client import HwsimClient
from tests.test_modem import DEFAULTS, IDENT, SimThread


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimThread]:
    running = SimThread(str(tmp_path_factory.mktemp("primary")), seed=9)
    yield running
    running.stop()


@pytest.fixture
def hw(sim: SimThread) -> Iterator[HwsimClient]:
    yield sim.client
    sim.client.primary_up()
    sim.client.host_up()


def sign_on_frame(stan: int) -> bytes:
    doc = iso.network(IDENT, code="001", stan=stan, utc=datetime.now(timezone.utc))
    return iso.frame(iso.encode(doc))


def answer(sock: socket.socket) -> dict[str, str]:
    head = _recv_exactly(sock, 2)
    return dict(iso.decode(_recv_exactly(sock, int.from_bytes(head, "big"))))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "closed")
        data += chunk
    return data


def connect(sim: SimThread) -> socket.socket:
    return socket.create_connection(("127.0.0.1", sim.info["primary_port"]), timeout=3)


def test_config_points_at_the_proxy(sim: SimThread) -> None:
    with open(sim.info["config"], "rb") as f:
        config: dict[str, Any] = tomllib.load(f)
    info = sim.info
    assert (config["host"]["host"], config["host"]["port"]) == ("127.0.0.1", info["primary_port"])
    assert info["host_port"] != info["primary_port"] and info["host"] == "127.0.0.1"
    assert config["modem"] == {"backend": "serial", "port": info["modem"], "apn": "internet"}


def test_refuse_resets_and_refuses_then_up_on_the_same_port(sim: SimThread,
                                                            hw: HwsimClient) -> None:
    with connect(sim) as sock:
        sock.sendall(sign_on_frame(1))
        assert answer(sock)["39"] == "00"
        state = hw.primary_down("refuse")
        assert state["mode"] == "refuse" and not state["listening"]
        with pytest.raises(ConnectionResetError):
            sock.sendall(sign_on_frame(2))
            answer(sock)
    with pytest.raises(ConnectionRefusedError):
        connect(sim)
    assert hw.primary_up()["port"] == sim.info["primary_port"]
    with connect(sim) as sock:
        sock.sendall(sign_on_frame(3))
        assert answer(sock)["11"] == "000003"


def test_blackhole_holds_bytes_until_up(sim: SimThread, hw: HwsimClient) -> None:
    with connect(sim) as old:
        old.sendall(sign_on_frame(4))
        assert answer(old)["39"] == "00"
        seen = len(hw.messages())
        hw.primary_down("blackhole")
        old.sendall(sign_on_frame(5))
        with connect(sim) as new:  # accepted, but nothing flows
            new.sendall(sign_on_frame(6))
            for sock in (old, new):
                sock.settimeout(0.7)
                with pytest.raises(TimeoutError):
                    sock.recv(1)
            assert len(hw.messages()) == seen  # the host heard nothing
            assert hw.primary_state()["open"] == 2
            hw.primary_up()
            for sock, stan in ((old, "000005"), (new, "000006")):
                sock.settimeout(3)
                assert answer(sock)["11"] == stan


def test_a_host_that_is_down_refuses_through_the_proxy(sim: SimThread, hw: HwsimClient) -> None:
    hw.host_down()
    with pytest.raises(ConnectionRefusedError):
        connect(sim)
    hw.host_up()
    with connect(sim) as sock:
        sock.sendall(sign_on_frame(7))
        assert answer(sock)["39"] == "00"


def test_cutting_the_primary_leaves_the_modem_path_alone(sim: SimThread,
                                                         hw: HwsimClient) -> None:
    hw.modem(**DEFAULTS)
    hw.primary_down("refuse")

    async def main() -> dict[str, str]:
        gpio = RemoteGPIO(sim.sim.socket_path)
        modem = Modem(sim.info["modem"], power=ModemPower(gpio), boot_timeout=5,
                      command_timeout=2)
        try:
            await modem.start()
            # the firmware knows the host by the primary address; the modem maps it
            reader, writer = await modem.open_connection(
                "127.0.0.1", sim.info["primary_port"], timeout=5)
            writer.write(sign_on_frame(8))
            size = int.from_bytes(await reader.readexactly(2), "big")
            return dict(iso.decode(await reader.readexactly(size)))
        finally:
            await modem.close()
            gpio.close()

    assert asyncio.run(main())["11"] == "000008"
    assert hw.modem_state()["connections"] >= 1
