"""GPIO model: the terminal's pins, as the firmware's GPIO stand-in sees them.

Pins are numbered BCM; calls made in BOARD numbering are translated with the
40-pin header map. The firmware sets modes and output levels; inputs are driven
from the control interface (the power-fail input, pin 25, is high by default:
mains present). Output changes are kept in a short history so a test can see
the "online" LED (pin 24) blink, and observers can react to them (a modem's
power key, for example).
"""

from __future__ import annotations

import asyncio

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PIN_BUZZER = 23
PIN_LED_ONLINE = 24
PIN_POWER_FAIL = 25

# Physical header pin -> BCM number (Raspberry Pi 40-pin header).
BOARD_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23,
    18: 24, 19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5,
    31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip

HISTORY_LENGTH = 64

OutputObserver = Callable[[int, int], None]


class GpioModelError(ValueError):
    """A call the real GPIO library would reject (bad pin, wrong direction)."""


@dataclass
class Pin:
    direction: str  # "in" or "out"
    level: int = 0
    pull: str = "off"  # "off", "up", "down"


class GpioSim:
    def __init__(self) -> None:
        self._pins: dict[int, Pin] = {}
        self._driven: dict[int, int] = {PIN_POWER_FAIL: 1}  # levels set from outside
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_LENGTH)
        self._observers: list[OutputObserver] = []
        self._edge_listeners: set[asyncio.Queue[tuple[int, int]]] = set()

    @staticmethod
    def to_bcm(pin: int, mode: str = "BCM") -> int:
        if isinstance(pin, bool) or not isinstance(pin, int):
            raise GpioModelError(f"a pin number must be an integer, not {pin!r}")
        if mode == "BOARD":
            if pin not in BOARD_TO_BCM:
                raise GpioModelError(f"header pin {pin} is not a GPIO pin")
            return BOARD_TO_BCM[pin]
        if mode != "BCM":
            raise GpioModelError(f"numbering mode must be BCM or BOARD, not {mode!r}")
        if not 0 <= pin <= 27:
            raise GpioModelError(f"BCM pin {pin} does not exist (0..27)")
        return pin

    def on_output(self, observer: OutputObserver) -> None:
        """Call `observer(pin, level)` on every output change."""
        self._observers.append(observer)

    def setup(self, pin: int, direction: str, *, pull: str = "off", initial: int | None = None,
              mode: str = "BCM") -> None:  # fmt: skip
        bcm = self.to_bcm(pin, mode)
        if direction not in ("in", "out"):
            raise GpioModelError(f"direction must be 'in' or 'out', not {direction!r}")
        if pull not in ("off", "up", "down"):
            raise GpioModelError(f"pull must be 'off', 'up' or 'down', not {pull!r}")
        self._pins[bcm] = Pin(direction, 0, pull)
        if direction == "out":
            self._set_output(bcm, 0 if initial is None else _level(initial), force=True)

    def output(self, pin: int, level: int, *, mode: str = "BCM") -> None:
        bcm = self.to_bcm(pin, mode)
        state = self._pins.get(bcm)
        if state is None or state.direction != "out":
            raise GpioModelError(f"The GPIO channel {pin} has not been set up as an OUTPUT")
        self._set_output(bcm, _level(level))

    def input(self, pin: int, *, mode: str = "BCM") -> int:
        bcm = self.to_bcm(pin, mode)
        state = self._pins.get(bcm)
        if state is None:
            raise GpioModelError(f"You must setup() the GPIO channel {pin} first")
        if state.direction == "out":
            return state.level
        return self._input_level(bcm, state)

    def cleanup(self, pin: int | None = None, *, mode: str = "BCM") -> None:
        """Return pins (all when `pin` is None) to unconfigured inputs, as RPi.GPIO does."""
        if pin is None:
            self._pins.clear()
        else:
            self._pins.pop(self.to_bcm(pin, mode), None)

    def set_input(self, pin: int, level: int) -> None:
        """Drive an input pin from outside (a test, the UPS board)."""
        bcm = self.to_bcm(pin)
        before = self.level(bcm)
        self._driven[bcm] = _level(level)
        log.info("input %d driven %s", bcm, "high" if self._driven[bcm] else "low")
        after = self.level(bcm)
        if after != before:  # an edge: what RPi.GPIO's edge detection reports
            for queue in self._edge_listeners:
                queue.put_nowait((bcm, after))

    def listen_edges(self) -> asyncio.Queue[tuple[int, int]]:
        """A new listener's queue of input edges (BCM pin, new level); `unlisten_edges` it."""
        queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self._edge_listeners.add(queue)
        return queue

    def unlisten_edges(self, queue: asyncio.Queue[tuple[int, int]]) -> None:
        self._edge_listeners.discard(queue)

    def level(self, pin: int) -> int:
        state = self._pins.get(pin)
        if state is not None and state.direction == "out":
            return state.level
        return self._input_level(pin, state)

    def history(self, pin: int | None = None) -> list[dict[str, Any]]:
        return [h for h in self._history if pin is None or h["pin"] == pin]

    def state(self) -> dict[str, Any]:
        pins = {
            str(n): {"direction": p.direction, "level": self.level(n), "pull": p.pull}
            for n, p in sorted(self._pins.items())
        }
        return {
            "pins": pins,
            "inputs": {str(n): v for n, v in sorted(self._driven.items())},
            "led_online": self.level(PIN_LED_ONLINE),
            "power_ok": bool(self.level(PIN_POWER_FAIL)),
            "history": list(self._history),
        }

    def _input_level(self, pin: int, state: Pin | None) -> int:
        if pin in self._driven:
            return self._driven[pin]
        return 1 if state is not None and state.pull == "up" else 0

    def _set_output(self, pin: int, level: int, *, force: bool = False) -> None:
        state = self._pins[pin]
        if state.level == level and not force:
            return
        state.level = level
        self._history.append({"t": round(time.time(), 3), "pin": pin, "level": level})
        log.debug("output %d -> %d", pin, level)
        for observer in self._observers:
            try:
                observer(pin, level)
            except Exception:  # an observer's bug must not break the pin
                log.exception("GPIO observer failed for pin %d", pin)


def _level(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    raise GpioModelError(f"a level must be 0 or 1, not {value!r}")
