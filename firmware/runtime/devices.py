"""The device nodes a configuration names, as a systemd drop-in (`posterm device-allow`).

The unit ships `DevicePolicy=closed` with the reference devices of hardware.md.
A terminal with other devices gets a drop-in that first empties that list
(`DeviceAllow=` with no value) and then allows exactly what its configuration
uses: the card reader's serial port, a serial printer, the display's I2C bus,
the keypad's input device (symlinks such as /dev/input/by-path/... resolved to
the node) and the GPIO memory for RPi.GPIO. Simulated devices (hwsim sockets,
pyserial URLs) need no device node and are left out.
"""

from __future__ import annotations

import os

from firmware.config import Config


def nodes(cfg: Config) -> list[tuple[str, str]]:
    """(device node, access) pairs, in a stable order, without duplicates."""
    found: list[tuple[str, str]] = []

    def add(path: str, access: str) -> None:
        if path.startswith("/dev/"):
            real = os.path.realpath(path)
            for node in dict.fromkeys((path, real)):
                if node.startswith("/dev/") and (node, access) not in found:
                    found.append((node, access))

    add(str(cfg.card_reader.options.get("port", "")), "rw")
    if cfg.printer.backend == "serial":
        add(str(cfg.printer.options.get("device", "")), "rw")
    if cfg.display.backend == "smbus2":
        add(f"/dev/i2c-{cfg.display.options.get('bus', 1)}", "rw")
    if cfg.keypad.backend == "evdev":
        add(str(cfg.keypad.options.get("path", "")), "r")
    if cfg.gpio.backend == "rpi":
        add("/dev/gpiomem", "rw")
        add("/dev/gpiochip0", "rw")  # rpi-lgpio on a Raspberry Pi 5
    return found


def drop_in(cfg: Config) -> str:
    lines = ["# posterm.service drop-in made by `posterm device-allow` from",
             f"# {cfg.path}: exactly the devices it names", "[Service]",
             "DevicePolicy=closed", "DeviceAllow="]
    lines += [f"DeviceAllow={node} {access}" for node, access in nodes(cfg)]
    return "\n".join(lines) + "\n"
