"""Wiring: the one place that turns configuration into device objects.

Real or simulated is decided here and only here, from each device's `backend`.
Opening a device that is not there raises a DeviceError with one clear message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.config import Config
from firmware.errors import DeviceError
from firmware.ports import CardReaderPort, DisplayPort, KeypadPort, PinsPort, PrinterPort

log = logging.getLogger("posterm.wiring")


@dataclass
class Devices:
    card_reader: CardReaderPort
    keypad: KeypadPort
    printer: PrinterPort
    display: DisplayPort
    pins: PinsPort

    def close(self) -> None:
        for dev in (self.card_reader, self.keypad, self.printer, self.display, self.pins):
            try:
                dev.close()
            except Exception as exc:  # closing must never mask the real reason we stop
                log.warning("closing %s: %s", type(dev).__name__, exc)


def open_devices(cfg: Config) -> Devices:
    """Open every device. Card reader, keypad and display are required; a printer
    that is not ready only logs a warning (a sale can go on without paper)."""
    from drivers.magstripe import MagstripeReader

    reader = MagstripeReader(cfg.card_reader.options["port"],
                             baudrate=cfg.card_reader.options["baudrate"])
    reader.open()
    keypad = _keypad(cfg)
    display = _display(cfg)
    pins = _pins(cfg)
    printer = _printer(cfg)
    return Devices(reader, keypad, printer, display, pins)


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
    lcd = Lcd2004(bus, address=opts["address"])
    lcd.init()
    return lcd


def _pins(cfg: Config) -> PinsPort:
    from drivers.gpio import NoPins, Pins, load_rpi_gpio

    if cfg.gpio.backend == "none":
        return NoPins()
    if cfg.gpio.backend == "hwsim":
        from drivers.remote import RemoteGPIO

        return Pins(RemoteGPIO(cfg.gpio.options["socket"]))
    return Pins(load_rpi_gpio())


def _printer(cfg: Config) -> PrinterPort:
    from drivers.printer import EscposPrinter

    opts = cfg.printer.options
    cache = str(Path(cfg.state_dir) / "escpos-cache")
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
