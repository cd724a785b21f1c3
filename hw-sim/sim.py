"""The simulator: composes hwsim's device models, the acquirer host and the control server.

`Simulator.start` brings every part up on the same wires a terminal uses (a
pty for the card reader, found at the stable path DIR/card-reader; TCP for the
printer and the host; the control socket for the I2C, GPIO and keypad
stand-ins; the chip card slot, a card connected to vpcd's port when one is
inserted, unless `vpcd_port` is 0), then writes `hwsim.json` (where everything
is) and `posterm.toml` (the firmware configuration pointing at it), and only
then logs "hwsim ready".
`stop` takes it all down again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hwsim import ops
from hwsim.cardreader import CardReaderSim
from hwsim.chipslot import DEFAULT_VPCD_PORT, ChipSlot
from hwsim.control import ControlServer, StartError, claim_socket_path
from hwsim.fwconfig import TomlValue, render_config
from hwsim.gauge import Max17048Sim
from hwsim.gpio import PIN_BUZZER, PIN_LED_ONLINE, GpioSim
from hwsim.host import AcquirerHost
from hwsim.keypad import KeypadSim
from hwsim.lcd import BusFault, Hd44780Sim
from hwsim.modem import ModemSim
from hwsim.primary import PrimaryProxy
from hwsim.printer import PrinterSim
from hwsim.testca import make_ca, make_server_cert

if TYPE_CHECKING:
    from hwsim.web import WebUI

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LCD_BUS = 1
LCD_ADDRESS = 0x27
READER_LINK = "card-reader"  # DIR/card-reader: the reader's stable path
GAUGE_BUS = 1
GAUGE_ADDRESS = 0x36


class I2cBus:
    """The I2C devices by (bus, address); an empty address answers like a NACK.

    `write` and `read` are the transfers the firmware's stand-in forwards; each is
    counted per (bus, address) as the wire would carry it (`stats`), and the newest
    `LOG` of them are kept with their time and, for a display, the text it shows
    after the transfer (`log`), so a benchmark can see what each screen cost."""

    LOG = 4096

    def __init__(self) -> None:
        self._devices: dict[tuple[int, int], Any] = {}
        self._counts: dict[tuple[int, int], dict[str, int]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=self.LOG)
        self._logged = 0  # transfers logged since the start (the log's sequence number)

    def attach(self, bus: int, addr: int, device: Any) -> None:
        self._devices[(bus, addr)] = device

    def device(self, bus: int, addr: int) -> Any:
        found = self._devices.get((bus, addr))
        if found is None:
            raise ValueError(f"no I2C device at 0x{addr:02x} on bus {bus}")
        return found

    def write(self, bus: int, addr: int, data: list[int]) -> None:
        """One write transaction: START, address, the data bytes, STOP."""
        try:
            self.device(bus, addr).write(data)
        except ValueError:  # a NACK: the address byte went out, nothing else
            self._count(bus, addr, data=0, addresses=1, conditions=2, nack=True)
            raise
        self._count(bus, addr, data=len(data), addresses=1, conditions=2)
        screen = getattr(self.device(bus, addr), "screen", None)
        self._append(bus, addr, "write", len(data), screen() if screen else None)

    def read(self, bus: int, addr: int, reg: int, n: int) -> list[int]:
        """A register read as smbus2's read_i2c_block_data makes it: START, address,
        the register, repeated START, address, n bytes, STOP."""
        try:
            data: list[int] = self.device(bus, addr).read(reg, n)
        except ValueError:
            self._count(bus, addr, data=0, addresses=1, conditions=2, nack=True)
            raise
        self._count(bus, addr, data=1 + n, addresses=2, conditions=3)
        self._append(bus, addr, "read", 1 + n, None)
        return data

    def stats(self, reset: bool = False) -> list[dict[str, int]]:
        """Per (bus, address): transactions, data bytes, address bytes, START/STOP
        conditions, refused (NACKed) transactions, and the bits they took on the wire
        (9 per byte with its ACK, 1 per condition). `reset` starts the counts afresh."""
        out = [{"bus": bus, "addr": addr, **counts,
                "bits": 9 * (counts["bytes"] + counts["address_bytes"]) + counts["conditions"]}
               for (bus, addr), counts in sorted(self._counts.items())]
        if reset:
            self._counts.clear()
        return out

    def log(self, since: int = 0, clear: bool = False) -> dict[str, Any]:
        """The transfers logged after sequence number `since` still held: each with its
        wall-clock time `t`, bus, addr, kind, bytes and (displays) the rows after it.
        `next` is the sequence number to ask from next time."""
        first = self._logged - len(self._log)
        entries = [e for e in self._log if e["seq"] > since]
        if clear:
            self._log.clear()
        return {"entries": entries, "next": self._logged, "dropped": max(0, first - since)}

    def _count(self, bus: int, addr: int, *, data: int, addresses: int, conditions: int,
               nack: bool = False) -> None:
        counts = self._counts.setdefault((bus, addr), {
            "transactions": 0, "bytes": 0, "address_bytes": 0, "conditions": 0, "nacks": 0})
        counts["transactions"] += 1
        counts["bytes"] += data
        counts["address_bytes"] += addresses
        counts["conditions"] += conditions
        counts["nacks"] += nack

    def _append(self, bus: int, addr: int, kind: str, size: int,
                rows: list[str] | None) -> None:
        self._logged += 1
        entry: dict[str, Any] = {"seq": self._logged, "t": time.time(), "bus": bus,
                                 "addr": addr, "kind": kind, "bytes": size}
        if rows is not None:
            entry["rows"] = rows
        self._log.append(entry)


class Pcf8574Lcd:
    """The PCF8574 expander in front of the HD44780: bytes written go to the LCD model.
    `fault` injects I2C errors (hwsim.lcd.BusFault): refused transfers reach nothing."""

    def __init__(self, lcd: Hd44780Sim, address: int = 0x27) -> None:
        self.lcd = lcd
        self.fault = BusFault(address, lcd)
        self._port = 0xFF

    def write(self, data: list[int]) -> None:
        self.fault.check()
        if data:
            self._port = data[-1]
            self.lcd.feed(bytes(data))

    def read(self, reg: int, n: int) -> list[int]:
        self.fault.check()
        # A read returns the port pins, which follow the last byte written.
        return [self._port] * n

    def screen(self) -> list[str]:
        """The four rows on the glass (for the I2C log)."""
        return self.lcd.rows()


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StartError(f"--external-host must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


class Simulator:
    def __init__(
        self,
        dirpath: str,
        *,
        tls: bool = False,
        host_port: int = 0,
        external_host: str | None = None,
        seed: int | None = None,
        config_overrides: Mapping[str, Mapping[str, TomlValue]] | None = None,
        web: tuple[str, int] | None = None,
        vpcd_port: int = DEFAULT_VPCD_PORT,
    ) -> None:
        self.dir = os.path.abspath(dirpath)
        self.tls = tls
        self.host_port = host_port
        self.external = parse_host_port(external_host) if external_host else None
        self.seed = seed
        self.config_overrides = config_overrides
        self.socket_path = os.path.join(self.dir, "control.sock")
        self.info_path = os.path.join(self.dir, "hwsim.json")
        self.config_path = os.path.join(self.dir, "posterm.toml")
        self.card_reader = CardReaderSim(link=os.path.join(self.dir, READER_LINK))
        self.printer = PrinterSim()
        self.lcd = Hd44780Sim()
        self.keypad = KeypadSim()
        self.gpio = GpioSim()
        self.i2c = I2cBus()
        self.expander = Pcf8574Lcd(self.lcd, LCD_ADDRESS)
        self.i2c.attach(LCD_BUS, LCD_ADDRESS, self.expander)
        self.gauge = Max17048Sim()
        self.i2c.attach(GAUGE_BUS, GAUGE_ADDRESS, self.gauge)
        self.modem = ModemSim(self.gpio, address_map=self._modem_address)
        if not 0 <= vpcd_port < 65536:
            raise StartError(f"--vpcd-port must be 0 (no chip slot) to 65535, not {vpcd_port}")
        # the chip card slot: vpcd's virtual reader on that port (0: none)
        self.chip_slot: ChipSlot | None = ChipSlot(vpcd_port) if vpcd_port else None
        self.primary: PrimaryProxy | None = None  # the firmware's primary path to the host
        self.host: AcquirerHost | None = None
        self.control: ControlServer | None = None
        self.web_address = web  # (host, port) of the web page, None for none
        self.web: WebUI | None = None
        self.info: dict[str, Any] = {}
        self._reader_open = False
        self._printer_started = False
        self._wrote_info = False

    async def start(self) -> dict[str, Any]:
        """Start every part; returns the info also written to hwsim.json."""
        os.makedirs(self.dir, exist_ok=True)
        claim_socket_path(self.socket_path)  # before touching anything of another hwsim
        _remove(self.info_path)  # whoever waits for it must see the new one
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> dict[str, Any]:
        pty = self.card_reader.open()
        self._reader_open = True
        printer_port = await self.printer.start(LOOPBACK, 0)
        self._printer_started = True
        tls_files: dict[str, str] = {}
        if self.external is not None:
            host, host_port = self.external
        else:
            if self.tls:
                tls_files = ensure_tls_files(os.path.join(self.dir, "tls"))
            self.host = AcquirerHost(
                tls_cert=tls_files.get("cert"), tls_key=tls_files.get("key"), rng_seed=self.seed
            )
            host, host_port = LOOPBACK, await self.host.start(LOOPBACK, self.host_port)
        self.primary = PrimaryProxy((host, host_port))
        primary_port = await self.primary.start(LOOPBACK, 0)
        modem_pty = self.modem.open()
        self.info = {
            "dir": self.dir,
            "card_reader": pty,
            "printer_host": LOOPBACK,
            "printer_port": printer_port,
            "host": host,
            "host_port": host_port,
            "primary_host": LOOPBACK,  # the firmware reaches the host through this proxy
            "primary_port": primary_port,
            "modem": modem_pty,
            "vpcd_port": self.chip_slot.port if self.chip_slot is not None else 0,
            "external_host": self.external is not None,
            "tls": self.tls,
            "ca_file": tls_files.get("ca", ""),
            # the test certificate also names 127.0.0.1; an external host's has its own name
            "server_name": host if self.external is not None else "",
            "display": {"bus": LCD_BUS, "address": LCD_ADDRESS},
            "gauge": {"bus": GAUGE_BUS, "address": GAUGE_ADDRESS},
            "control_socket": self.socket_path,
            "config": self.config_path,
            "pid": os.getpid(),
        }
        self.control = ControlServer(ops.OPS, self, self.keypad, self.gpio)
        await self.control.start(self.socket_path)
        if self.web_address is not None:
            self.info["web"] = await self._start_web(*self.web_address)
        config = render_config(
            self.info, state_dir=os.path.join(self.dir, "state"), overrides=self.config_overrides
        )
        _write_atomic(self.config_path, config)
        _write_atomic(self.info_path, json.dumps(self.info, indent=2) + "\n")
        self._wrote_info = True
        log.info(
            "hwsim ready in %s: card reader %s, printer port %d, host %s:%d%s%s",
            self.dir, pty, printer_port, host, host_port, " (TLS)" if self.tls else "",
            f", web page {self.info['web']}" if "web" in self.info else "",
        )  # fmt: skip
        return self.info

    async def _start_web(self, host: str, port: int) -> str:
        """Serve the web page, and have every model tell it what changes (module hwsim.web)."""
        from hwsim.web import WebUI  # aiohttp is needed only for the page

        self.web = web = WebUI(self, host, port)
        url = await web.start()
        self.lcd.on_change = lambda: web.changed("display")
        self.printer.on_change = lambda: (web.changed("paper"), web.changed("status"))
        self.gpio.on_output(lambda pin, level: web.changed(
            "outputs" if pin in (PIN_BUZZER, PIN_LED_ONLINE) else "status"))
        self.modem.on_change = lambda: web.changed("status")
        self.expander.fault.on_change = lambda: web.changed("status")
        if self.chip_slot is not None:
            self.chip_slot.on_change = lambda: web.changed("status")
        if self.host is not None:
            self.host.on_wire = web.wire_event
        assert self.control is not None
        self.control.on_dispatch = (
            lambda op: None if op == ops.i2c_write.name else web.changed("status"))
        return url

    async def stop(self) -> None:
        """Stop every part that started; safe to call more than once."""
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.control is not None:
            await self.control.stop()
            self.control = None
        if self._wrote_info:
            _remove(self.info_path)
            self._wrote_info = False
        if self.primary is not None:
            await self.primary.stop()
            self.primary = None
        await self.modem.close()
        if self.chip_slot is not None:
            await self.chip_slot.close()
        if self.host is not None:
            await self.host.stop()
            self.host = None
        if self._printer_started:
            await self.printer.stop()
            self._printer_started = False
        if self._reader_open:
            self.card_reader.close()
            self._reader_open = False
        log.info("hwsim stopped")

    def _modem_address(self, host: str, port: int) -> tuple[str, int]:
        """Where the modem's connection goes: the modem is another network, so the
        primary path's proxy address means the host behind it, cut or not."""
        if self.primary is not None and port == self.primary.port and \
                host in (LOOPBACK, "localhost"):
            return self.primary.target
        return host, port


def ensure_tls_files(tls_dir: str) -> dict[str, str]:
    """A test CA and a server certificate for 127.0.0.1/localhost in `tls_dir`.

    Files already there are kept, so a firmware that trusts the CA keeps working
    across simulator restarts (and a test can put its own CA's files there).
    Returns the paths: "ca" (ca.pem), "cert" (cert.pem), "key" (cert.key).
    """
    paths = {"ca": os.path.join(tls_dir, "ca.pem"), "cert": os.path.join(tls_dir, "cert.pem"),
             "key": os.path.join(tls_dir, "cert.key")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    ca_cert, ca_key = make_ca(tls_dir)
    make_server_cert(tls_dir, ca_cert, ca_key, stem="cert")
    log.info("made a test CA and server certificate in %s", tls_dir)
    return paths


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
