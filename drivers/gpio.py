"""Terminal pins (online LED, buzzer, power-fail input) through the RPi.GPIO API.

`Pins` drives any object with the RPi.GPIO module's API: the real module from
`load_rpi_gpio()` on a terminal, or a stand-in with the same names. BCM
numbering. `NoPins` is for terminals without GPIO. Library errors become
`GpioError` with the pin and what was being done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from firmware.errors import GpioError

log = logging.getLogger(__name__)

LED_PIN = 24  # "online" LED, output
BUZZER_PIN = 23  # buzzer, output
POWER_FAIL_PIN = 25  # input from the UPS board: low means mains power is lost

# What RPi.GPIO raises for a bad pin, a missing setup or no access to the chip.
_GPIO_ERRORS = (RuntimeError, ValueError, TypeError, OSError)


class GpioModule(Protocol):
    """The part of the RPi.GPIO module's API that `Pins` uses."""

    BCM: Any
    OUT: Any
    IN: Any
    HIGH: Any
    LOW: Any
    PUD_UP: Any
    BOTH: Any

    def setmode(self, mode: Any) -> None: ...

    def setwarnings(self, flag: bool) -> None: ...

    def setup(self, channel: int, direction: Any, *args: Any, **kwargs: Any) -> None: ...

    def output(self, channel: int, value: Any) -> None: ...

    def input(self, channel: int) -> Any: ...

    def cleanup(self, *args: Any) -> None: ...

    def add_event_detect(self, channel: int, edge: Any, callback: Any = None,
                         bouncetime: Any = None) -> None: ...

    def remove_event_detect(self, channel: int) -> None: ...


def load_rpi_gpio() -> GpioModule:
    """Import RPi.GPIO. Raises GpioError when it is missing or cannot run here."""
    try:
        import RPi.GPIO as gpio  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise GpioError(
            "RPi.GPIO is not installed: install posterm[device] on the terminal"
        ) from exc
    except RuntimeError as exc:
        raise GpioError(
            f"RPi.GPIO cannot run here ({exc}): it needs a Raspberry Pi and access to "
            "/dev/gpiomem (run as a member of the gpio group)"
        ) from exc
    return gpio  # type: ignore[no-any-return, unused-ignore]


class Pins:
    """`PinsPort` on the terminal's GPIO header."""

    def __init__(
        self,
        gpio: GpioModule,
        *,
        led_pin: int = LED_PIN,
        buzzer_pin: int = BUZZER_PIN,
        power_fail_pin: int = POWER_FAIL_PIN,
    ) -> None:
        self._gpio = gpio
        self._led = led_pin
        self._buzzer = buzzer_pin
        self._power_fail = power_fail_pin
        self._closed = False
        self._watched = False  # edge detection on the power-fail input
        try:
            gpio.setwarnings(False)
            gpio.setmode(gpio.BCM)
        except _GPIO_ERRORS as exc:
            raise GpioError(f"gpio: cannot select BCM pin numbering: {exc}") from exc
        for pin, use in ((led_pin, "LED"), (buzzer_pin, "buzzer")):
            self._call(f"set up pin {pin} ({use}) as an output", gpio.setup, pin, gpio.OUT)
            self._call(f"switch pin {pin} ({use}) off", gpio.output, pin, gpio.LOW)
        self._call(
            f"set up pin {power_fail_pin} (power-fail) as an input",
            gpio.setup,
            power_fail_pin,
            gpio.IN,
            pull_up_down=gpio.PUD_UP,
        )
        log.info(
            "gpio: LED on %d, buzzer on %d, power-fail input on %d (BCM)",
            led_pin,
            buzzer_pin,
            power_fail_pin,
        )

    def set_led(self, on: bool) -> None:
        self._write(self._led, "LED", on)

    def beep(self, on: bool) -> None:
        self._write(self._buzzer, "buzzer", on)

    def power_ok(self) -> bool:
        """True while mains power is present (the power-fail input is high)."""
        self._check_open()
        pin = self._power_fail
        return bool(self._call(f"read pin {pin} (power-fail)", self._gpio.input, pin))

    def watch_power(self, changed: Callable[[], None]) -> None:
        """Call `changed()` (in the GPIO library's own thread) at every edge of the
        power-fail input, so that mains is read when it changes instead of polled.
        GpioError when the library cannot detect edges on the pin."""
        self._check_open()
        pin = self._power_fail
        if self._watched:  # a watcher started again: the new callback replaces the old
            self._call(f"stop watching pin {pin}", self._gpio.remove_event_detect, pin)
            self._watched = False
        self._call(f"watch pin {pin} (power-fail) for edges", self._gpio.add_event_detect,
                   pin, self._gpio.BOTH, callback=lambda _channel: changed())
        self._watched = True

    def close(self) -> None:
        """Switch the outputs off and release this driver's pins (only these)."""
        if self._closed:
            return
        self._closed = True
        if self._watched:
            try:
                self._gpio.remove_event_detect(self._power_fail)
            except _GPIO_ERRORS as exc:
                log.debug("gpio: edge detection on pin %d: %s", self._power_fail, exc)
        for pin in (self._led, self._buzzer):
            try:
                self._gpio.output(pin, self._gpio.LOW)
            except _GPIO_ERRORS as exc:
                log.debug("gpio: switching pin %d off: %s", pin, exc)
        for pin in (self._led, self._buzzer, self._power_fail):
            self._call(f"release pin {pin}", self._gpio.cleanup, pin)

    def _write(self, pin: int, use: str, on: bool) -> None:
        self._check_open()
        level = self._gpio.HIGH if on else self._gpio.LOW
        state = "on" if on else "off"
        self._call(f"switch pin {pin} ({use}) {state}", self._gpio.output, pin, level)

    def _check_open(self) -> None:
        if self._closed:
            raise GpioError("gpio: the pins are already released")

    @staticmethod
    def _call(action: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _GPIO_ERRORS as exc:
            raise GpioError(f"gpio: cannot {action}: {exc}") from exc


class NoPins:
    """`PinsPort` for a terminal without GPIO: no LED, no buzzer, mains always present."""

    def set_led(self, on: bool) -> None:
        pass

    def beep(self, on: bool) -> None:
        pass

    def power_ok(self) -> bool:
        return True

    def watch_power(self, changed: Callable[[], None]) -> None:
        pass  # mains never changes: nothing to tell

    def close(self) -> None:
        pass
