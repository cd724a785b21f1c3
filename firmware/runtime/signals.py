"""The terminal's pins, driven from their own thread: the online LED, the buzzer, and the
power-fail input read for power.py. A pin that fails is logged and never holds up a
sale (a buzzer is a courtesy); the thread is named "pins" (threads.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from firmware.errors import DeviceError
from firmware.ports import PinsPort
from firmware.runtime import threads

log = logging.getLogger("posterm")
BEEP_SECONDS = 0.15


class Signals:
    def __init__(self, pins: PinsPort) -> None:
        self.pins = pins
        self._pool = threads.pool("pins")

    async def _in(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def led(self, on: bool) -> None:
        """The online LED: lit while the host can be reached."""
        try:
            await self._in(self.pins.set_led, on)
        except DeviceError as exc:
            log.warning("online LED: %s", exc)

    async def beep(self) -> None:
        try:
            await self._in(self.pins.beep, True)
            await asyncio.sleep(BEEP_SECONDS)
            await self._in(self.pins.beep, False)
        except DeviceError as exc:
            log.warning("buzzer: %s", exc)

    async def power_ok(self) -> bool:
        return bool(await self._in(self.pins.power_ok))

    async def watch_power(self, changed: Callable[[], None]) -> None:
        await self._in(self.pins.watch_power, changed)
