"""Wiring: the one place that turns configuration into device objects.

Real or simulated is decided here and only here, from each device's `backend`.
Opening a device that is not there raises a DeviceError with one clear message.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.config import Config
from firmware.errors import DeviceError
from firmware.ports import CardReaderPort, DisplayPort, KeypadPort, PinsPort, PrinterPort
from firmware.runtime.power import GaugePort

log = logging.getLogger("posterm.wiring")


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

    def close(self) -> None:
        for dev in (self.card_reader, self.keypad, self.printer, self.display, self.pins,
                    *((self.gauge,) if self.gauge is not None else ())):
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
    from drivers.magstripe import MagstripeReader

    reader = MagstripeReader(cfg.card_reader.options["port"],
                             baudrate=cfg.card_reader.options["baudrate"])
    reader.open(required=False)
    keypad = _keypad(cfg)
    display = _display(cfg)
    pins = _pins(cfg)
    printer = _printer(cfg)
    return Devices(reader, keypad, printer, display, pins, gauge=open_gauge(cfg),
                   modem=open_modem(cfg))


def open_modem(cfg: Config) -> Any:
    """The modem driver for [modem], powered through [gpio]'s pins (none: no power control,
    the module is expected on). Nothing is opened here: the modem may take 20 s to boot
    and the terminal is ready without it."""
    if not cfg.modem.enabled:
        return None
    from drivers.modem import Modem, ModemPower

    m = cfg.modem
    gpio: Any = None
    if cfg.gpio.backend == "hwsim":
        from drivers.remote import RemoteGPIO

        gpio = RemoteGPIO(cfg.gpio.options["socket"])
    elif cfg.gpio.backend == "rpi":
        from drivers.gpio import load_rpi_gpio

        gpio = load_rpi_gpio()
    power = (ModemPower(gpio, pwrkey_pin=m.pwrkey_pin, status_pin=m.status_pin,
                        reset_pin=m.reset_pin) if gpio is not None else None)
    return Modem(m.port, baudrate=m.baudrate, power=power, apn=m.apn,
                 boot_timeout=m.boot_timeout, command_timeout=m.command_timeout)


def _keypad(cfg: Config) -> KeypadPort:
    from drivers.keypad import EvdevSource, Keypad

    opts = cfg.keypad.options
    source: Any
    if cfg.keypad.backend == "hwsim":
        from drivers.remote import RemoteKeySource

        source = RemoteKeySource(opts["socket"])
    else:
        source = EvdevSource(opts["path"])
    keypad = Keypad(source)
    keypad.open()
    return keypad


def _display(cfg: Config) -> DisplayPort:
    from drivers.lcd import Lcd2004, open_smbus

    opts = cfg.display.options
    bus: Any
    if cfg.display.backend == "hwsim":
        from drivers.remote import RemoteSMBus

        bus = RemoteSMBus(opts["socket"], bus=opts["bus"])
    else:
        bus = open_smbus(opts["bus"])
    # Not initialised here: the power-on sequence (about 60 ms of waits) runs in the
    # display's own thread before the first screen (drivers/lcd.py initialises a
    # controller it has not set up before writing to it), while the journal is read
    # and the terminal gets ready. A display that does not answer is the display
    # keeper's to report and retry (firmware/runtime/display.py); sales need none.
    return Lcd2004(bus, address=opts["address"])


def _pins(cfg: Config) -> PinsPort:
    from drivers.gpio import NoPins, Pins, load_rpi_gpio

    if cfg.gpio.backend == "none":
        return NoPins()
    if cfg.gpio.backend == "hwsim":
        from drivers.remote import RemoteGPIO

        return Pins(RemoteGPIO(cfg.gpio.options["socket"]), power_fail_pin=cfg.power.fail_pin)
    return Pins(load_rpi_gpio(), power_fail_pin=cfg.power.fail_pin)


def open_gauge(cfg: Config) -> GaugePort | None:
    """The battery gauge from [battery], on an I2C bus of its own; None without one.
    A gauge that does not answer at start is logged and read again later: sales do
    not depend on it."""
    from drivers.gauge import Max17048, open_gauge_bus

    bat = cfg.battery
    if bat.backend == "none":
        return None
    bus: Any
    if bat.backend == "hwsim":
        from drivers.remote import RemoteSMBus

        bus = RemoteSMBus(bat.socket, bus=bat.bus)
    else:
        bus = open_gauge_bus(bat.bus)
    gauge = Max17048(bus, address=bat.address)
    try:
        gauge.open()
    except DeviceError as exc:
        log.error("%s; the terminal starts without a battery level and keeps trying", exc)
    return gauge


def _printer(cfg: Config) -> PrinterPort:
    from drivers.printer import EscposPrinter

    opts = cfg.printer.options
    cache = escpos_cache(Path(cfg.state_dir))
    if cfg.printer.backend == "network":
        printer = EscposPrinter("network", host=opts["host"], port=opts["port"], cache_dir=cache,
                                confirm_print=opts["confirm_print"])
    else:
        printer = EscposPrinter("serial", device=opts["device"], baudrate=opts["baudrate"],
                                cache_dir=cache, confirm_print=opts["confirm_print"])
    try:
        printer.open()
    except DeviceError as exc:
        log.warning("printer not ready at start: %s (receipts will be retried per sale)", exc)
    return printer


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
