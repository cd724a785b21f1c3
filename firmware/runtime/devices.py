"""The device nodes a configuration names, as a systemd drop-in (`posterm device-allow`).

The unit ships `DevicePolicy=closed` with the reference devices of hardware.md.
A terminal with other devices gets a drop-in that first empties that list
(`DeviceAllow=` with no value) and then allows exactly what its configuration
uses: the card reader's serial port, a serial printer, the display's I2C bus,
the keypad's input device (symlinks such as /dev/input/by-path/... resolved to
the node) and the GPIO memory for RPi.GPIO. Simulated devices (hwsim sockets,
pyserial URLs) need no device node and are left out. Which nodes a backend's
options name is said where the backend is registered (firmware/runtime/wiring.py).
"""

from __future__ import annotations

import os

from firmware.config import Config
from firmware.runtime.wiring import lookup

# The tables whose backends may name device nodes (their registry entries say which), in
# the drop-in's order.
NODE_TABLES = ("card_reader", "printer", "display", "keypad", "gpio")


def nodes(cfg: Config) -> list[tuple[str, str]]:
    """(device node, access) pairs, in a stable order, without duplicates."""
    found: list[tuple[str, str]] = []

    def add(path: str, access: str) -> None:
        if path.startswith("/dev/"):
            real = os.path.realpath(path)
            for node in dict.fromkeys((path, real)):
                if node.startswith("/dev/") and (node, access) not in found:
                    found.append((node, access))

    for table in NODE_TABLES:
        entry, opts = lookup(cfg, table)
        for path, access in entry.nodes(opts) if entry.nodes else ():
            add(path, access)
    return found


def drop_in(cfg: Config) -> str:
    lines = ["# posterm.service drop-in made by `posterm device-allow` from",
             f"# {cfg.path}: exactly the devices it names", "[Service]",
             "DevicePolicy=closed", "DeviceAllow="]
    lines += [f"DeviceAllow={node} {access}" for node, access in nodes(cfg)]
    return "\n".join(lines) + "\n"
