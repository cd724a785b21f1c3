"""A key left out of posterm.toml takes the same default wherever it is declared.

Today a default is written twice: on the configuration's dataclass and in the
call that reads the key. They had drifted once (`[host] tls`: False on the
dataclass, True when read). This test parses a file with only the required keys
and compares every settings table with its dataclass's own defaults, so that two
declarations cannot drift again (until each key is declared once: issue 18,
item 3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from firmware import config

MINIMAL: dict[str, Any] = {
    "terminal": {"id": "TERM0001", "merchant_id": "MERCHANT0000001", "merchant_name": "SHOP",
                 "currency": "978"},
    "host": {"host": "127.0.0.1", "port": 5000, "ca_file": "/etc/ssl/certs/ca-certificates.crt"},
    "card_reader": {"backend": "serial", "port": "/dev/ttyUSB0"},
    "keypad": {"backend": "evdev", "path": "/dev/input/event0"},
    "printer": {"backend": "network", "host": "127.0.0.1"},
    "display": {"backend": "smbus2"},
    "gpio": {"backend": "none"},
}
TABLES = ("host", "modem", "maintenance", "update", "battery", "power", "operator")


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@pytest.mark.parametrize("table", TABLES)
def test_a_key_left_out_takes_its_dataclass_default(table: str) -> None:
    cfg = config.parse(MINIMAL)
    values = getattr(cfg, table)
    drift = {}
    for field in dataclasses.fields(values):
        default = _default(field)
        if default is dataclasses.MISSING or field.name in MINIMAL.get(table, {}):
            continue
        if getattr(values, field.name) != default:
            drift[field.name] = (default, getattr(values, field.name))
    assert drift == {}, f"[{table}]: dataclass default vs what a missing key gives: {drift}"
