"""Wiring: the one place that turns configuration into device objects.

Real or simulated is decided here and only here, from each device table's `backend`,
through a registry as pyserial's `serial_for_url` picks a handler by its URL's scheme:
configuration declares each device's backend names and their typed options
(firmware/config_devices.py, firmware/config_tables.py), and each name has one factory
here (`@backend(table, name)`), which gets that table's typed options and builds the
device's part that differs between backends (a port, a bus, a key source, a GPIO
library). `open_devices` then assembles the devices the same way whatever the backend.
A test checks that every declared backend has its factory and every factory a declared
name. Opening a device that is not there raises a DeviceError with one clear message.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from firmware.config import DEVICE_TABLES, Config, DeviceConfig
from firmware.config_devices import (
    CardReaderOptions, DisplayOptions, GpioOptions, KeypadOptions, PrinterOptions,
)
from firmware.config_tables import BatteryConfig, ModemConfig
from firmware.errors import ConfigError, DeviceError
from firmware.ports import CardReaderPort, DisplayPort, KeypadPort, PinsPort, PrinterPort
from firmware.runtime.power import GaugePort

log = logging.getLogger("posterm.wiring")

Factory = Callable[[Any, Config], Any]
Nodes = Callable[[Any], list[tuple[str, str]]]


@dataclass(frozen=True)
class Backend:
    """What one backend name stands for: its factory, and the device nodes its options
    name (for the systemd drop-in, firmware/runtime/devices.py)."""

    factory: Factory
    nodes: Nodes | None = None


BACKENDS: dict[tuple[str, str], Backend] = {}  # (table, backend name) -> its factory
F = TypeVar("F", bound=Callable[..., Any])


def backend(table: str, name: str, *, nodes: Nodes | None = None) -> Callable[[F], F]:
    """Register `factory(options, cfg)` for `[table] backend = "name"`."""
    if name not in DEVICE_TABLES.get(table, ()):
        raise ValueError(f"[{table}] declares no backend {name!r}")

    def register(factory: F) -> F:
        BACKENDS[(table, name)] = Backend(factory, nodes)
        return factory
    return register


def options(cfg: Config, table: str) -> Any:
    """A device table's typed options (they hold its `backend`)."""
    section = getattr(cfg, table)
    return section.settings if isinstance(section, DeviceConfig) else section


def lookup(cfg: Config, table: str) -> tuple[Backend, Any]:
    opts = options(cfg, table)
    entry = BACKENDS.get((table, opts.backend))
    if entry is None:  # a backend declared without a factory: tests/test_config_backends.py
        raise ConfigError(f"{cfg.path.name}: [{table}] backend: no driver for "
                          f"{opts.backend!r} in this build")
    return entry, opts


def build(cfg: Config, table: str) -> Any:
    """The part of `table`'s device that its backend decides, built by its factory."""
    entry, opts = lookup(cfg, table)
    return entry.factory(opts, cfg)


@dataclass
class Devices:
    card_reader: CardReaderPort
    keypad: KeypadPort
    printer: PrinterPort
    display: DisplayPort
    pins: PinsPort
    gauge: GaugePort | None = None  # the battery gauge, when [battery] names one
    modem: Any = None  # the 4G modem (drivers/modem.py), when [modem] names one; its
    # port opens and the module powers on in the background, in firmware/runtime/paths.py
    chip_reader: Any = None  # the PC/SC chip reader (drivers/chipreader.py), with [chip]

    def close(self) -> None:
        for dev in (self.card_reader, self.keypad, self.printer, self.display, self.pins,
                    *((self.gauge,) if self.gauge is not None else ()),
                    *((self.chip_reader,) if self.chip_reader is not None else ())):
            try:
                dev.close()
            except Exception as exc:  # closing must never mask the real reason we stop
                log.warning("closing %s: %s", type(dev).__name__, exc)


def open_devices(cfg: Config) -> Devices:
    """Open every device. Keypad and display are required; a printer that is not
    ready only logs a warning (a sale can go on without paper); a card reader that
    is not there logs one error and the terminal starts with CARD READER FAULT on
    its idle screen, trying to open it again until it appears (a USB reader
    plugged in late, or unplugged while the terminal was off)."""
    reader = build(cfg, "card_reader")  # drivers.magstripe.MagstripeReader
    reader.open(required=False)
    keypad = _keypad(cfg)
    display = _display(cfg)
    pins = _pins(cfg)
    printer = _printer(cfg)
    return Devices(reader, keypad, printer, display, pins, gauge=open_gauge(cfg),
                   modem=open_modem(cfg), chip_reader=open_chip_reader(cfg))


def open_chip_reader(cfg: Config) -> Any:
    """The PC/SC reader [chip] names (by name or prefix). Nothing is opened here: the
    reader's watch (its `run`) finds it, and reports it missing until it appears."""
    if cfg.core.chip is None:
        return None
    from drivers.chipreader import PcscReader

    return PcscReader(cfg.chip.reader)


def open_modem(cfg: Config) -> Any:
    """The modem driver for [modem], powered through [gpio]'s pins (none: no power control,
    the module is expected on). Nothing is opened here: the modem may take 20 s to boot
    and the terminal is ready without it."""
    return build(cfg, "modem")


def _keypad(cfg: Config) -> KeypadPort:
    from drivers.keypad import Keypad

    keypad = Keypad(build(cfg, "keypad"))
    keypad.open()
    return keypad


def _display(cfg: Config) -> DisplayPort:
    from drivers.lcd import Lcd2004

    # Not initialised here: the power-on sequence (about 60 ms of waits) runs in the
    # display's own thread before the first screen (drivers/lcd.py initialises a
    # controller it has not set up before writing to it), while the journal is read
    # and the terminal gets ready. A display that does not answer is the display
    # keeper's to report and retry (firmware/runtime/display.py); sales need none.
    return Lcd2004(build(cfg, "display"), address=cfg.display.settings.address)


def _pins(cfg: Config) -> PinsPort:
    from drivers.gpio import NoPins, Pins

    gpio = build(cfg, "gpio")
    return NoPins() if gpio is None else Pins(gpio, power_fail_pin=cfg.power.fail_pin)


def open_gauge(cfg: Config) -> GaugePort | None:
    """The battery gauge from [battery], on an I2C bus of its own; None without one.
    A gauge that does not answer at start is logged and read again later: sales do
    not depend on it."""
    from drivers.gauge import Max17048

    bus = build(cfg, "battery")
    if bus is None:
        return None
    gauge = Max17048(bus, address=cfg.battery.address)
    try:
        gauge.open()
    except DeviceError as exc:
        log.error("%s; the terminal starts without a battery level and keeps trying", exc)
    return gauge


def _printer(cfg: Config) -> PrinterPort:
    printer = build(cfg, "printer")  # drivers.printer.EscposPrinter
    try:
        printer.open()
    except DeviceError as exc:
        log.warning("printer not ready at start: %s (receipts will be retried per sale)", exc)
    port: PrinterPort = printer
    return port


# -- the backends ------------------------------------------------------------------------
def _dev(*keys: str, access: str = "rw") -> Nodes:
    return lambda o: [(str(getattr(o, k)), access) for k in keys]


@backend("card_reader", "serial", nodes=_dev("port"))
def _serial_reader(o: CardReaderOptions, cfg: Config) -> Any:
    from drivers.magstripe import MagstripeReader

    return MagstripeReader(o.port, baudrate=o.baudrate)


@backend("keypad", "evdev", nodes=_dev("path", access="r"))
def _evdev_keys(o: KeypadOptions, cfg: Config) -> Any:
    from drivers.keypad import EvdevSource

    return EvdevSource(o.path)


@backend("keypad", "hwsim")
def _hwsim_keys(o: KeypadOptions, cfg: Config) -> Any:
    from drivers.remote import RemoteKeySource

    return RemoteKeySource(o.socket)


@backend("printer", "network")
def _network_printer(o: PrinterOptions, cfg: Config) -> Any:
    from drivers.printer import EscposPrinter

    return EscposPrinter("network", host=o.host, port=o.port,
                         cache_dir=escpos_cache(Path(cfg.state_dir)),
                         confirm_print=o.confirm_print)


@backend("printer", "serial", nodes=_dev("device"))
def _serial_printer(o: PrinterOptions, cfg: Config) -> Any:
    from drivers.printer import EscposPrinter

    return EscposPrinter("serial", device=o.device, baudrate=o.baudrate,
                         cache_dir=escpos_cache(Path(cfg.state_dir)),
                         confirm_print=o.confirm_print)


@backend("display", "smbus2", nodes=lambda o: [(f"/dev/i2c-{o.bus}", "rw")])
def _smbus2_display(o: DisplayOptions, cfg: Config) -> Any:
    from drivers.lcd import open_smbus

    return open_smbus(o.bus)


@backend("display", "hwsim")
def _hwsim_display(o: DisplayOptions, cfg: Config) -> Any:
    from drivers.remote import RemoteSMBus

    return RemoteSMBus(o.socket, bus=o.bus)


# GPIO: the RPi.GPIO-shaped library the pins (and the modem's power keys) use; None: none.
@backend("gpio", "rpi", nodes=lambda o: [("/dev/gpiomem", "rw"),
                                         ("/dev/gpiochip0", "rw")])  # rpi-lgpio on a Pi 5
def _rpi_gpio(o: GpioOptions, cfg: Config) -> Any:
    from drivers.gpio import load_rpi_gpio

    return load_rpi_gpio()


@backend("gpio", "hwsim")
def _hwsim_gpio(o: GpioOptions, cfg: Config) -> Any:
    from drivers.remote import RemoteGPIO

    return RemoteGPIO(o.socket)


@backend("gpio", "none")
@backend("battery", "none")
@backend("modem", "none")
def _no_device(o: Any, cfg: Config) -> None:
    return None


@backend("battery", "i2c")
def _i2c_gauge(o: BatteryConfig, cfg: Config) -> Any:
    from drivers.gauge import open_gauge_bus

    return open_gauge_bus(o.bus)


@backend("battery", "hwsim")
def _hwsim_gauge(o: BatteryConfig, cfg: Config) -> Any:
    from drivers.remote import RemoteSMBus

    return RemoteSMBus(o.socket, bus=o.bus)


@backend("modem", "serial")
def _serial_modem(m: ModemConfig, cfg: Config) -> Any:
    from drivers.modem import Modem, ModemPower

    gpio = build(cfg, "gpio")
    power = (ModemPower(gpio, pwrkey_pin=m.pwrkey_pin, status_pin=m.status_pin,
                        reset_pin=m.reset_pin) if gpio is not None else None)
    return Modem(m.port, baudrate=m.baudrate, power=power, apn=m.apn,
                 boot_timeout=m.boot_timeout, command_timeout=m.command_timeout)


# Where the package builds python-escpos's capabilities cache once, at install
# (packaging/debian/postinst), for every state directory to start from.
INSTALLED_ESCPOS_CACHE = "/var/cache/posterm/escpos"


def escpos_cache(state_dir: Path) -> str:
    """The printer library's cache folder, in the state directory (private, writable).

    python-escpos keeps its printer capabilities as a pickle named after the Python
    version; without one, its first import parses a YAML file (about 0.5 s here, far
    more on a terminal's CPU). A state directory without the pickle gets a copy of a
    ready one, from ESCPOS_CAPABILITIES_PICKLE_DIR when that is set (a development
    checkout's .cache/escpos) or from the one the package built at install. The copy
    keeps its time stamp, which escpos compares with its capabilities file's to decide
    whether the pickle is current. Nothing to copy from, or a copy that fails, only
    means escpos builds the pickle itself, once, as before."""
    folder = state_dir / "escpos-cache"
    name = f"{platform.python_version()}.capabilities.pickle"
    if (folder / name).exists():
        return str(folder)
    sources = [os.environ.get("ESCPOS_CAPABILITIES_PICKLE_DIR", ""), INSTALLED_ESCPOS_CACHE]
    for source in (Path(s) / name for s in sources if s):
        if not source.is_file() or source.parent == folder:
            continue
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            scratch = folder / f".{name}.{os.getpid()}"
            shutil.copy2(source, scratch)
            os.chmod(scratch, 0o600)
            os.replace(scratch, folder / name)  # whole or not at all
        except OSError as exc:
            log.debug("printer cache: cannot copy %s: %s", source, exc)
            continue
        log.debug("printer cache: started from %s", source)
        break
    return str(folder)
