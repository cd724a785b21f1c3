"""The device tables of posterm.toml: each device's backends and their typed options.

A device table names its `backend` (the driver that opens the device) and the options
of that backend, each declared once (firmware.config_schema). Configuration declares
the backend names and their options; the runtime registers one factory per backend
name (firmware/runtime/wiring.py, as pyserial's `serial_for_url` picks a handler by
its URL's scheme), so configuration never imports the runtime. [battery] and [modem]
are device tables too; their dataclasses are in `firmware.config_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from firmware.config_schema import REQUIRED, backend, boolean, choice, integer, number, text
from firmware.config_schema import path as file_path  # a keypad's key is named path
from firmware.config_values import BAUDRATES, HOSTNAME_WHAT, hostname

BAUD_WHAT = "must be a standard baud rate"
I2C_WHAT = "must be a 7-bit I2C address from 0x03 to 0x77, e.g. 0x27"


@dataclass(frozen=True)
class DeviceConfig:
    """A device table as read: its backend, the options of that backend (by key), and the
    whole table as its typed dataclass (`settings`, what the backend's factory gets)."""

    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    settings: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class CardReaderOptions:
    """[card_reader]: the magnetic-stripe reader."""

    backend: str = backend(("serial",), help="the driver that opens the reader (pyserial)")
    port: str = file_path(REQUIRED, help="any pyserial port or URL (e.g. /dev/ttyUSB0)")
    baudrate: int = choice(9600, choices=BAUDRATES, what=BAUD_WHAT, help="8N1")


@dataclass(frozen=True, kw_only=True)
class KeypadOptions:
    """[keypad]."""

    backend: str = backend(("evdev", "hwsim"),
                           help="evdev: a Linux input device; hwsim: the simulator's keypad")
    path: str = file_path(REQUIRED, backends=("evdev",), help="the input device")
    socket: str = file_path(REQUIRED, socket=True, backends=("hwsim",),
                       help="hwsim's control socket")


@dataclass(frozen=True, kw_only=True)
class PrinterOptions:
    """[printer]: the ESC/POS receipt printer and its print queue."""

    backend: str = backend(("network", "serial"), help="python-escpos over TCP or a serial port")
    host: str = text(REQUIRED, check=hostname, what=HOSTNAME_WHAT, backends=("network",),
                     help="the printer's host name or IP address")
    port: int = integer(9100, lo=1, hi=65535, backends=("network",), help="its TCP port")
    device: str = file_path(REQUIRED, backends=("serial",), help="the printer's serial port")
    baudrate: int = choice(19200, choices=BAUDRATES, what=BAUD_WHAT, backends=("serial",),
                           help="its baud rate")
    confirm_print: bool = boolean(True, help="wait for the printer to confirm (GS r) that a "
                                  "receipt is out; `false` for printers without GS r")
    # the print queue (firmware/runtime/printqueue.py)
    status_interval: float = number(30, lo=5, hi=3600, help="status check while all is well")
    retry_max: float = number(10, lo=1, hi=600, help="longest pause between checks while a "
                              "fault lasts or receipts wait")
    job_timeout: float = number(20, lo=10, hi=300, help="longest a print may take before its "
                                "receipt is queued and the sale goes on")


@dataclass(frozen=True, kw_only=True)
class DisplayOptions:
    """[display]: the 20x4 HD44780 behind a PCF8574 on I2C."""

    backend: str = backend(("smbus2", "hwsim"),
                           help="smbus2: /dev/i2c-<bus>; hwsim: the simulator's display")
    socket: str = file_path(REQUIRED, socket=True, backends=("hwsim",),
                       help="hwsim's control socket")
    bus: int = integer(1, lo=0, hi=63, help="I2C bus number")
    address: int = integer(0x27, lo=0x03, hi=0x77, hex=True, what=I2C_WHAT,
                           help="the PCF8574's I2C address")


@dataclass(frozen=True, kw_only=True)
class GpioOptions:
    """[gpio]: online LED 24, buzzer 23, power-fail input 25 (BCM)."""

    backend: str = backend(("rpi", "hwsim", "none"), help="rpi: RPi.GPIO or rpi-lgpio; "
                           "none (also without the table): no pins")
    socket: str = file_path(REQUIRED, socket=True, backends=("hwsim",),
                       help="hwsim's control socket")
