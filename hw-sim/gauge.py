"""MAX17048 fuel-gauge model: the register file the firmware's gauge driver reads over I2C.

The battery's state (percent of charge, cell voltage, charge rate) is set from the
control interface; reads return it with the datasheet's encoding, 16-bit
registers most significant byte first:

- 0x02 VCELL: 78.125 uV per bit
- 0x04 SOC: high byte whole percent, low byte 1/256 percent
- 0x08 VERSION: 0x0012
- 0x0C CONFIG: 0x971C at power-on, writable
- 0x16 CRATE: signed, 0.208 % per hour per bit

A read starts at the register given and runs on through the following ones, as
the chip's address pointer does. A write sets the register pointer (first byte)
and then writes the writable registers (MODE, CONFIG, HIBRT, VALRT, STATUS,
CMD). Setting the percent alone moves the voltage along a typical Li-ion
open-circuit curve, so a low battery also reads as a low voltage. `failing`
makes the chip stop answering, like a gauge that is unplugged.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

BUS = 1
ADDRESS = 0x36

REG_VCELL, REG_SOC, REG_MODE, REG_VERSION = 0x02, 0x04, 0x06, 0x08
REG_HIBRT, REG_CONFIG, REG_VALRT, REG_CRATE = 0x0A, 0x0C, 0x14, 0x16
REG_VRESET_ID, REG_STATUS, REG_CMD = 0x18, 0x1A, 0xFE
WRITABLE = {REG_MODE, REG_HIBRT, REG_CONFIG, REG_VALRT, REG_VRESET_ID, REG_STATUS, REG_CMD}

VERSION = 0x0012
VCELL_VOLTS_PER_BIT = 78.125e-6
CRATE_PERCENT_PER_HOUR_PER_BIT = 0.208

# A typical Li-ion open-circuit voltage curve: (percent, volts).
OCV_CURVE = ((0.0, 3.30), (5.0, 3.55), (10.0, 3.65), (20.0, 3.72), (50.0, 3.82),
             (80.0, 4.00), (100.0, 4.18))


class GaugeNotAnswering(ValueError):
    """The gauge does not acknowledge its address (a control answer, not a crash)."""


def ocv_volts(percent: float) -> float:
    """The open-circuit cell voltage at `percent` on the typical curve."""
    points = OCV_CURVE
    p = min(max(percent, points[0][0]), points[-1][0])
    for (p0, v0), (p1, v1) in zip(points, points[1:], strict=False):
        if p <= p1:
            return v0 + (v1 - v0) * (p - p0) / (p1 - p0)
    return points[-1][1]


class Max17048Sim:
    def __init__(self, percent: float = 87.5, rate: float = 0.0) -> None:
        self.percent = 0.0
        self.voltage = 0.0
        self.rate = 0.0
        self.failing = False
        self.reads = 0
        self._regs: dict[int, int] = {REG_MODE: 0x0000, REG_HIBRT: 0x8030, REG_CONFIG: 0x971C,
                                      REG_VALRT: 0x00FF, REG_VRESET_ID: 0x9600,
                                      REG_STATUS: 0x0100, REG_CMD: 0x0000}
        self._pointer = 0
        self.set(percent=percent, rate=rate)

    def set(self, *, percent: float | None = None, voltage: float | None = None,
            rate: float | None = None, failing: bool | None = None) -> dict[str, Any]:
        """Change the battery's state; the voltage follows the percent unless given."""
        if percent is not None:
            if not 0.0 <= percent <= 100.0:
                raise ValueError(f"battery: percent must be 0 to 100, not {percent:g}")
            self.percent = percent
            if voltage is None:
                self.voltage = ocv_volts(percent)
        if voltage is not None:
            if not 0.0 <= voltage <= 0xFFFF * VCELL_VOLTS_PER_BIT:
                raise ValueError(f"battery: voltage must be 0 to 5.12 V, not {voltage:g}")
            self.voltage = voltage
        if rate is not None:
            limit = 0x7FFF * CRATE_PERCENT_PER_HOUR_PER_BIT
            if not -limit <= rate <= limit:
                raise ValueError(f"battery: rate must be within +-{limit:.0f} %/h, not {rate:g}")
            self.rate = rate
        if failing is not None:
            self.failing = failing
        if (percent, voltage, rate, failing) != (None, None, None, None):
            log.info("battery: %.2f %%, %.3f V, %+.2f %%/h%s", self.percent, self.voltage,
                     self.rate, ", gauge not answering" if self.failing else "")
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"percent": round(self.percent, 3), "voltage": round(self.voltage, 4),
                "rate": round(self.rate, 3), "charging": self.rate > 0,
                "failing": self.failing, "reads": self.reads,
                "config": self._regs[REG_CONFIG]}

    def register(self, reg: int) -> int:
        """The 16-bit value of register `reg` as the chip would return it."""
        if reg == REG_VCELL:
            return min(0xFFFF, round(self.voltage / VCELL_VOLTS_PER_BIT))
        if reg == REG_SOC:
            return min(0xFFFF, round(self.percent * 256))
        if reg == REG_VERSION:
            return VERSION
        if reg == REG_CRATE:
            return round(self.rate / CRATE_PERCENT_PER_HOUR_PER_BIT) & 0xFFFF
        return self._regs.get(reg, 0x0000)

    # -- the I2C side (hwsim's I2cBus) ---------------------------------------------
    def read(self, reg: int, n: int) -> list[int]:
        self._check_answering()
        self.reads += 1
        out: list[int] = []
        addr = reg & 0xFF
        while len(out) < n:  # registers are two bytes; the pointer runs on
            word = self.register(addr & 0xFE)
            out.append(word >> 8 if addr % 2 == 0 else word & 0xFF)
            addr = (addr + 1) & 0xFF
        return out

    def write(self, data: list[int]) -> None:
        self._check_answering()
        if not data:
            return
        self._pointer = data[0]
        payload = data[1:]
        for i in range(0, len(payload) - 1, 2):
            reg = (self._pointer + i) & 0xFE
            if reg in WRITABLE:
                self._regs[reg] = (payload[i] << 8) | payload[i + 1]

    def _check_answering(self) -> None:
        if self.failing:
            raise GaugeNotAnswering(f"no I2C device answers at 0x{ADDRESS:02x} (the battery "
                                    "gauge is set to fail)")
