"""Configuration: validated at start, every problem named by table and key."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from firmware.config import load, parse
from firmware.errors import ConfigError

GOOD = {
    "terminal": {"id": "TERM0001", "merchant_id": "MERCHANT0000001",
                 "merchant_name": "SHOP", "address": ["1 STREET"], "currency": "978",
                 "state_dir": "/tmp/x"},
    "host": {"host": "127.0.0.1", "port": 5000, "tls": False},
    "card_reader": {"backend": "serial", "port": "/dev/ttyUSB0"},
    "keypad": {"backend": "evdev", "path": "/dev/input/event0"},
    "printer": {"backend": "network", "host": "127.0.0.1", "port": 9100},
    "display": {"backend": "smbus2"},
}


def with_(table: str, **changes: object) -> dict[str, object]:
    data = {k: dict(v) for k, v in GOOD.items()}
    data[table].update(changes)
    return data  # type: ignore[return-value]


def test_good_config_parses_with_defaults() -> None:
    cfg = parse(GOOD)
    assert cfg.core.identity.f41 == "TERM0001"
    assert cfg.host.response_timeout == 30.0 and cfg.host.connect_timeout == 5.0
    assert cfg.display.options == {"bus": 1, "address": 0x27}
    assert cfg.gpio.backend == "none"


@pytest.mark.parametrize("table,change,needle", [
    ("host", {"port": "abc"}, "[host] port"),
    ("host", {"port": 70000}, "[host] port"),
    ("terminal", {"id": "TOO-LONG-ID"}, "[terminal] id"),
    ("terminal", {"currency": "EUR"}, "[terminal] currency"),
    ("card_reader", {"backend": "usb"}, "[card_reader] backend"),
    ("host", {"response_timeout": -1}, "[host] response_timeout"),
    ("host", {"tls": True}, "[host] ca_file"),
    ("printer", {"colour": "red"}, "[printer] colour: unknown key"),
])
def test_bad_values_name_the_key(table: str, change: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(with_(table, **change))
    assert needle in str(err.value)


def test_missing_key_and_table() -> None:
    data = with_("host")
    del data["host"]["port"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"\[host\] port: missing"):
        parse(data)
    data = with_("host")
    del data["keypad"]
    with pytest.raises(ConfigError, match=r"\[keypad\]: missing table"):
        parse(data)


def test_broken_toml_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "posterm.toml"
    path.write_text("[host\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")


def test_cli_reports_bad_config_in_one_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "posterm.toml"
    path.write_text('[terminal]\nid = "T1"\n')
    out = subprocess.run([sys.executable, "-m", "firmware", "--config", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert "[terminal] merchant_id: missing" in out.stderr
