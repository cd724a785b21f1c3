"""hwsim as a process: the control socket, the Python client, the CLI and the firmware stand-ins."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
import serial
from evdev import ecodes
from smbus2 import i2c_msg

from drivers.gpio import Pins
from drivers.keypad import key_for
from drivers.remote import RemoteGPIO, RemoteKeySource, RemoteSMBus
from firmware.errors import KeypadError
from hwsim.cards import swipe_line
from hwsim.client import HwsimClient, HwsimError, draw_display
from hwsim.fwconfig import render_config
from hwsim.keypad import expand_keys
from hwsim.sim import Simulator

PAN = "4761739001010010"


class SimThread:
    """A Simulator running in its own event loop on a background thread."""

    def __init__(self, dirpath: str, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = Simulator(dirpath, **kw)
        self.info = self._run(self.sim.start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self._run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimThread]:
    sim = SimThread(str(tmp_path_factory.mktemp("hwsim")), seed=7)
    yield sim
    sim.stop()


@pytest.fixture
def client(running: SimThread) -> HwsimClient:
    return HwsimClient(running.sim.socket_path, timeout=5)


def _raw_exchange(path: str, *lines: bytes) -> list[dict[str, Any]]:
    """Send lines on one connection and read one answer per line."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        f = sock.makefile("rb")
        answers = []
        for line in lines:
            sock.sendall(line)
            answers.append(json.loads(f.readline()))
        return answers


def test_info_and_written_files(running: SimThread, client: HwsimClient) -> None:
    info = client.info()
    with open(os.path.join(running.sim.dir, "hwsim.json")) as f:
        assert json.load(f) == info
    assert info["pid"] == os.getpid() and info["tls"] is False
    with open(os.path.join(running.sim.dir, "posterm.toml"), "rb") as f:
        config = tomllib.load(f)
    assert config["card_reader"] == {"backend": "serial", "port": info["card_reader"],
                                     "baudrate": 9600}  # fmt: skip
    assert config["printer"]["port"] == info["printer_port"] > 0
    # the firmware's primary path goes through hwsim's cuttable proxy to the host
    assert config["host"]["port"] == info["primary_port"] > 0 and info["host_port"] > 0
    assert config["host"]["tls"] is False and config["host"]["ca_file"] == ""
    assert config["display"]["socket"] == running.sim.socket_path
    assert config["display"]["address"] == 0x27 and config["display"]["bus"] == 1
    assert config["keypad"]["backend"] == config["gpio"]["backend"] == "hwsim"
    assert config["terminal"]["state_dir"] == os.path.join(running.sim.dir, "state")


def test_render_config_overrides_and_escaping() -> None:
    info = {"control_socket": '/tmp/a "b"\\c.sock', "host_port": 1, "card_reader": "/dev/pts/9",
            "printer_port": 2}  # fmt: skip
    text = render_config(info, state_dir="/s", overrides={"host": {"response_timeout": 2.5},
                                                          "extra": {"names": ["x", "y\n"]}})
    config = tomllib.loads(text)
    assert config["keypad"]["socket"] == '/tmp/a "b"\\c.sock'
    assert config["host"]["response_timeout"] == 2.5 and config["host"]["connect_timeout"] == 5.0
    assert config["extra"]["names"] == ["x", "y\n"]
    assert config["terminal"]["address"] == ["1 MARKET STREET", "SPRINGFIELD"]
    assert list(config) == ["terminal", "host", "card_reader", "keypad", "printer", "display",
                            "gpio", "battery", "power", "operator", "extra"]  # fmt: skip


def test_pressed_keys_reach_a_remote_key_source(running: SimThread, client: HwsimClient) -> None:
    async def scenario() -> list[Any]:
        source = RemoteKeySource(running.sim.socket_path)
        source.open()
        try:
            listeners = await asyncio.to_thread(client.press, "12", "OK")
            assert listeners == 1
            events = []
            stream = source.events()
            while len(events) < 12:
                events.append(await asyncio.wait_for(anext(stream), 5))
            await stream.aclose()
            return events
        finally:
            source.close()

    events = asyncio.run(scenario())
    kinds = [(e.type, e.code, e.value) for e in events]
    expected = []
    for code in (ecodes.KEY_1, ecodes.KEY_2, ecodes.KEY_ENTER):
        expected += [(ecodes.EV_KEY, code, 1), (ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
                     (ecodes.EV_KEY, code, 0), (ecodes.EV_SYN, ecodes.SYN_REPORT, 0)]  # fmt: skip
    assert kinds == expected
    assert [key_for(e) for e in events if key_for(e)] == ["1", "2", "OK"]
    stamps = [e.timestamp() for e in events]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 60
    deadline = time.monotonic() + 5  # the listener is dropped once it disconnects
    while client.press("CANCEL") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_unknown_key_is_refused(client: HwsimClient) -> None:
    assert expand_keys(["1250", "ok", "F4"]) == ["1", "2", "5", "0", "OK", "F4"]
    with pytest.raises(HwsimError, match="unknown key 'ENTER'"):
        client.press("ENTER")


def test_remote_key_source_without_hwsim(tmp_path: Any) -> None:
    path = str(tmp_path / "control.sock")
    with pytest.raises(KeypadError, match=f"keypad: hwsim not reachable at {path}"):
        RemoteKeySource(path).open()


def _lcd_stream(text: str) -> list[int]:
    def byte(value: int, rs: int) -> list[int]:
        out = []
        for nibble in (value >> 4, value & 0x0F):
            pins = (nibble << 4) | 0x08 | rs
            out += [pins | 0x04, pins]
        return out

    stream = []
    for nibble in (0x3, 0x3, 0x3, 0x2):
        stream += [(nibble << 4) | 0x0C, (nibble << 4) | 0x08]
    for command in (0x28, 0x0C, 0x06, 0x01, 0x80 | 0x40):
        stream += byte(command, 0)
    for ch in text:
        stream += byte(ord(ch), 1)
    return stream


def test_remote_smbus_drives_the_display(running: SimThread, client: HwsimClient) -> None:
    bus = RemoteSMBus(running.sim.socket_path, bus=1)
    bus.write_byte(0x27, 0x08)
    stream = _lcd_stream("HELLO HWSIM")
    bus.i2c_rdwr(i2c_msg.write(0x27, stream))
    rows = client.display()
    assert rows[1] == "HELLO HWSIM".ljust(20) and rows[0] == " " * 20
    assert client.wait_display("HWSIM", timeout=1) == rows
    with pytest.raises(AssertionError, match="HELLO HWSIM"):
        client.wait_display("NEVER", timeout=0.1)
    assert bus.read_i2c_block_data(0x27, 0, 2) == [stream[-1]] * 2  # the port follows writes
    with pytest.raises(OSError, match="no I2C device at 0x3f") as exc:
        bus.write_byte(0x3F, 0)
    assert exc.value.errno == errno.EREMOTEIO
    with pytest.raises(OSError, match="no I2C device at 0x48"):
        bus.read_i2c_block_data(0x48, 0x02, 2)
    assert bus.read_i2c_block_data(0x36, 0x08, 2) == [0x00, 0x12]  # the gauge's VERSION
    with pytest.raises(NotImplementedError):
        bus.i2c_rdwr(i2c_msg.read(0x27, 1))
    bus.close()


def test_remote_gpio(running: SimThread, client: HwsimClient) -> None:
    gpio = RemoteGPIO(running.sim.socket_path)
    with pytest.raises(RuntimeError, match="setmode"):
        gpio.setup(24, gpio.OUT)
    gpio.setmode(gpio.BCM)
    gpio.setwarnings(False)
    gpio.setup([23, 24], gpio.OUT, initial=gpio.LOW)
    gpio.setup(25, gpio.IN, pull_up_down=gpio.PUD_UP)
    gpio.output(24, gpio.HIGH)
    state = client.gpio_state()
    assert state["pins"]["24"] == {"direction": "out", "level": 1, "pull": "off"}
    assert state["led_online"] == 1 and state["power_ok"] is True
    assert [h["level"] for h in state["history"] if h["pin"] == 24][-2:] == [0, 1]
    assert gpio.input(25) == 1
    client.gpio_set_input(25, 0)
    assert gpio.input(25) == 0 and client.gpio_state()["power_ok"] is False
    client.gpio_set_input(25, 1)
    with pytest.raises(RuntimeError, match="not been set up as an OUTPUT"):
        gpio.output(25, 1)
    board = RemoteGPIO(running.sim.socket_path)
    board.setmode(board.BOARD)
    board.output(18, 0)  # header pin 18 is BCM 24
    assert client.gpio_state()["pins"]["24"]["level"] == 0
    with pytest.raises(RuntimeError, match="not a GPIO pin"):
        board.setup(1, board.OUT)
    board.close()
    gpio.cleanup()
    assert client.gpio_state()["pins"] == {}
    with pytest.raises(HwsimError, match="level must be 0 or 1"):
        client.gpio_set_input(25, 7)
    client.gpio_set_input(25, 1)


def test_pins_driver_on_remote_gpio(running: SimThread, client: HwsimClient) -> None:
    remote = RemoteGPIO(running.sim.socket_path)
    pins = Pins(remote)
    try:
        pins.set_led(True)
        assert client.gpio_state()["led_online"] == 1
        assert pins.power_ok() is True
        client.gpio_set_input(25, 0)
        assert pins.power_ok() is False
    finally:
        client.gpio_set_input(25, 1)
        pins.close()
        remote.close()
    assert client.gpio_state()["led_online"] == 0


def test_swipes_arrive_at_the_card_reader_pty(running: SimThread, client: HwsimClient) -> None:
    with serial.Serial(running.info["card_reader"], 9600, timeout=3) as port:
        assert client.swipe(PAN, expiry="2812") > 0
        assert port.read_until(b"\r") == swipe_line(PAN, expiry="2812")
        client.swipe(bad="both_error")
        assert port.read_until(b"\r") == b"%E?;E?\r"
        client.swipe(raw=";123?\r")
        assert port.read_until(b"\r") == b";123?\r"
    with pytest.raises(HwsimError, match="unknown bad swipe kind"):
        client.swipe(bad="smudge")
    with pytest.raises(ValueError):
        client.swipe()


def test_malformed_requests_get_errors_and_the_server_lives(running: SimThread) -> None:
    path = running.sim.socket_path
    answers = _raw_exchange(
        path, b"not json\n", b"[1, 2]\n", b"\xff\xfe\n", b'{"no_op": 1}\n', b'{"op": "fly"}\n',
        b'{"op": "i2c_write", "addr": 39}\n', b'{"op": "i2c_write", "addr": 39, "data": [300]}\n',
        b'{"op": "gpio_setup", "pin": "x", "direction": "out"}\n', b'{"op": "info"}\n',
    )  # fmt: skip
    assert [a["ok"] for a in answers] == [False] * 8 + [True]
    assert "malformed request" in answers[0]["error"] and "JSON object" in answers[1]["error"]
    assert "UTF-8" in answers[2]["error"] and '"op"' in answers[3]["error"]
    assert "unknown op 'fly'" in answers[4]["error"] and "missing 'data'" in answers[5]["error"]
    assert "list of bytes" in answers[6]["error"] and "'pin' must be int" in answers[7]["error"]
    # A client that vanishes mid-request disturbs nobody.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(b'{"op": "disp')
    assert _raw_exchange(path, b'{"op": "display"}\n')[0]["ok"] is True


def test_printer_and_host_ops(running: SimThread, client: HwsimClient) -> None:
    assert client.receipts() == [] and client.partial_receipt() == ""
    with socket.create_connection(("127.0.0.1", running.info["printer_port"]), timeout=5) as tcp:
        tcp.sendall(b"\x1b@THANK YOU\nSEE YOU SOON\n\x1dV\x00NEXT\n")
        deadline = time.monotonic() + 5
        while not client.partial_receipt():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert client.receipts() == ["THANK YOU\nSEE YOU SOON"] and client.partial_receipt() == "NEXT"
    client.printer_fault(paper_out=True, slow_seconds=0.5)
    client.printer_clear()
    with pytest.raises(HwsimError, match="unknown jammed"):
        client.printer_fault(jammed=True)
    assert client.ledger() == [] and client.messages() == []
    client.host_fault("delay", count=2, mti="0200", seconds=1.5)
    with pytest.raises(HwsimError, match="unknown fault kind"):
        client.host_fault("meteor")
    client.host_clear()
    client.host_default("0200", "05")
    client.host_default("0200", "00")
    client.host_down()
    client.host_up()


def test_cli(running: SimThread, client: HwsimClient, tmp_path: Any) -> None:
    def hwsim(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hwsim", *args], capture_output=True,
                              text=True, timeout=15)  # fmt: skip

    assert hwsim("--help").returncode == 0
    rows = client.display()
    shown = hwsim("ctl", "--dir", running.sim.dir, "display")
    assert shown.returncode == 0 and shown.stdout.strip() == draw_display(rows)
    as_json = hwsim("ctl", "--dir", running.sim.dir, "--json", "press", "1", "OK")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == {"listeners": 0}
    missing = hwsim("ctl", "--dir", str(tmp_path), "info")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"hwsim is not running in {tmp_path}: "
                                      f"start it with `hwsim run --dir {tmp_path}`")  # fmt: skip
    bad = hwsim("ctl", "--dir", running.sim.dir, "press", "NOPE")
    assert bad.returncode == 1 and "unknown key" in bad.stderr


def test_restart_tls_and_stand_in_reconnect(tmp_path: Any) -> None:
    dirpath = str(tmp_path / "sim")
    first = SimThread(dirpath, tls=True)
    bus = RemoteSMBus(first.sim.socket_path)
    gpio = RemoteGPIO(first.sim.socket_path)
    gpio.setmode(gpio.BCM)
    try:
        info = first.info
        assert info["tls"] and info["ca_file"] == os.path.join(dirpath, "tls", "ca.pem")
        context = ssl.create_default_context(cafile=info["ca_file"])
        with socket.create_connection(("127.0.0.1", info["host_port"]), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        bus.write_byte(0x27, 0x08)
        gpio.setup(24, gpio.OUT)
    finally:
        first.stop()
    assert not os.path.exists(os.path.join(dirpath, "hwsim.json"))
    with pytest.raises(OSError, match="hwsim not reachable"):
        bus.write_byte(0x27, 0x08)
    second = SimThread(dirpath, external_host="192.0.2.1:8583")
    try:
        bus.write_byte(0x27, 0x08)  # the same stand-ins find the new simulator
        gpio.setup(24, gpio.OUT)  # (this one never saw the old one go)
        with open(os.path.join(dirpath, "posterm.toml"), "rb") as f:
            host = tomllib.load(f)["host"]
        info = HwsimClient.from_dir(dirpath).info()
        assert (host["host"], host["port"]) == ("127.0.0.1", info["primary_port"])
        assert host["server_name"] == "192.0.2.1"  # the proxy forwards to the external host
        with pytest.raises(HwsimError, match="external host"):
            HwsimClient.from_dir(dirpath).ledger()
    finally:
        bus.close()
        gpio.close()
        second.stop()


def test_hwsim_run_as_a_process(tmp_path: Any) -> None:
    dirpath = str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "hwsim", "run", "--dir", dirpath, "--seed", "1"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        info_path = os.path.join(dirpath, "hwsim.json")
        deadline = time.monotonic() + 10
        while not os.path.exists(info_path):
            assert proc.poll() is None and time.monotonic() < deadline, "hwsim did not start"
            time.sleep(0.02)
        info = HwsimClient.from_dir(dirpath).info()
        assert info["pid"] == proc.pid
        with open(os.path.join(dirpath, "posterm.toml"), "rb") as f:
            assert tomllib.load(f)["host"]["port"] == info["primary_port"]
        again = subprocess.run([sys.executable, "-m", "hwsim", "run", "--dir", dirpath],
                               capture_output=True, text=True, timeout=15)  # fmt: skip
        assert again.returncode == 1 and "already running" in again.stderr
        assert HwsimClient.from_dir(dirpath).info() == info and os.path.exists(info_path)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "hwsim ready" in stderr and "hwsim stopped" in stderr
    assert not os.path.exists(os.path.join(dirpath, "control.sock"))
