"""The modem's power sequencing: PWRKEY, STATUS and RESET on GPIO.

A high pulse of at least 0.5 s on PWRKEY toggles the module's power; STATUS (an
input) is high while it is on; a high pulse of at least 0.2 s on RESET restarts
it (a hung module may ignore PWRKEY). `power_cycle` switches it off and on, or
resets it if it will not switch off. The pins are BCM numbers on any object with
the RPi.GPIO API (drivers/gpio.py, or hwsim's stand-in in drivers/remote.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from drivers.gpio import GpioModule
from drivers.modemerrors import ModemError, ModemNotAnswering

log = logging.getLogger(__name__)

PWRKEY_PIN, STATUS_PIN, RESET_PIN = 17, 27, 22
PWRKEY_PULSE = 0.6  # seconds high; the module needs at least 0.5
RESET_PULSE = 0.3  # seconds high; the module needs at least 0.2


class ModemPower:
    """PWRKEY, STATUS and RESET on any object with the RPi.GPIO API (BCM numbering).

    Every GPIO call blocks (RPi.GPIO, or hwsim's stand-in on a socket), so each
    step runs in a worker thread; a pulse is one call, so its length is exact."""

    def __init__(self, gpio: GpioModule, *, pwrkey_pin: int = PWRKEY_PIN,
                 status_pin: int = STATUS_PIN, reset_pin: int = RESET_PIN,
                 off_timeout: float = 10.0) -> None:  # fmt: skip
        self._gpio = gpio
        self.pwrkey_pin, self.status_pin, self.reset_pin = pwrkey_pin, status_pin, reset_pin
        self.off_timeout = off_timeout
        self._ready = False

    async def setup(self) -> None:
        if not self._ready:
            await asyncio.to_thread(self._setup)
            self._ready = True

    def _setup(self) -> None:
        g = self._gpio
        try:
            g.setwarnings(False)
            g.setmode(g.BCM)
            g.setup(self.pwrkey_pin, g.OUT)
            g.output(self.pwrkey_pin, g.LOW)
            g.setup(self.reset_pin, g.OUT)
            g.output(self.reset_pin, g.LOW)
            g.setup(self.status_pin, g.IN)
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise ModemError(f"modem: cannot set up its pins (PWRKEY {self.pwrkey_pin}, "
                             f"STATUS {self.status_pin}, RESET {self.reset_pin}): {exc}") from exc

    async def is_on(self) -> bool:
        await self.setup()
        return bool(await asyncio.to_thread(self._call, self._gpio.input, self.status_pin))

    async def power_on(self, timeout: float) -> None:
        """Pulse PWRKEY if STATUS is low and wait for STATUS to go high."""
        if await self.is_on():
            return
        log.info("modem: powering on (PWRKEY pulse on pin %d)", self.pwrkey_pin)
        await self._pulse(self.pwrkey_pin, PWRKEY_PULSE)
        if not await self._wait_status(True, timeout):
            raise ModemNotAnswering(f"modem: STATUS (pin {self.status_pin}) stayed low "
                                    f"{timeout:g} s after the PWRKEY pulse: no power?")

    async def power_off(self) -> bool:
        """Pulse PWRKEY if STATUS is high and wait for STATUS to go low; False if it stays
        high (a hung module may ignore PWRKEY: reset it then)."""
        if not await self.is_on():
            return True
        log.info("modem: powering off (PWRKEY pulse on pin %d)", self.pwrkey_pin)
        await self._pulse(self.pwrkey_pin, PWRKEY_PULSE)
        return await self._wait_status(False, self.off_timeout)

    async def reset(self) -> None:
        log.info("modem: RESET pulse on pin %d", self.reset_pin)
        await self.setup()
        await self._pulse(self.reset_pin, RESET_PULSE)

    async def power_cycle(self, timeout: float) -> None:
        """Off and on again; a module that will not switch off is reset instead."""
        if not await self.power_off():
            log.warning("modem: still on %g s after PWRKEY; resetting it", self.off_timeout)
            await self.reset()
            return
        await self.power_on(timeout)

    async def _pulse(self, pin: int, seconds: float) -> None:
        await self.setup()

        def pulse() -> None:
            self._call(self._gpio.output, pin, self._gpio.HIGH)
            try:
                time.sleep(seconds)
            finally:
                self._call(self._gpio.output, pin, self._gpio.LOW)

        await asyncio.to_thread(pulse)

    async def _wait_status(self, high: bool, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if await self.is_on() == high:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise ModemError(f"modem: GPIO call failed: {exc}") from exc
