"""hwsim's modem model, spoken to as a terminal would: raw AT commands on its pty with
pyserial, power through the GPIO stand-in, and the `hwsim ctl modem` command."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import serial

from drivers.remote import RemoteGPIO
from hwsim.client import HwsimClient, HwsimError
from tests.test_modem import DEFAULTS, SimThread


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimThread]:
    running = SimThread(str(tmp_path_factory.mktemp("hwmodem")), seed=5)
    yield running
    running.stop()


@pytest.fixture
def hw(sim: SimThread) -> Iterator[HwsimClient]:
    sim.client.modem(**DEFAULTS, power=False)
    yield sim.client
    sim.client.modem(**DEFAULTS, power=False)


@pytest.fixture
def gpio(sim: SimThread) -> Iterator[RemoteGPIO]:
    pins = RemoteGPIO(sim.sim.socket_path)
    pins.setmode(pins.BCM)
    pins.setup(17, pins.OUT)
    pins.setup(22, pins.OUT)
    pins.setup(27, pins.IN)
    yield pins
    pins.close()


@pytest.fixture
def port(sim: SimThread) -> Iterator[serial.Serial]:
    with serial.Serial(sim.info["modem"], 115200, timeout=0.1) as ser:
        yield ser


def pulse(gpio: RemoteGPIO, pin: int, seconds: float) -> None:
    gpio.output(pin, 1)
    time.sleep(seconds)
    gpio.output(pin, 0)


def read_until(ser: serial.Serial, end: bytes, timeout: float = 3.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while end not in got and time.monotonic() < deadline:
        got += ser.read(4096)
    return got


def at(ser: serial.Serial, command: str | bytes, end: bytes = b"OK\r\n") -> bytes:
    ser.write(command if isinstance(command, bytes) else command.encode() + b"\r")
    return read_until(ser, end)


def power_on(gpio: RemoteGPIO, ser: serial.Serial) -> bytes:
    pulse(gpio, 17, 0.55)
    return read_until(ser, b"+CPIN: READY\r\n")


def test_power_key_status_and_boot(hw: HwsimClient, gpio: RemoteGPIO,
                                   port: serial.Serial) -> None:  # fmt: skip
    hw.modem(boot_time=0.5)
    assert gpio.input(27) == 0
    port.write(b"AT\r")
    assert read_until(port, b"OK", 0.5) == b""  # off: it says nothing
    pulse(gpio, 17, 0.2)  # too short
    assert gpio.input(27) == 0 and not hw.modem_state()["powered"]
    pulse(gpio, 17, 0.55)
    assert gpio.input(27) == 1
    port.write(b"AT\r")
    assert read_until(port, b"OK", 0.2) == b""  # still booting
    assert read_until(port, b"+CPIN: READY\r\n") == b"\r\nRDY\r\n\r\n+CPIN: READY\r\n"
    assert at(port, "AT") == b"AT\r\r\nOK\r\n"  # echo is on after power-on
    assert at(port, "ATE0") == b"ATE0\r\r\nOK\r\n"
    assert at(port, "AT") == b"\r\nOK\r\n"
    pulse(gpio, 17, 0.55)
    assert read_until(port, b"DOWN\r\n") == b"\r\nNORMAL POWER DOWN\r\n"
    assert gpio.input(27) == 0


def test_the_command_subset(hw: HwsimClient, gpio: RemoteGPIO, port: serial.Serial) -> None:
    power_on(gpio, port)
    at(port, "ATE0")
    assert at(port, "AT+CPIN?") == b"\r\n+CPIN: READY\r\n\r\nOK\r\n"
    assert at(port, "AT+CSQ") == b"\r\n+CSQ: 20,0\r\n\r\nOK\r\n"
    assert at(port, "AT+CREG?") == b"\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    assert at(port, "AT+NOSUCH", b"ERROR\r\n") == b"\r\nERROR\r\n"
    assert at(port, 'AT+CGDCONT=1,"IP"', b"ERROR\r\n") == b"\r\nERROR\r\n"
    assert at(port, 'AT+CGDCONT=1,"IP","m2m.example"') == b"\r\nOK\r\n"
    assert at(port, "AT+NETOPEN", b"+NETOPEN: 0\r\n") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    assert at(port, "AT+CIPSEND=0,5", b"ERROR\r\n") == b"\r\nERROR\r\n"  # no socket yet
    hw.modem(sim_present=False, rssi=99, registration=3)
    assert at(port, "AT+CPIN?", b"\r\n") + read_until(port, b"10\r\n") == \
        b"\r\n+CME ERROR: 10\r\n"
    assert at(port, "AT+CSQ") == b"\r\n+CSQ: 99,99\r\n\r\nOK\r\n"
    assert at(port, "AT+NETCLOSE", b"+NETCLOSE: 0\r\n") == b"\r\nOK\r\n\r\n+NETCLOSE: 0\r\n"
    state = hw.modem_state()
    assert state["apn"] == "m2m.example" and state["commands"] >= 12
    assert state["last_commands"][-1] == "AT+NETCLOSE"


def test_socket_data_both_ways_with_ipd_framing(sim: SimThread, hw: HwsimClient,
                                                gpio: RemoteGPIO, port: serial.Serial) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    power_on(gpio, port)
    at(port, "ATE0")
    at(port, 'AT+CGDCONT=1,"IP","internet"')
    at(port, "AT+NETOPEN", b"+NETOPEN: 0\r\n")
    target = server.getsockname()[1]
    assert at(port, f'AT+CIPOPEN=0,"TCP","127.0.0.1",{target}', b"+CIPOPEN: 0,0\r\n") == \
        b"\r\nOK\r\n\r\n+CIPOPEN: 0,0\r\n"
    peer, _ = server.accept()
    peer.settimeout(5)
    assert at(port, "AT+CIPSEND=0,8", b">") == b"\r\n>"
    assert at(port, b"\r\nOK\r\nAT", b"+CIPSEND: 0,8,8\r\n") == \
        b"\r\nOK\r\n\r\n+CIPSEND: 0,8,8\r\n"
    assert peer.recv(100) == b"\r\nOK\r\nAT"
    peer.sendall(b"\r\nERROR\r\n\x00")
    assert read_until(port, b"\x00") == b"\r\n+IPD10\r\n\r\nERROR\r\n\x00"
    peer.close()
    assert read_until(port, b"+IPCLOSE: 0,1\r\n") == b"\r\n+IPCLOSE: 0,1\r\n"
    assert at(port, "AT+CIPCLOSE=0", b"ERROR\r\n") == b"\r\nERROR\r\n"  # already closed
    hw.modem(cipopen_error=11)
    assert at(port, f'AT+CIPOPEN=0,"TCP","127.0.0.1",{target}', b"+CIPOPEN: 0,11\r\n") \
        .endswith(b"+CIPOPEN: 0,11\r\n")
    server.close()
    state = hw.modem_state()
    assert state["bytes_sent"] >= 8 and state["bytes_received"] >= 10


def test_hang_until_reset_and_reset_restarts(hw: HwsimClient, gpio: RemoteGPIO,
                                             port: serial.Serial) -> None:  # fmt: skip
    power_on(gpio, port)
    at(port, "ATE0")
    hw.modem(hang=True)
    assert at(port, "AT") == b""
    pulse(gpio, 22, 0.1)  # too short to reset
    assert at(port, "AT") == b""
    pulse(gpio, 22, 0.25)
    assert read_until(port, b"+CPIN: READY\r\n") == b"\r\nRDY\r\n\r\n+CPIN: READY\r\n"
    assert at(port, "AT") == b"AT\r\r\nOK\r\n"  # echo is back on after the reset
    assert hw.modem_state()["resets"] >= 1


def test_control_rejects_bad_settings(hw: HwsimClient) -> None:
    for bad, words in (({"registration": 4}, "registration"), ({"rssi": 40}, "rssi"),
                       ({"latency": -1}, "latency"), ({"colour": "red"}, "unknown setting"),
                       ({"sim_present": 1}, "sim_present")):
        with pytest.raises(HwsimError, match=words):
            hw.modem(**bad)


def run_ctl(sim: SimThread, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "hwsim", "ctl", "--dir", sim.sim.dir, *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli(sim: SimThread, hw: HwsimClient) -> None:
    text = run_ctl(sim, "modem", "--sim", "absent", "--registration", "roaming", "--rssi", "9",
                   "--latency", "0.25", "--power", "on")
    assert "SIM ABSENT, roaming, rssi 9" in text and "latency 0.25 s" in text
    state: dict[str, Any] = hw.modem_state()
    assert state["registration"] == 5 and state["powered"] and not state["sim_present"]
    assert "modem off" in run_ctl(sim, "modem", "--power", "off")
    assert "primary path DOWN (blackhole)" in run_ctl(sim, "primary", "down", "--mode",
                                                      "blackhole")
    assert "primary path up" in run_ctl(sim, "primary", "up")
    info = hw.info()
    assert info["modem"] == sim.info["modem"] and info["primary_port"] != info["host_port"]
