"""The supervisor PIN: stored as a slow salted hash, checked in a thread, locked after wrong
entries (the lockout survives a restart), configured in [operator], made by `posterm
pin-hash`, and never written to a log or the journal."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from firmware.config import parse
from firmware.core.effects import CheckPin
from firmware.errors import ConfigError
from firmware.runtime.journal import Journal
from firmware.runtime.operator import OperatorGuard, hash_pin, parse_pin_hash, verify_pin
from firmware.runtime.vault import Vault

from tests.test_config import GOOD, with_

ROOT = pathlib.Path(__file__).resolve().parent.parent
PIN = "86420135"  # a value that cannot turn up in the journal by chance
FAST = {"n": 2**10}  # the slowest part of these tests is scrypt: the smallest allowed N


def open_journal(tmp: pathlib.Path) -> Journal:
    return Journal(tmp / "journal.sqlite3", Vault.open(tmp / "card.key", create=True))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


# -- the stored form ------------------------------------------------------------------------
def test_hash_format_and_verification() -> None:
    line = hash_pin("4321")
    assert re.fullmatch(r"scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}", line)
    stored = parse_pin_hash(line)
    assert verify_pin("4321", stored)
    assert not verify_pin("4322", stored)
    assert not verify_pin("43210", stored)
    assert hash_pin("4321") != line  # a new salt every time


def test_default_parameters_are_slow_on_purpose() -> None:
    stored = parse_pin_hash(hash_pin("4321"))
    t = time.perf_counter()
    verify_pin("4321", stored)
    took = time.perf_counter() - t
    assert 0.02 < took < 2.0, f"one PIN check took {took:.3f} s"


@pytest.mark.parametrize("pin", ["123", "123456789", "12a4", "", " 1234", "١٢٣٤"])
def test_only_4_to_8_ascii_digits_are_pins(pin: str) -> None:
    with pytest.raises(ValueError, match="4 to 8 digits"):
        hash_pin(pin)
    assert not verify_pin(pin, parse_pin_hash(hash_pin("1234", **FAST)))


@pytest.mark.parametrize("text,why", [
    ("bcrypt$1$2$3$AAAA$BBBB", "scrypt"),
    ("scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "power of 2"),
    ("scrypt$2147483648$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "power of 2"),
    ("scrypt$16384$99$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "r must be"),
    ("scrypt$16384$8$1$not*base64$AAAAAAAAAAAAAAAAAAAAAA==", "base64"),
    ("scrypt$16384$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==", "too short"),
    ("scrypt$x$8$1$AAAA$AAAA", "whole numbers"),
])
def test_malformed_hashes_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_pin_hash(text)


# -- the lockout ----------------------------------------------------------------------------
def check(guard: OperatorGuard, pin: str, function: str = "void") -> tuple[bool, str]:
    answer = asyncio.run(guard.check(pin, function))
    assert answer.function == function
    return answer.ok, answer.message


def test_three_wrong_pins_lock_and_the_lock_survives_a_restart(tmp_path: pathlib.Path) -> None:
    line, clock = hash_pin(PIN, **FAST), Clock()
    journal = open_journal(tmp_path)
    guard = OperatorGuard(line, attempts=3, lockout_minutes=15, journal=journal, clock=clock)
    assert check(guard, PIN) == (True, "")
    assert check(guard, "1111") == (False, "WRONG PIN - 2 LEFT")
    assert check(guard, "2222", "refund") == (False, "WRONG PIN - 1 LEFT")
    assert check(guard, "3333") == (False, "LOCKED FOR 15 MIN")
    assert check(guard, PIN) == (False, "LOCKED FOR 15 MIN")  # even the right one
    clock.now += 5 * 60 + 1
    assert check(guard, PIN, "close") == (False, "LOCKED FOR 10 MIN")
    journal.close()

    journal = open_journal(tmp_path)  # a restart: the lock is in the journal
    guard = OperatorGuard(line, attempts=3, lockout_minutes=15, journal=journal, clock=clock)
    assert check(guard, PIN) == (False, "LOCKED FOR 10 MIN")
    clock.now += 10 * 60
    assert check(guard, "1111") == (False, "WRONG PIN - 2 LEFT")  # a fresh count after it
    assert check(guard, PIN) == (True, "")
    assert check(guard, "1111") == (False, "WRONG PIN - 2 LEFT")  # the right PIN reset it
    journal.close()


def test_wrong_count_survives_a_restart(tmp_path: pathlib.Path) -> None:
    line, clock = hash_pin(PIN, **FAST), Clock()
    journal = open_journal(tmp_path)
    guard = OperatorGuard(line, attempts=2, lockout_minutes=1, journal=journal, clock=clock)
    assert check(guard, "1111") == (False, "WRONG PIN - 1 LEFT")
    journal.close()
    journal = open_journal(tmp_path)
    guard = OperatorGuard(line, attempts=2, lockout_minutes=1, journal=journal, clock=clock)
    assert check(guard, "1111") == (False, "LOCKED FOR 1 MIN")
    journal.close()


def test_a_clock_set_back_never_makes_the_lock_longer(tmp_path: pathlib.Path) -> None:
    clock = Clock()
    journal = open_journal(tmp_path)
    guard = OperatorGuard(hash_pin(PIN, **FAST), attempts=1, lockout_minutes=15,
                          journal=journal, clock=clock)
    assert check(guard, "1111") == (False, "LOCKED FOR 15 MIN")
    clock.now -= 3 * 3600  # the clock went back three hours
    assert guard.locked_for() == 15 * 60
    journal.close()


def test_no_pin_configured_refuses(tmp_path: pathlib.Path) -> None:
    journal = open_journal(tmp_path)
    guard = OperatorGuard("", attempts=3, lockout_minutes=15, journal=journal)
    assert check(guard, "1234", "x_report") == (False, "NO PIN CONFIGURED")
    journal.close()


def test_the_pin_never_reaches_the_log_or_the_journal(tmp_path: pathlib.Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    journal = open_journal(tmp_path)
    guard = OperatorGuard(hash_pin(PIN, **FAST), attempts=3, lockout_minutes=15,
                          journal=journal)
    wrong = "97531864"
    check(guard, wrong)
    check(guard, PIN)
    assert "CheckPin(function='void')" == repr(CheckPin(PIN, "void"))
    journal.checkpoint()
    journal.close()
    text = caplog.text
    assert "supervisor PIN accepted for void" in text and "wrong supervisor PIN" in text
    for secret in (PIN, wrong):
        assert secret not in text
        for f in tmp_path.iterdir():
            assert secret.encode() not in f.read_bytes(), f"{secret} found in {f.name}"


# -- configuration ---------------------------------------------------------------------------
def test_operator_defaults_and_core_config() -> None:
    cfg = parse(GOOD)
    assert cfg.operator.pin_hash == "" and cfg.operator.close_time == ""
    assert cfg.operator.protect == {"refund", "void", "close", "x_report"}
    assert (cfg.operator.lockout_attempts, cfg.operator.lockout_minutes) == (3, 15.0)
    assert cfg.core.protect == cfg.operator.protect and not cfg.core.pin_set
    assert cfg.core.duplicate_minutes == 10.0


def test_operator_settings_fill_the_core_config() -> None:
    line = hash_pin("1234", **FAST)
    data = dict(GOOD, operator={"pin_hash": line, "protect": ["void", "close"],
                                "duplicate_minutes": 0, "close_time": "23:30",
                                "lockout_attempts": 5, "lockout_minutes": 2.5})
    cfg = parse(data)
    assert cfg.core.pin_set and cfg.core.protect == {"void", "close"}
    assert cfg.core.duplicate_minutes == 0.0
    assert cfg.operator.close_time == "23:30" and cfg.operator.lockout_attempts == 5
    assert parse(dict(GOOD, operator={"protect": []})).core.protect == frozenset()


@pytest.mark.parametrize("change,needle", [
    ({"protect": ["refund", "sale"]}, "[operator] protect: must be a list"),
    ({"protect": "void"}, "[operator] protect"),
    ({"lockout_attempts": 0}, "[operator] lockout_attempts: must be an integer from 1 to 10"),
    ({"lockout_minutes": 0}, "[operator] lockout_minutes: must be a number of minutes"),
    ({"duplicate_minutes": -1}, "[operator] duplicate_minutes"),
    ({"duplicate_minutes": float("nan")}, "[operator] duplicate_minutes"),
    ({"close_time": "24:00"}, '[operator] close_time: must be a local time "HH:MM"'),
    ({"close_time": "7:30"}, "[operator] close_time"),
    ({"pin_hash": 1234}, "[operator] pin_hash"),
    ({"pin": "1234"}, "[operator] pin: unknown key"),
])
def test_bad_operator_settings_name_the_key(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(with_("terminal") | {"operator": change})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_pin_hash_names_the_key_without_echoing_it() -> None:
    secret_ish = "scrypt$16384$8$1$c2VjcmV0c2FsdA==$bm90IGEgaGFzaA"
    with pytest.raises(ConfigError) as err:
        parse(dict(GOOD, operator={"pin_hash": secret_ish}))
    assert str(err.value).startswith("posterm.toml: [operator] pin_hash: ")
    assert secret_ish not in str(err.value)


# -- posterm pin-hash -------------------------------------------------------------------------
def pin_hash_cmd(stdin: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "firmware", "pin-hash"], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def test_pin_hash_command_prints_the_line_to_paste() -> None:
    out = pin_hash_cmd(PIN + "\n")
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(r'pin_hash = "(scrypt\$[^"]+)"\n', out.stdout)
    assert m, out.stdout
    assert PIN not in out.stdout + out.stderr
    assert verify_pin(PIN, parse_pin_hash(m[1]))
    cfg = parse(dict(GOOD, operator={"pin_hash": m[1]}))  # pastes as it is
    assert cfg.core.pin_set


@pytest.mark.parametrize("stdin", ["12\n", "12345678901\n", "abcd\n", ""])
def test_pin_hash_command_refuses_a_bad_pin(stdin: str) -> None:
    out = pin_hash_cmd(stdin)
    assert out.returncode == 1 and out.stdout == ""
    assert "posterm: pin-hash: a PIN is 4 to 8 digits" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_pin_hash_needs_no_configuration(tmp_path: pathlib.Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "firmware", "--config",
                          str(tmp_path / "missing.toml"), "pin-hash"], input="2468\n",
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert out.returncode == 0 and out.stdout.startswith('pin_hash = "scrypt$'), out.stderr


def test_operator_functions_list_matches_the_core() -> None:
    from firmware.core.model import CoreConfig

    from firmware import pinhash

    assert set(pinhash.FUNCTIONS) == set(CoreConfig.__dataclass_fields__["protect"].default)
