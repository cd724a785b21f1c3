"""firmware/runtime/pinkeys.py: the DUKPT key store on a real journal.

The blocks are host-interface 9.2's vectors (AES counters 1 and 2; TDES X9.24-1 A.4's
first two); the counter is on disk before a block is made and goes on across restarts
and crashes; exhaustion stops PINs; the key file must be private; the PIN buffer is
overwritten; no key in a repr, an error or the status facts."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from firmware import dukpt
from firmware.errors import PinKeyError
from firmware.runtime import pinkeys
from firmware.runtime.journal import Journal
from firmware.runtime.pinkeys import PinKeys
from firmware.runtime.vault import Vault
from hwsim import fwconfig

H = bytes.fromhex
FILL = H("2F69ADDE2E9E7ACE")
IK = H("1273671EA26AC29AFA4D1084127652A1")


def _journal(tmp: Path) -> Journal:
    return Journal(tmp / "journal.sqlite3", Vault.open(tmp / "card.key", create=True))


def _key(tmp: Path, method: str = dukpt.AES) -> Path:
    return fwconfig.write_pin_key(tmp, method)


def test_aes_blocks_are_the_vectors_and_the_counter_is_durable(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    keys = PinKeys.load(_key(tmp_path), journal, dukpt.AES)
    assert (keys.method, keys.key_id(), keys.counter()) == ("aes", "1234567890123456", 0)
    pin = bytearray(b"1234")
    block, ksn = keys.online_block(pin, "4111111111111111", FILL)
    assert block == H("A912150391AB65A67E52883D81CE2D15")
    assert ksn == H("123456789012345600000001")
    assert pin == bytearray(4)  # overwritten
    block, ksn = keys.online_block(bytearray(b"1234"), "4111111111111111", FILL)
    assert (block, ksn) == (H("52A00503BD34BA1383F6A7EE9FE2547F"),
                            H("123456789012345600000002"))
    journal.close()
    # the counter is in the journal file: a new process goes on from it
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    assert db.execute("SELECT value FROM meta WHERE key='dukpt:aes:1234567890123456'"
                      ).fetchone()[0] == "2"
    db.close()
    journal = _journal(tmp_path)
    keys = PinKeys.load(tmp_path / "pin.key", journal)
    assert keys.counter() == 2
    _, ksn = keys.online_block(bytearray(b"1234"), "4111111111111111")
    assert ksn[-4:] == H("00000003")
    # the host decodes it with the BDK
    journal.close()


def test_the_counter_is_written_before_the_block_and_never_reused(tmp_path: Path) -> None:
    """A block that fails after its counter was taken (here a PAN the block refuses; in
    life a crash) leaves the counter used: the next block has the next KSN."""
    journal = _journal(tmp_path)
    keys = PinKeys.load(_key(tmp_path), journal)
    written: list[int] = []
    real = journal.advance_counter

    def spy(key: str, advance):  # type: ignore[no-untyped-def]
        value = real(key, advance)
        written.append(journal.counter(key))  # committed before the block is made
        return value

    journal.advance_counter = spy  # type: ignore[method-assign]
    with pytest.raises(PinKeyError, match="PAN"):
        keys.online_block(bytearray(b"1234"), "41x1")
    assert written == [1] and keys.counter() == 1
    _, ksn = keys.online_block(bytearray(b"1234"), "4111111111111111")
    assert ksn[-4:] == H("00000002")
    journal.close()


def test_tdes_blocks(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    keys = PinKeys.load(_key(tmp_path, dukpt.TDES), journal, dukpt.TDES)
    assert keys.key_id() == "FFFF9876543210E00000"
    assert keys.online_block(bytearray(b"1234"), "4012345678909") == (
        H("1B9C1845EB993A7A"), H("FFFF9876543210E00001"))
    assert keys.online_block(bytearray(b"1234"), "4012345678909") == (
        H("10A01C8D02C69107"), H("FFFF9876543210E00002"))
    journal.close()


@pytest.mark.parametrize(("method", "last"), [("aes", 0xFFFE8000), ("tdes", 0x1FF400)])
def test_exhaustion_stops_pins(tmp_path: Path, method: str, last: int) -> None:
    journal = _journal(tmp_path)
    keys = PinKeys.load(_key(tmp_path, method), journal)
    journal.advance_counter(pinkeys.counter_name(method, keys.key_id()), lambda _: last)
    assert not keys.exhausted
    keys.online_block(bytearray(b"1234"), "4012345678909")  # the last counter
    assert keys.exhausted
    pin = bytearray(b"5055")
    with pytest.raises(PinKeyError, match="exhausted") as err:
        keys.online_block(pin, "4012345678909")
    assert pin == bytearray(4) and "5055" not in str(err.value)
    assert keys.counter() == (0xFFFF0000 if method == "aes" else 0x1FF800)
    journal.close()


def test_a_bad_pin_is_refused_without_its_digits_and_wiped(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    keys = PinKeys.load(_key(tmp_path), journal)
    pin = bytearray(b"12a45")
    with pytest.raises(PinKeyError) as err:
        keys.online_block(pin, "4111111111111111")
    assert "12a45" not in str(err.value) and pin == bytearray(5)
    journal.close()


def test_the_key_file_must_be_private_and_whole(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    with pytest.raises(PinKeyError, match="key-load"):
        PinKeys.load(tmp_path / "pin.key", journal)
    path = _key(tmp_path)
    os.chmod(path, 0o640)
    with pytest.raises(PinKeyError, match="open to other users"):
        PinKeys.load(path, journal)
    os.chmod(path, 0o600)
    text = path.read_text()
    path.write_text(text.replace("check_value = ", "check_value = 00"))
    with pytest.raises(PinKeyError, match="damaged") as err:
        PinKeys.load(path, journal)
    assert IK.hex() not in str(err.value).lower()
    path.write_text(text)
    with pytest.raises(PinKeyError, match="configuration"):
        PinKeys.load(path, journal, dukpt.TDES)
    journal.close()


def test_no_key_in_repr_or_status_facts(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    keys = PinKeys.load(_key(tmp_path), journal)
    keys.online_block(bytearray(b"1234"), "4111111111111111")
    assert IK.hex() not in repr(keys).lower() and "1234567890123456" in repr(keys)
    db = sqlite3.connect(f"file:{tmp_path / 'journal.sqlite3'}?mode=ro", uri=True)
    facts = pinkeys.facts(tmp_path / "pin.key", "aes", db)
    db.close()
    assert facts == pinkeys.PinKeyFacts("aes", True, "1234567890123456", 1, False)
    assert IK.hex() not in str(pinkeys.facts_doc(facts)).lower()
    missing = pinkeys.facts(tmp_path / "nope.key", "aes", None)
    assert not missing.loaded and "key-load" in missing.problem
    keys.close()
    with pytest.raises(PinKeyError, match="closed"):
        keys.online_block(bytearray(b"1234"), "4111111111111111")
    journal.close()


def test_status_shows_the_key_id_and_counter(tmp_path: Path) -> None:
    from firmware.runtime import status

    journal = _journal(tmp_path)
    keys = PinKeys.load(_key(tmp_path), journal)
    keys.online_block(bytearray(b"1234"), "4111111111111111")
    journal.close()
    facts = status.read_journal(tmp_path / "journal.sqlite3", tmp_path / "card.key",
                                (tmp_path / "pin.key", "aes"))
    text = status.render(facts)
    assert "PIN key:        AES DUKPT, key ID 1234567890123456, counter 1" in text
    assert IK.hex() not in text.lower()
    doc = facts.to_doc()
    assert doc["pin_key"]["counter"] == 1
    assert status.Facts.from_doc(doc).pin_key == facts.pin_key
    assert "pin_key" not in status.read_journal(tmp_path / "journal.sqlite3",
                                                tmp_path / "card.key").to_doc()
