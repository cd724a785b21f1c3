"""Device backends: names and typed options declared by the configuration, one factory
per name registered by the runtime (firmware/runtime/wiring.py)."""

from __future__ import annotations

from typing import Any

import pytest

from firmware import config_devices, config_tables
from firmware.config import DEVICE_TABLES, parse
from firmware.errors import ConfigError
from firmware.runtime import wiring

GOOD: dict[str, dict[str, Any]] = {
    "terminal": {"id": "TERM0001", "merchant_id": "MERCHANT0000001", "merchant_name": "SHOP",
                 "currency": "978", "state_dir": "/tmp/x"},
    "host": {"host": "127.0.0.1", "port": 5000, "tls": False},
    "card_reader": {"backend": "serial", "port": "/dev/ttyUSB0"},
    "keypad": {"backend": "evdev", "path": "/dev/input/event0"},
    "printer": {"backend": "network", "host": "127.0.0.1"},
    "display": {"backend": "smbus2"},
}
# One valid table per backend, and the typed options its factory must be given.
SAMPLES: dict[tuple[str, str], tuple[dict[str, Any], type, dict[str, Any]]] = {
    ("card_reader", "serial"): ({"port": "socket://127.0.0.1:7", "baudrate": 19200},
                                config_devices.CardReaderOptions,
                                {"port": "socket://127.0.0.1:7", "baudrate": 19200}),
    ("keypad", "evdev"): ({"path": "/dev/input/event3"}, config_devices.KeypadOptions,
                          {"path": "/dev/input/event3"}),
    ("keypad", "hwsim"): ({"socket": "/run/h.sock"}, config_devices.KeypadOptions,
                          {"socket": "/run/h.sock"}),
    ("printer", "network"): ({"host": "10.0.0.9", "port": 9101}, config_devices.PrinterOptions,
                             {"host": "10.0.0.9", "port": 9101, "confirm_print": True}),
    ("printer", "serial"): ({"device": "/dev/ttyS1", "confirm_print": False},
                            config_devices.PrinterOptions,
                            {"device": "/dev/ttyS1", "baudrate": 19200,
                             "confirm_print": False}),
    ("display", "smbus2"): ({"bus": 3}, config_devices.DisplayOptions,
                            {"bus": 3, "address": 0x27}),
    ("display", "hwsim"): ({"socket": "/run/h.sock", "address": 0x3F},
                           config_devices.DisplayOptions,
                           {"socket": "/run/h.sock", "bus": 1, "address": 0x3F}),
    ("gpio", "rpi"): ({}, config_devices.GpioOptions, {}),
    ("gpio", "hwsim"): ({"socket": "/run/h.sock"}, config_devices.GpioOptions,
                        {"socket": "/run/h.sock"}),
    ("gpio", "none"): ({}, config_devices.GpioOptions, {}),
    ("battery", "none"): ({}, config_tables.BatteryConfig, {"interval": 60.0}),
    ("battery", "i2c"): ({"bus": 2}, config_tables.BatteryConfig, {"bus": 2, "address": 0x36}),
    ("battery", "hwsim"): ({"socket": "/run/h.sock"}, config_tables.BatteryConfig,
                           {"socket": "/run/h.sock", "bus": 1}),
    ("modem", "none"): ({}, config_tables.ModemConfig, {"enabled": False}),
    ("modem", "serial"): ({"port": "/dev/ttyUSB2", "apn": "web"}, config_tables.ModemConfig,
                          {"port": "/dev/ttyUSB2", "apn": "web", "baudrate": 115200}),
}


def _with(table: str, name: str, keys: dict[str, Any]) -> dict[str, Any]:
    data = {k: dict(v) for k, v in GOOD.items()}
    data[table] = {"backend": name, **keys}
    return data


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse(data)
    return str(err.value)


def test_every_declared_backend_has_a_factory_and_every_factory_a_declared_name() -> None:
    declared = {(table, name) for table, names in DEVICE_TABLES.items() for name in names}
    assert set(DEVICE_TABLES) == {"card_reader", "keypad", "printer", "display", "gpio",
                                  "battery", "modem"}
    assert set(wiring.BACKENDS) == declared
    assert set(SAMPLES) == declared  # a new backend gets its sample here


def test_a_factory_for_an_undeclared_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[printer\] declares no backend 'usb'"):
        wiring.backend("printer", "usb")
    with pytest.raises(ValueError, match=r"\[scanner\] declares no backend"):
        wiring.backend("scanner", "usb")


@pytest.mark.parametrize("table,name", sorted(SAMPLES))
def test_the_backend_named_picks_its_factory_with_typed_options(
        table: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys, schema, expected = SAMPLES[(table, name)]
    cfg = parse(_with(table, name, keys))
    calls: list[tuple[str, Any]] = []
    for (t, n), entry in list(wiring.BACKENDS.items()):
        if t == table:
            monkeypatch.setitem(wiring.BACKENDS, (t, n), wiring.Backend(
                lambda opts, _cfg, n=n: calls.append((n, opts)) or n, entry.nodes))
    assert wiring.build(cfg, table) == name
    [(called, opts)] = calls
    assert called == name and type(opts) is schema and opts.backend == name
    for key, value in expected.items():
        assert getattr(opts, key) == value, key


@pytest.mark.parametrize("table", sorted(DEVICE_TABLES))
def test_a_wrong_backend_name_names_the_table_and_key(table: str) -> None:
    text = _error(_with(table, "usb3", {}))
    assert text.startswith(f"posterm.toml: [{table}] backend: must be ")
    assert text.endswith(", got 'usb3'")
    for name in DEVICE_TABLES[table]:
        assert name in text


@pytest.mark.parametrize("table,keys,needle", [
    ("keypad", {"backend": "hwsim"}, "[keypad] socket: missing (required)"),
    ("keypad", {"backend": "evdev", "path": "/dev/input/event0", "socket": "/s"},
     "[keypad] socket: unknown key (known keys: backend, path)"),
    ("display", {"backend": "smbus2", "bus": 64}, "[display] bus: must be an integer from 0 to 63"),
    ("display", {"backend": "smbus2", "socket": "/s"}, "[display] socket: unknown key"),
    ("printer", {"backend": "serial"}, "[printer] device: missing (required)"),
    ("printer", {"backend": "serial", "device": "/dev/ttyS0", "port": "9100"},
     "[printer] port: must be an integer from 1 to 65535, got '9100'"),
    ("printer", {"backend": "network", "host": "p", "confirm_print": "yes"},
     "[printer] confirm_print: must be true or false"),
    ("gpio", {"backend": "hwsim"}, "[gpio] socket: missing (required)"),
    ("gpio", {"backend": "rpi", "socket": "/s"}, "[gpio] socket: unknown key (known keys: "
                                                 "backend)"),
    ("gpio", {}, "[gpio] backend: missing (required)"),
    ("card_reader", {"backend": "serial", "port": "/dev/ttyUSB0", "baudrate": 9601},
     "[card_reader] baudrate: must be a standard baud rate: 1200, 2400"),
    ("modem", {"backend": "serial", "port": ""}, '[modem] port: is needed with backend = '
                                                 '"serial" (e.g. "/dev/ttyUSB2"), got \'\''),
])
def test_a_wrong_option_names_the_table_and_key(table: str, keys: dict[str, Any],
                                                needle: str) -> None:
    data = {k: dict(v) for k, v in GOOD.items()}
    data[table] = keys
    assert needle in _error(data)


def test_device_options_hold_only_their_backends_keys() -> None:
    cfg = parse(_with("display", "hwsim", {"socket": "/run/h.sock"}))
    assert cfg.display.options == {"socket": "/run/h.sock", "bus": 1, "address": 0x27}
    assert cfg.display.settings == config_devices.DisplayOptions(backend="hwsim",
                                                                 socket="/run/h.sock")
    cfg = parse(_with("printer", "network", {"host": "p", "baudrate": 9600}))
    assert "baudrate" not in cfg.printer.options and cfg.printer.settings.baudrate == 9600
    assert parse(GOOD).gpio == config_devices.DeviceConfig("none", {})


def test_a_backend_without_its_factory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    cfg = parse(GOOD)
    monkeypatch.delitem(wiring.BACKENDS, ("printer", "network"))
    with pytest.raises(ConfigError, match=r"^posterm\.toml: \[printer\] backend: no driver for "
                                          r"'network' in this build$"):
        wiring.build(cfg, "printer")


def test_the_real_factories_build_their_parts_without_opening_them() -> None:
    from drivers.keypad import EvdevSource
    from drivers.magstripe import MagstripeReader
    from drivers.remote import RemoteGPIO, RemoteKeySource, RemoteSMBus

    sock = "/nonexistent/h.sock"
    cfg = parse({**GOOD, "keypad": {"backend": "hwsim", "socket": sock},
                 "display": {"backend": "hwsim", "socket": sock},
                 "gpio": {"backend": "hwsim", "socket": sock},
                 "battery": {"backend": "hwsim", "socket": sock}})
    assert isinstance(wiring.build(cfg, "card_reader"), MagstripeReader)
    assert isinstance(wiring.build(cfg, "keypad"), RemoteKeySource)
    assert isinstance(wiring.build(cfg, "display"), RemoteSMBus)
    assert isinstance(wiring.build(cfg, "gpio"), RemoteGPIO)
    assert isinstance(wiring.build(cfg, "battery"), RemoteSMBus)
    assert wiring.build(cfg, "modem") is None
    plain = parse(GOOD)
    assert isinstance(wiring.build(plain, "keypad"), EvdevSource)
    assert wiring.build(plain, "gpio") is None and wiring.build(plain, "battery") is None
