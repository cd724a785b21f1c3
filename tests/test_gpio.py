"""Tests of the GPIO pins driver over a small fake of the RPi.GPIO module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from drivers.gpio import NoPins, Pins, load_rpi_gpio
from firmware.errors import GpioError


class FakeGpio:
    """Behaves like RPi.GPIO for the calls the driver makes, and records them."""

    BCM, BOARD = 11, 10
    OUT, IN = 0, 1
    HIGH, LOW = 1, 0
    PUD_UP, PUD_OFF = 22, 20

    def __init__(self) -> None:
        self.mode: int | None = None
        self.warnings = True
        self.directions: dict[int, int] = {}
        self.pulls: dict[int, int] = {}
        self.levels: dict[int, int] = {}
        self.inputs: dict[int, int] = {}
        self.cleaned: list[int] = []
        self.fail_output = False

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def setwarnings(self, flag: bool) -> None:
        self.warnings = flag

    def setup(self, channel: int, direction: int, pull_up_down: int = 20) -> None:
        if self.mode is None:
            raise RuntimeError("Please set pin numbering mode using GPIO.setmode(GPIO.BCM)")
        if not 0 <= channel <= 27:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        self.directions[channel] = direction
        self.pulls[channel] = pull_up_down

    def output(self, channel: int, value: int) -> None:
        if self.fail_output:
            raise RuntimeError("No access to /dev/mem.  Try running as root!")
        if self.directions.get(channel) != self.OUT:
            raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
        self.levels[channel] = value

    def input(self, channel: int) -> int:
        if channel not in self.directions:
            raise RuntimeError("You must setup() the GPIO channel first")
        return self.inputs.get(channel, 1 if self.pulls.get(channel) == self.PUD_UP else 0)

    def cleanup(self, channel: Any = None) -> None:
        channels = list(self.directions) if channel is None else [channel]
        for c in channels:
            self.directions.pop(c, None)
            self.cleaned.append(c)


def test_setup_uses_bcm_and_the_default_pins() -> None:
    gpio = FakeGpio()
    Pins(gpio)
    assert gpio.mode == FakeGpio.BCM
    assert gpio.warnings is False
    assert gpio.directions == {24: FakeGpio.OUT, 23: FakeGpio.OUT, 25: FakeGpio.IN}
    assert gpio.pulls[25] == FakeGpio.PUD_UP
    assert gpio.levels == {24: 0, 23: 0}  # LED and buzzer start off


def test_led_and_buzzer() -> None:
    gpio = FakeGpio()
    pins = Pins(gpio)
    pins.set_led(True)
    pins.beep(True)
    assert gpio.levels == {24: 1, 23: 1}
    pins.beep(False)
    assert gpio.levels == {24: 1, 23: 0}
    pins.set_led(False)
    assert gpio.levels == {24: 0, 23: 0}


def test_power_ok_follows_the_power_fail_input() -> None:
    gpio = FakeGpio()
    pins = Pins(gpio)
    assert pins.power_ok() is True  # pulled up: mains present
    gpio.inputs[25] = 0
    assert pins.power_ok() is False
    gpio.inputs[25] = 1
    assert pins.power_ok() is True


def test_other_pin_numbers() -> None:
    gpio = FakeGpio()
    pins = Pins(gpio, led_pin=5, buzzer_pin=6, power_fail_pin=13)
    pins.set_led(True)
    gpio.inputs[13] = 0
    assert gpio.levels[5] == 1 and gpio.levels[6] == 0
    assert pins.power_ok() is False


def test_close_switches_off_and_releases_only_its_pins() -> None:
    gpio = FakeGpio()
    gpio.setmode(gpio.BCM)
    gpio.setup(17, gpio.OUT)  # another driver's pin (the modem's power key)
    pins = Pins(gpio)
    pins.set_led(True)
    pins.beep(True)
    pins.close()
    pins.close()  # twice is harmless
    assert gpio.levels[24] == 0 and gpio.levels[23] == 0
    assert sorted(gpio.cleaned) == [23, 24, 25]
    assert 17 in gpio.directions
    with pytest.raises(GpioError, match="already released"):
        pins.set_led(True)


def test_library_errors_become_gpio_errors() -> None:
    gpio = FakeGpio()
    pins = Pins(gpio)
    gpio.fail_output = True
    with pytest.raises(GpioError) as info:
        pins.set_led(True)
    assert str(info.value).startswith("gpio: cannot switch pin 24 (LED) on: No access to /dev/mem")
    assert info.value.device == "gpio"


def test_bad_pin_at_setup_is_a_gpio_error() -> None:
    with pytest.raises(GpioError, match="cannot set up pin 40 \\(LED\\) as an output"):
        Pins(FakeGpio(), led_pin=40)


def test_no_pins() -> None:
    pins = NoPins()
    pins.set_led(True)
    pins.beep(True)
    assert pins.power_ok() is True
    pins.close()


def test_load_rpi_gpio_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    with pytest.raises(GpioError, match="RPi.GPIO is not installed: install posterm\\[device\\]"):
        load_rpi_gpio()


def test_load_rpi_gpio_off_the_pi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "RPi"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "GPIO.py").write_text(
        "raise RuntimeError('This module can only be run on a Raspberry Pi!')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "RPi", raising=False)
    monkeypatch.delitem(sys.modules, "RPi.GPIO", raising=False)
    with pytest.raises(GpioError, match="RPi.GPIO cannot run here \\(This module can only"):
        load_rpi_gpio()
