"""`posterm key-load`: key injection into [pin] key_file, and each of its refusals.

The command runs in-process (firmware.__main__.main) against a configuration hwsim
writes; the key is host-interface 9.2's test initial key (AES) or X9.24-1's IPEK
(TDES). A refusal is one line on stderr and exit code 1, and leaves the key file as it
was; no key is ever printed."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import pytest

from firmware import dukpt, pinkeyfile
from firmware.__main__ import main
from firmware.runtime import statedir
from firmware.runtime.journal import Journal
from firmware.runtime.vault import Vault
from hwsim import fwconfig

INFO = {"control_socket": "/tmp/hwsim.sock", "host_port": 1, "card_reader": "/dev/pts/9",
        "printer_port": 2}
IK = dukpt.aes_initial_key(fwconfig.TEST_AES_BDK, fwconfig.PIN_KEY_ID)
KCV = dukpt.aes_check_value(IK).hex().upper()
SOURCE = f"# from the key ceremony\ninitial_key = {IK.hex().upper()}\n" \
         f"initial_key_id = 1234567890123456\ncheck_value = {KCV}\n"


def _config(tmp: Path, method: str = "aes") -> Path:
    state = tmp / "state"
    state.mkdir(mode=0o700)
    path = tmp / "posterm.toml"
    path.write_text(fwconfig.render_config(INFO, state_dir=str(state), pin=True,
                                           overrides={"pin": {"method": method}}))
    return path


def _source(tmp: Path, text: str = SOURCE, mode: int = 0o600) -> Path:
    path = tmp / "key.txt"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _load(config: Path, *args: str) -> int:
    return main(["-c", str(config), "key-load", *args])


def test_a_key_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert _load(config, str(_source(tmp_path))) == 0
    out = capsys.readouterr().out
    key = tmp_path / "state" / "pin.key"
    assert f"key ID 1234567890123456, check value {KCV[:10]}" in out
    assert str(key) in out and IK.hex().upper() not in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pinkeyfile.parse_key_text(key.read_text(), "aes") == ("aes", bytearray(IK),
                                                            fwconfig.PIN_KEY_ID)


def test_a_key_from_standard_input_with_a_3_byte_check_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(SOURCE.replace(KCV, KCV[:6])))
    assert _load(config) == 0
    assert (tmp_path / "state" / "pin.key").exists()


def test_a_tdes_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, "tdes")
    ipek = dukpt.tdes_ipek(fwconfig.TEST_TDES_BDK, fwconfig.PIN_INITIAL_KSN)
    text = (f"initial_key = {ipek.hex()}\ninitial_ksn = FFFF9876543210E00000\n"
            f"check_value = {dukpt.tdes_check_value(ipek).hex()}\n")
    assert _load(config, str(_source(tmp_path, text))) == 0
    assert "TDES, key ID FFFF9876543210E00000" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "why"), [
    (SOURCE.replace(KCV, "0000000000"), "check_value does not match"),
    (SOURCE.replace("check_value", "# check_value"), "check_value is missing"),
    (SOURCE.replace("1234567890123456", "12345678901234"), "initial_key_id must be 8 bytes"),
    (SOURCE.replace("initial_key_id", "initial_ksn"), 'is for method "tdes"'),
    ("ZZZ", "name = value"),
])
def test_refused_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                      why: str) -> None:
    config = _config(tmp_path)
    assert _load(config, str(_source(tmp_path, text))) == 1
    err = capsys.readouterr().err
    assert err.startswith("posterm: key-load: ") and why in err and "nothing loaded" in err
    assert err.count("\n") == 1 and IK.hex().upper() not in err.upper()
    assert not (tmp_path / "state" / "pin.key").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_source_open_to_others_is_refused(tmp_path: Path, mode: int,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert _load(config, str(_source(tmp_path, mode=mode))) == 1
    assert "open to other users" in capsys.readouterr().err
    assert not (tmp_path / "state" / "pin.key").exists()


def test_refused_while_posterm_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    lock = statedir.prepare(tmp_path / "state")  # what a running firmware holds
    try:
        assert _load(config, str(_source(tmp_path))) == 1
        assert "posterm is running" in capsys.readouterr().err
    finally:
        lock.release()
    assert _load(config, str(_source(tmp_path))) == 0


def test_a_second_load_waits_for_unfinished_sales(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    state = tmp_path / "state"
    assert _load(config, str(_source(tmp_path))) == 0
    journal = Journal(state / "journal.sqlite3", Vault.open(state / "card.key", create=True))
    journal.advance_counter("dukpt:aes:1234567890123456", lambda last: last + 5)
    with journal.tx() as db:  # a sale sent, its answer not yet journaled
        db.execute("INSERT INTO sales (local, kind, amount, currency, pan_masked, status, "
                   "batch, invoice, fields) VALUES ('2025-01-01T10:00:00', 'purchase', 100, "
                   "'978', '411111******1111', 'AUTHORIZING', 1, 1, '{}')")
    before = (state / "pin.key").read_bytes()
    assert _load(config, str(_source(tmp_path))) == 1
    assert "1 sale(s) in the journal are not finished" in capsys.readouterr().err
    assert (state / "pin.key").read_bytes() == before
    with journal.tx() as db:
        db.execute("UPDATE sales SET status='APPROVED'")
    journal.close()
    assert _load(config, str(_source(tmp_path))) == 0
    assert "its transaction counter goes on from 5" in capsys.readouterr().out
