"""MAX17048 battery fuel gauge on I2C (smbus2).

Registers are 16 bits, most significant byte first (datasheet, "Register Summary"):

| reg  | name    | meaning                                                         |
|------|---------|-----------------------------------------------------------------|
| 0x02 | VCELL   | cell voltage, 78.125 uV per bit                                 |
| 0x04 | SOC     | state of charge: high byte whole percent, low byte 1/256 percent |
| 0x08 | VERSION | production version, 0x001X for the MAX17048/MAX17049            |
| 0x0C | CONFIG  | alert threshold, sleep, compensation                            |
| 0x16 | CRATE   | charge or discharge rate, signed, 0.208 percent per hour         |

Each register is read as two bytes with `read_i2c_block_data(address, reg, 2)`:
smbus2's `read_word_data` assumes SMBus little-endian words and would return the
bytes of this device swapped.

The gauge gets an SMBus of its own (its own file descriptor), which `close`
closes: smbus2 selects the device address with an ioctl before each transfer,
and a bus object shared with the display's thread could send a display write to
the gauge. `open` reads
VERSION, so a wrong address or another chip is caught at start; `read` opens
first if that has not succeeded yet. Every I2C failure and every value outside
what a single Li-ion cell can show becomes a `GaugeError` with the register and
the reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from firmware.errors import GaugeError

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.gauge")

ADDRESS = 0x36
REG_VCELL = 0x02
REG_SOC = 0x04
REG_VERSION = 0x08
REG_CONFIG = 0x0C
REG_CRATE = 0x16
REGISTER_NAMES = {REG_VCELL: "VCELL", REG_SOC: "SOC", REG_VERSION: "VERSION",
                  REG_CONFIG: "CONFIG", REG_CRATE: "CRATE"}

VCELL_VOLTS_PER_BIT = 78.125e-6
CRATE_PERCENT_PER_HOUR_PER_BIT = 0.208
VERSION_FAMILY = 0x0010  # MAX17048 / MAX17049: 0x0010..0x001F

# What one Li-ion cell can show. Outside this the gauge, the cell or the wiring is
# wrong, and a reading must not decide whether the terminal takes sales.
VOLTS_MIN, VOLTS_MAX = 2.5, 4.5
PERCENT_MAX = 105.0  # the gauge may report a little over 100 % at the end of a charge


class BlockReader(Protocol):
    """The smbus2.SMBus methods the gauge uses."""

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class GaugeReading:
    voltage: float  # volts
    percent: float  # state of charge, 0..100 (a little over 100 at the end of a charge)
    rate: float  # percent per hour; positive while charging
    version: int  # the VERSION register

    @property
    def charging(self) -> bool:
        return self.rate > 0


def decode_vcell(word: int) -> float:
    """VCELL register value -> volts."""
    return word * VCELL_VOLTS_PER_BIT


def decode_soc(word: int) -> float:
    """SOC register value -> percent: the high byte is whole percent, the low 1/256."""
    return word / 256.0


def decode_crate(word: int) -> float:
    """CRATE register value (two's complement) -> percent per hour."""
    signed = word - 0x10000 if word & 0x8000 else word
    return signed * CRATE_PERCENT_PER_HOUR_PER_BIT


class Max17048:
    """The MAX17048 fuel gauge at `address` on an SMBus-like `bus`, which it owns."""

    def __init__(self, bus: BlockReader, address: int = ADDRESS) -> None:
        self._bus = bus
        self.address = address
        self.version: int | None = None  # set once open() has checked the chip
        self._lock = threading.Lock()

    def open(self) -> int:
        """Read VERSION and check that a MAX17048/49 answers; returns the version."""
        with self._lock:
            return self._open()

    def read(self) -> GaugeReading:
        """Voltage, state of charge and rate. GaugeError on a bus error or a bad value."""
        with self._lock:
            version = self.version if self.version is not None else self._open()
            volts = decode_vcell(self._word(REG_VCELL))
            percent = decode_soc(self._word(REG_SOC))
            rate = decode_crate(self._word(REG_CRATE))
        wire.debug("<<< VCELL %.4f V, SOC %.3f %%, CRATE %+.3f %%/h", volts, percent, rate)
        if not VOLTS_MIN <= volts <= VOLTS_MAX:
            raise GaugeError(
                f"battery gauge at {self.address:#04x}: cell voltage {volts:.3f} V is outside "
                f"{VOLTS_MIN:g}-{VOLTS_MAX:g} V (no cell connected, or a wiring fault)")
        if percent > PERCENT_MAX:
            raise GaugeError(
                f"battery gauge at {self.address:#04x}: state of charge {percent:.1f} % is "
                f"over {PERCENT_MAX:g} % (the gauge's cell model does not fit this battery)")
        return GaugeReading(round(volts, 4), min(percent, 100.0), round(rate, 3), version)

    def close(self) -> None:
        """Stop using the gauge and close its bus."""
        with self._lock:
            self.version = None
            try:
                self._bus.close()
            except OSError as exc:
                log.debug("battery gauge: closing the bus: %s", exc)

    def _open(self) -> int:
        version = self._word(REG_VERSION)
        if version & 0xFFF0 != VERSION_FAMILY:
            raise GaugeError(
                f"battery gauge at {self.address:#04x}: VERSION reads {version:#06x}, not a "
                "MAX17048/MAX17049 (0x001X): check [battery] address")
        if self.version is None:
            log.info("battery gauge: MAX17048 version %#06x at %#04x", version, self.address)
        self.version = version
        return version

    def _word(self, reg: int) -> int:
        name = REGISTER_NAMES.get(reg, f"{reg:#04x}")
        try:
            data = self._bus.read_i2c_block_data(self.address, reg, 2)
        except OSError as exc:
            self.version = None  # check the chip again once it answers
            raise GaugeError(f"battery gauge at {self.address:#04x}: reading {name} failed: "
                             f"{exc.strerror or exc}") from exc
        if len(data) != 2 or not all(isinstance(b, int) and 0 <= b <= 255 for b in data):
            raise GaugeError(f"battery gauge at {self.address:#04x}: reading {name} gave "
                             f"{data!r}, not two bytes")
        return (data[0] << 8) | data[1]


def open_gauge_bus(bus_number: int) -> Any:
    """Open /dev/i2c-N for the gauge alone; a missing or forbidden device is a GaugeError."""
    from drivers.lcd import open_smbus

    return open_smbus(bus_number, who="battery gauge", error=GaugeError)
