"""Configuration: validated at start, every problem named by table and key."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from firmware.config import LIMITS, load, parse
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


# -- what the host messages, the display and the receipt carry -----------------------------
def _error(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as err:
        parse(data)
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def with_tables(**tables: dict[str, object]) -> dict[str, object]:
    data: dict[str, dict[str, object]] = {k: dict(v) for k, v in GOOD.items()}
    for table, keys in tables.items():
        data.setdefault(table, {}).update(keys)
    return data  # type: ignore[return-value]


@pytest.mark.parametrize("change,needle", [
    ({"id": "TÉRM01"}, "[terminal] id"),
    ({"id": "T\u00a0RM"}, "[terminal] id"),
    ({"id": "😀"}, "[terminal] id"),
    ({"id": "   "}, "[terminal] id"),
    ({"id": ""}, "[terminal] id"),
    ({"id": "T\x00"}, "[terminal] id"),
    ({"merchant_id": "MÉRCHANT"}, "[terminal] merchant_id"),
    ({"merchant_id": "M" * 16}, "[terminal] merchant_id"),
    ({"merchant_id": "M\tX"}, "[terminal] merchant_id"),
    ({"currency": "٩٧٨"}, "[terminal] currency"),  # Arabic-Indic digits: str.isdigit() is True
    ({"currency": "９７８"}, "[terminal] currency"),
    ({"currency": "000"}, "[terminal] currency"),
    ({"currency": 978}, "[terminal] currency"),
    ({"currency_code": "eur"}, "[terminal] currency_code"),
    ({"currency_code": "€UR"}, "[terminal] currency_code"),
    ({"currency_code": "EURO"}, "[terminal] currency_code"),
    ({"merchant_name": "SHOP\x1b[2J"}, "[terminal] merchant_name"),
    ({"merchant_name": "x" * 33}, "[terminal] merchant_name"),
    ({"merchant_name": "  "}, "[terminal] merchant_name"),
    ({"merchant_name": "CAFÉ 😀"}, "[terminal] merchant_name"),  # two columns wide
    ({"merchant_name": "SHOP\u202e"}, "[terminal] merchant_name"),  # bidi override
    ({"address": ["OK", "BAD\x00"]}, "[terminal] address: line 2"),
    ({"address": ["x" * 33]}, "[terminal] address: line 1"),
    ({"address": ["L"] * 7}, "[terminal] address"),
    ({"address": "1 STREET"}, "[terminal] address"),
    ({"address": [1]}, "[terminal] address"),
])
def test_message_display_and_receipt_fields(change: dict[str, object], needle: str) -> None:
    assert needle in _error(with_tables(terminal=change))


def test_receipt_texts_may_hold_non_ascii_letters() -> None:
    cfg = parse(with_tables(terminal={"merchant_name": "CAFÉ DU MARCHÉ €",
                                      "address": ["1 RUE DE L'ÉGLISE", ""]}))
    assert cfg.core.merchant_name == "CAFÉ DU MARCHÉ €"
    assert cfg.core.address == ("1 RUE DE L'ÉGLISE", "")


@pytest.mark.parametrize("tid,mid", [("T", "M"), ("TERM0001", "MERCHANT0000001"),
                                     (" ~!@#$%^", "a b{|}~`'\"\\/<>?"), ("12345678", "0")])
def test_accepted_ids_encode_in_fields_41_42_49(tid: str, mid: str) -> None:
    from datetime import datetime

    from firmware.core import iso
    from firmware.core.card import CardData

    cfg = parse(with_tables(terminal={"id": tid, "merchant_id": mid}))
    card = CardData("4761739001010010", "3012", "201", "4761739001010010=30122011000000000000")
    base = iso.sale_fields(cfg.core.identity, card=card, amount=100,
                           processing_code=iso.PURCHASE, local=datetime(2024, 1, 2, 3, 4, 5),
                           batch=1, invoice=1)
    doc = iso.financial_request(base, stan=1, utc=datetime(2024, 1, 2), track2=None)
    back = iso.decode(iso.encode(doc))
    assert back["41"] == tid.ljust(8) and back["42"] == mid.ljust(15)
    assert iso.decode(iso.encode(iso.network(cfg.core.identity, code="301", stan=2,
                                             utc=datetime(2024, 1, 2))))["41"] == tid.ljust(8)


# -- numbers: every one bounded, NaN and infinities refused ------------------------------
@pytest.mark.parametrize("table,key,value", [
    ("host", "echo_interval", 0.001),
    ("timeouts", "card", 1e-300),
    ("host", "response_timeout", float("inf")),
    ("host", "response_timeout", float("nan")),
    ("host", "connect_timeout", float("-inf")),
    ("timeouts", "amount_entry", -0.0),
    ("timeouts", "result", 0),
    ("timeouts", "sale_budget", 10**30),
    ("timeouts", "busy_backoff", True),
    ("timeouts", "busy_retries", 11),
    ("timeouts", "busy_retries", 2.0),
    ("host", "repeat_backoff_base", "5"),
    ("host", "port", 0),
    ("host", "port", 65536),
    ("offline", "max_age_hours", float("nan")),
    ("offline", "down_after", 0),
    ("offline", "down_after", 101),
    ("offline", "max_count", -1),
    ("offline", "probe_base", 0.0),
    ("printer", "port", 70000),
    ("printer", "port", 0),
    ("display", "address", 0x78),
    ("display", "address", 0x02),
    ("display", "bus", -1),
    ("display", "bus", 64),
    ("card_reader", "baudrate", 9601),
    ("card_reader", "baudrate", 0),
    ("printer", "baudrate", 10**30),
    ("terminal", "max_amount", 0),
    ("terminal", "max_amount", 10**12),
])
def test_out_of_range_numbers_name_the_key_and_the_range(table: str, key: str,
                                                         value: object) -> None:
    text = _error(with_tables(**{table: {key: value}}))
    assert f"[{table}] {key}: must be" in text and ", got " in text
    assert " from " in text or "baud rate: " in text  # the range is stated


# Values that must stay valid together with each key's lowest and highest value.
COMPANIONS: dict[tuple[str, str], dict[str, dict[str, object]]] = {
    ("offline", "floor_limit"): {"offline": {"total_limit": 999_999_999_999},
                                 "terminal": {"max_amount": 999_999_999_999}},
    ("offline", "total_limit"): {"offline": {"floor_limit": 0}},
    ("terminal", "max_amount"): {"offline": {"floor_limit": 0}},
    ("offline", "probe_cap"): {"offline": {"probe_base": 0.1}},
    ("offline", "probe_base"): {"offline": {"probe_cap": 3600.0}},
    ("host", "repeat_backoff_cap"): {"host": {"repeat_backoff_base": 0.1}},
    ("host", "repeat_backoff_base"): {"host": {"repeat_backoff_cap": 3600.0}},
    ("modem", "pwrkey_pin"): {"modem": {"status_pin": 5, "reset_pin": 6}},
    ("modem", "status_pin"): {"modem": {"pwrkey_pin": 5, "reset_pin": 6}},
    ("modem", "reset_pin"): {"modem": {"pwrkey_pin": 5, "status_pin": 6}},
}


@pytest.mark.parametrize("table,key", sorted(LIMITS))
def test_every_bound_is_inclusive_and_a_step_outside_is_refused(table: str, key: str) -> None:
    lo, hi = LIMITS[(table, key)]
    integer = isinstance(lo, int) and isinstance(hi, int)
    step = 1 if integer else min(0.01, lo / 2 or 0.01)
    def config(value: float) -> dict[str, object]:
        tables = {t: dict(keys) for t, keys in COMPANIONS.get((table, key), {}).items()}
        tables.setdefault(table, {})[key] = value
        return with_tables(**tables)

    for value in (lo, hi):
        parse(config(value))
    for value in (lo - step, hi + step):
        assert f"[{table}] {key}:" in _error(config(value))


def test_cross_field_checks_name_the_key() -> None:
    assert "[host] repeat_backoff_cap: must be at least repeat_backoff_base" in _error(
        with_tables(host={"repeat_backoff_base": 60, "repeat_backoff_cap": 30}))
    assert "[offline] probe_cap: must be at least probe_base" in _error(
        with_tables(offline={"probe_base": 10, "probe_cap": 5}))
    assert "[offline] floor_limit: must not exceed [terminal] max_amount" in _error(
        with_tables(terminal={"max_amount": 1000}, offline={"floor_limit": 2000}))
    assert "[offline] floor_limit: must not exceed total_limit" in _error(
        with_tables(offline={"floor_limit": 2000, "total_limit": 1000}))


def test_defaults_of_every_documented_key() -> None:
    cfg = parse(GOOD)
    core = cfg.core
    assert (core.amount_timeout, core.card_timeout, core.result_timeout) == (60, 30, 4)
    assert (core.busy_retries, core.busy_backoff, core.sale_budget) == (2, 0.5, 60)
    assert core.currency_code == "EUR" and core.max_amount == 500000
    assert (cfg.host.repeat_backoff_base, cfg.host.repeat_backoff_cap) == (5, 300)
    assert cfg.host.echo_interval == 60 and cfg.host.tls is False
    assert (cfg.link.down_after, cfg.link.probe_base, cfg.link.probe_cap) == (3, 5, 120)
    assert core.offline.floor_limit == 5000 and core.offline.max_age_hours == 24
    assert cfg.card_reader.options == {"port": "/dev/ttyUSB0", "baudrate": 9600}
    assert cfg.printer.options == {"host": "127.0.0.1", "port": 9100, "confirm_print": True,
                                   "status_interval": 30.0, "retry_max": 10.0, "job_timeout": 20.0}
    assert cfg.log_level == "INFO"
    data = with_tables(printer={"backend": "serial", "device": "/dev/ttyS0", "host": None})
    del data["printer"]["host"]  # type: ignore[attr-defined]
    assert parse(data).printer.options == {"device": "/dev/ttyS0", "baudrate": 19200,
                                           "confirm_print": True, "status_interval": 30.0,
                                           "retry_max": 10.0, "job_timeout": 20.0}
    default_dir = with_tables()
    del default_dir["terminal"]["state_dir"]  # type: ignore[attr-defined]
    assert parse(default_dir).state_dir == pathlib.Path("/var/lib/posterm")


# -- paths and names ---------------------------------------------------------------------
@pytest.mark.parametrize("table,key,value", [
    ("terminal", "state_dir", "/tmp/a\x00b"),
    ("terminal", "state_dir", ""),
    ("terminal", "state_dir", "/tmp/" + "d" * 2000),
    ("terminal", "state_dir", "/tmp/" + "d" * 300),  # one component over NAME_MAX
    ("terminal", "state_dir", "/tmp/a\nb"),
    ("card_reader", "port", "/dev/tty\x00USB0"),
    ("card_reader", "port", ""),
    ("keypad", "path", "/dev/input/\x7fevent0"),
    ("host", "ca_file", "/etc/ssl/\x00ca.pem"),
    ("host", "client_cert", "c\x00"),
    ("host", "host", ""),
    ("host", "host", "bad host"),
    ("host", "host", "hôte.example"),
    ("host", "host", "a\x00b"),
    ("host", "server_name", "bad name"),
    ("printer", "host", "printer\n"),
    ("log", "level", "VERBOSE"),
])
def test_bad_paths_and_names(table: str, key: str, value: str) -> None:
    assert f"[{table}] {key}:" in _error(with_tables(**{table: {key: value}}))


def test_unix_socket_paths_fit_sun_path() -> None:
    sock = "/tmp/" + "s" * 102  # 107 bytes: the limit
    parse({**GOOD, "keypad": {"backend": "hwsim", "socket": sock}})
    assert "[keypad] socket:" in _error({**GOOD, "keypad": {"backend": "hwsim",
                                                            "socket": sock + "s"}})
    assert "[gpio] socket:" in _error(with_tables(gpio={"backend": "hwsim", "socket": ""}))


def test_state_dir_that_cannot_be_a_directory(tmp_path: pathlib.Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    text = _error(with_tables(terminal={"state_dir": str(afile / "state")}))
    assert "[terminal] state_dir: cannot be created" in text and "afile" in text
    assert "[terminal] state_dir: exists and is not a directory" in _error(
        with_tables(terminal={"state_dir": str(afile)}))
    assert parse(with_tables(terminal={"state_dir": str(tmp_path / "new" / "state")}))


def test_keys_of_another_backend_are_still_checked() -> None:
    assert "[printer] baudrate:" in _error(with_tables(printer={"baudrate": "fast"}))
    assert parse(with_tables(printer={"baudrate": 9600})).printer.options == {
        "host": "127.0.0.1", "port": 9100, "confirm_print": True, "status_interval": 30.0,
        "retry_max": 10.0, "job_timeout": 20.0}


# -- TLS files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization

    from hwsim import testca

    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = testca.make_ca(d)
    cert, key = testca.make_server_cert(d, ca, ca_key, stem="client")
    _, other_key = testca.make_self_signed(d / "other")
    private = serialization.load_pem_private_key(pathlib.Path(key).read_bytes(), None)
    encrypted = d / "encrypted.key"
    encrypted.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    both = d / "both.pem"
    both.write_bytes(pathlib.Path(cert).read_bytes() + pathlib.Path(key).read_bytes())
    junk = d / "junk.pem"
    junk.write_text("not a certificate\n")
    return {"ca": ca, "cert": cert, "key": key, "other_key": other_key,
            "encrypted": str(encrypted), "both": str(both), "junk": str(junk),
            "missing": str(d / "missing.pem"), "dir": str(d)}


def _tls(pki: dict[str, str], **keys: str) -> dict[str, object]:
    return with_tables(host={"tls": True, "ca_file": pki["ca"], **keys})


def test_mutual_tls_files_are_loaded(pki: dict[str, str]) -> None:
    assert parse(_tls(pki)).host.ca_file == pki["ca"]
    assert parse(_tls(pki, client_cert=pki["cert"], client_key=pki["key"])).host.client_key
    assert parse(_tls(pki, client_cert=pki["both"])).host.client_cert == pki["both"]


@pytest.mark.parametrize("keys,needle", [
    ({"client_cert": "missing"}, "[host] client_cert: does not exist"),
    ({"client_cert": "missing", "client_key": "key"}, "[host] client_cert: does not exist"),
    ({"client_cert": "cert", "client_key": "missing"}, "[host] client_key: does not exist"),
    ({"client_key": "key"}, "[host] client_key: given without client_cert"),
    ({"client_cert": "dir"}, "[host] client_cert: is not a regular file"),
    ({"client_cert": "junk", "client_key": "key"}, "[host] client_cert: is not a certificate"),
    ({"client_cert": "cert", "client_key": "junk"}, "[host] client_key: is not a private key"),
    ({"client_cert": "cert", "client_key": "other_key"}, "[host] client_key: does not fit"),
    ({"client_cert": "cert"}, "[host] client_cert: must hold the private key"),
    ({"client_cert": "cert", "client_key": "encrypted"}, "[host] client_key: holds a private "
                                                         "key encrypted"),
    ({"ca_file": "junk"}, "[host] ca_file: is not a CA bundle"),
    ({"ca_file": "missing"}, "[host] ca_file: "),
    ({"ca_file": "dir"}, "[host] ca_file: is not a regular file"),
])
def test_tls_file_problems_name_their_key(pki: dict[str, str], keys: dict[str, str],
                                          needle: str) -> None:
    assert needle in _error(_tls(pki, **{k: pki[v] for k, v in keys.items()}))


def test_client_key_without_cert_is_refused_without_tls_too() -> None:
    assert "[host] client_key: given without client_cert" in _error(
        with_tables(host={"client_key": "/etc/posterm/client.key"}))


# -- structure ---------------------------------------------------------------------------
@pytest.mark.parametrize("data,needle", [
    (with_tables(terminal={"id": {"a": 1}}), "[terminal] id:"),
    (with_tables(terminal={"address": [["x"]]}), "[terminal] address:"),
    ({**GOOD, "host": "127.0.0.1"}, "[host]: must be a table"),
    ({**GOOD, "printer": [GOOD["printer"]]}, "[printer]: must be one table"),
    ({**GOOD, "timeouts": [1, 2]}, "[timeouts]: must be a table"),
    ({**GOOD, "gpio": 0}, "[gpio]: must be a table"),
    ({**GOOD, "modems": {"x": 1}}, "[modems]: unknown table"),
    ({**GOOD, "id": "TERM0001"}, "id: a setting outside any table"),
    ({**GOOD, "a\nb": 1}, "'a\\nb': a setting outside any table"),
    (with_tables(host={"tsl": True}), "[host] tsl: unknown key"),
    (with_tables(host={"x\ny": True}), "[host] 'x\\ny': unknown key"),
    ({}, "no settings"),
    ({k: v for k, v in GOOD.items() if k != "terminal"}, "[terminal]: missing table"),
])
def test_wrong_structure(data: dict[str, object], needle: str) -> None:
    assert needle in _error(data)


def test_values_in_messages_are_short() -> None:
    text = _error(with_tables(terminal={"id": "X" * 100_000}))
    assert text.startswith("posterm.toml: [terminal] id: ") and len(text) < 200
    text = _error(with_tables(terminal={"address": ["a"] * 10_000}))
    assert len(text) < 300


def _load_text(tmp_path: pathlib.Path, content: str | bytes) -> str:
    path = tmp_path / "posterm.toml"
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load(path)
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("content,needle", [
    ("", "posterm.toml: no settings"),
    ("# only a comment\n\n", "posterm.toml: no settings"),
    ("a = " + "[" * 5000 + "]" * 5000, "posterm.toml: not valid TOML: arrays or tables nested"),
    ("a = " + "{b=" * 5000 + "1" + "}" * 5000, "posterm.toml: not valid TOML"),
    ("[terminal]\nid = 'A'\nid = 'B'\n", "posterm.toml: not valid TOML"),
    (b"\xef\xbb\xbf[terminal]\n", "posterm.toml: starts with a UTF-8 byte order mark"),
    (b"[terminal]\nid = \"\xff\xfe\"\n", "posterm.toml: not valid UTF-8 (byte 0xff on line 2)"),
    (b"\x00\x01\x02binary\x89PNG", "posterm.toml: not valid"),
    ("[terminal]\nid = \"T\x00\"\n", "posterm.toml: not valid TOML"),
    ("[[printer]]\nbackend = 'network'\n", "[printer]: must be one table"),
    ("[terminal.id]\nx = 1\n", "[terminal] id:"),
    ("[host\nport = 1\n", "not valid TOML"),
])
def test_whole_file_problems(tmp_path: pathlib.Path, content: str | bytes, needle: str) -> None:
    assert needle in _load_text(tmp_path, content)


def test_file_that_is_not_a_readable_file(tmp_path: pathlib.Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from firmware import config as config_mod

    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load(fifo)  # would block for ever on open()
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (config_mod.MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="too large"):
        load(big)
    with pytest.raises(ConfigError, match="not a valid path"):
        load("posterm\x00.toml")
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError, match="does not exist"):
        load(afile / "posterm.toml")

    good = tmp_path / "posterm.toml"
    good.write_text("[terminal]\n")

    def denied(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config_mod, "open", denied, raising=False)  # root reads any file
    with pytest.raises(ConfigError, match="cannot read configuration file .*permission denied"):
        load(good)


def test_check_config_in_process_one_line(tmp_path: pathlib.Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from firmware.__main__ import main

    path = tmp_path / "posterm.toml"
    path.write_text("[terminal]\nid = \"TÉRM\"\n")
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posterm: configuration error: posterm.toml: [terminal] id: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("modem,needle", [
    ({"backend": "serial"}, "[modem] port: is needed with backend"),
    ({"backend": "usb", "port": "/dev/ttyUSB2"}, "[modem] backend: must be \"none\""),
    ({"backend": "serial", "port": "/dev/ttyUSB2", "baudrate": 1234}, "[modem] baudrate:"),
    ({"backend": "serial", "port": "/dev/ttyUSB2", "status_pin": 17}, "three different pins"),
    ({"backend": "serial", "port": "/dev/ttyUSB2", "apn": 'a"b'}, "[modem] apn:"),
    ({"backend": "serial", "port": "/dev/ttyUSB2", "apn": ""}, "[modem] apn:"),
    ({"backend": "serial", "port": "/dev/ttyUSB2", "failback": 3}, "[modem] failback"),
])
def test_modem_table_errors_name_the_key(modem: dict[str, object], needle: str) -> None:
    assert needle in _error(with_tables(modem=modem))


def test_modem_defaults() -> None:
    assert not parse(with_tables()).modem.enabled
    cfg = parse(with_tables(modem={"backend": "serial", "port": "/dev/ttyUSB2"})).modem
    assert cfg.enabled and (cfg.pwrkey_pin, cfg.status_pin, cfg.reset_pin) == (17, 27, 22)
    assert cfg.echo_interval > 60 and cfg.apn == "internet"


def test_battery_and_power_defaults() -> None:
    cfg = parse(GOOD)
    assert cfg.battery.backend == "none" and cfg.battery.interval == 60.0
    assert (cfg.battery.bus, cfg.battery.address, cfg.battery.low_percent) == (1, 0x36, 10)
    assert cfg.power.enabled and cfg.power.fail_pin == 25 and cfg.power.grace == 60.0
    assert cfg.power.shutdown_command == ("systemctl", "poweroff")
    cfg = parse(with_tables(battery={"backend": "hwsim", "socket": "/run/hwsim.sock",
                                     "interval": 0.5, "low_percent": 0},
                            power={"shutdown_command": "", "grace": 0}))
    assert cfg.battery.socket == "/run/hwsim.sock" and cfg.battery.low_percent == 0
    assert cfg.power.shutdown_command == () and cfg.power.grace == 0.0
    quoted = parse(with_tables(power={"shutdown_command": "/usr/bin/ups-off --delay '10 s'"}))
    assert quoted.power.shutdown_command == ("/usr/bin/ups-off", "--delay", "10 s")


@pytest.mark.parametrize("tables,needle", [
    ({"battery": {"backend": "smbus"}}, '[battery] backend: must be "none" (no gauge), "i2c"'),
    ({"battery": {"backend": "hwsim"}}, "[battery] socket: missing (required)"),
    ({"battery": {"backend": "i2c", "socket": "/x.sock"}}, "[battery] socket: unknown key"),
    ({"battery": {"backend": "i2c", "address": 0x80}}, "[battery] address: must be a 7-bit"),
    ({"battery": {"interval": 0}}, "[battery] interval: must be a number of seconds from 0.5"),
    ({"battery": {"low_percent": 12.5}}, "[battery] low_percent: must be a whole percent"),
    ({"battery": {"low_percent": 60}}, "[battery] low_percent: must be a whole percent"),
    ({"power": {"enabled": "yes"}}, "[power] enabled: must be true or false"),
    ({"power": {"fail_pin": 24}}, "[power] fail_pin: must not be the buzzer (23) or the online"),
    ({"power": {"fail_pin": 40}}, "[power] fail_pin: must be a BCM GPIO number from 0 to 27"),
    ({"power": {"grace": -1}}, "[power] grace: must be a number of seconds from 0 to 3600"),
    ({"power": {"shutdown_command": ["systemctl", "poweroff"]}},
     "[power] shutdown_command: must be a command line"),
    ({"power": {"shutdown_command": "halt\n-p"}}, "[power] shutdown_command: must be a command"),
    ({"power": {"shutdown_command": "sh -c 'poweroff"}},
     "[power] shutdown_command: is not a valid command line (No closing quotation)"),
    ({"power": {"delay": 5}}, "[power] delay: unknown key (known keys: enabled, fail_pin, "
                              "grace, shutdown_command)"),
])
def test_battery_and_power_errors_name_the_key(tables: dict[str, dict[str, object]],
                                               needle: str) -> None:
    assert needle in _error(with_tables(**tables))
