"""The cardholder's PIN end to end: the keypad as the PIN pad, DUKPT online PINs checked
by hwsim's host (host-interface 9.2: PIN 1234, 55 then 75 after three wrong), offline
PINs checked by hwsim's chip cards through pcscd and vpcd. No digit may appear in the
firmware's log, its journal (and WAL) or hwsim's log."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.chiprig import Pcscd, pcsc  # noqa: F401  (the fixture)
from tests.invariants import wait_and_check
from tests.rig import Rig, wait_until

PIN = "1234"
WRONG = "9876"
KEY_ID = "1234567890123456"  # hwsim's test DUKPT initial key ID
STRIPE_PIN_CARD = "6011000990139424"  # service code 120: PIN required (hardware.md)


@pytest.fixture
def pinrig(tmp_path: pathlib.Path) -> Iterator[Rig]:
    r = Rig(tmp_path, pin=True)
    try:
        yield r.start()
    finally:
        r.stop()


@pytest.fixture
def chippin(tmp_path: pathlib.Path, pcsc: Pcscd) -> Iterator[Rig]:  # noqa: F811
    r = Rig(tmp_path, pcsc=pcsc, pin=True)
    try:
        yield r.start()
    finally:
        r.stop()


def _key_pin(rig: Rig, pin: str) -> None:
    rig.hw.wait_display("PIN", timeout=20)
    rig.hw.press(pin)
    rig.hw.wait_display("*" * len(pin))
    rig.hw.press("OK")


def _no_digits_anywhere(rig: Rig, *pins: str) -> None:
    """The PIN in clear (ASCII) or as an offline PIN block (EMV format 2), nowhere: the
    firmware's log, its journal and WAL, hwsim's log. The test key's ID (1234567890123456,
    host-interface 9) is the one place those digits may stand."""
    for pin in pins:
        block = bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))
        assert pin not in rig.log().replace(KEY_ID, "")
        for path in rig.state_dir.glob("journal*"):
            data = path.read_bytes().replace(KEY_ID.encode(), b"")
            assert pin.encode() not in data and block not in data, path
        assert pin not in (rig.tmp / "hwsim.log").read_text(errors="replace").replace(
            KEY_ID, "")


def test_a_stripe_that_requires_a_pin_is_approved_with_the_right_pin(pinrig: Rig) -> None:
    pinrig.sale("1250", STRIPE_PIN_CARD, service_code="120")
    _key_pin(pinrig, PIN)
    pinrig.hw.wait_display("APPROVED", timeout=20)
    entry = pinrig.hw.ledger()[-1]
    assert entry["charged"] and entry.get("pin"), entry
    wait_and_check(pinrig)
    _no_digits_anywhere(pinrig, PIN)


def test_wrong_pins_are_incorrect_then_tries_exceeded(pinrig: Rig) -> None:
    for shown in ("INCORRECT PIN", "INCORRECT PIN", "PIN TRIES EXCEEDED"):
        pinrig.sale("1250", STRIPE_PIN_CARD, service_code="120")
        _key_pin(pinrig, WRONG)
        pinrig.hw.wait_display(shown, timeout=20)
        pinrig.wait_idle(timeout=30)
    assert not any(e["charged"] for e in pinrig.hw.ledger())
    _no_digits_anywhere(pinrig, WRONG)


def test_cancel_at_the_pin_sends_nothing(pinrig: Rig) -> None:
    pinrig.sale("1250", STRIPE_PIN_CARD, service_code="120")
    pinrig.hw.wait_display("ENTER PIN", timeout=20)
    pinrig.hw.press("1", "2", "CANCEL")
    pinrig.hw.wait_display("PIN CANCELLED", timeout=20)
    assert pinrig.hw.ledger() == []


def test_a_chip_online_pin_goes_in_fields_52_and_53(chippin: Rig) -> None:
    """hardware.md's first card: CVM online PIN first (Book 3 10.5)."""
    chippin.chip_sale("1250", "online-pin")
    _key_pin(chippin, PIN)
    chippin.hw.wait_display("APPROVED", timeout=30)
    assert chippin.hw.ledger()[-1].get("pin")
    receipt = chippin.wait_receipts(1)[-1]
    assert "PIN" in receipt and "SIGNATURE:" not in receipt, receipt
    _no_digits_anywhere(chippin, PIN)


def test_an_offline_plaintext_pin_is_verified_by_the_card(chippin: Rig) -> None:
    """hardware.md's second card: offline plaintext PIN, Y1 under the floor limit."""
    chippin.chip_sale("1000", "offline-pin")
    _key_pin(chippin, WRONG)
    chippin.hw.wait_display("INCORRECT PIN", timeout=30)
    _key_pin(chippin, PIN)
    rows = chippin.hw.wait_display("APPROVED OFFLINE", timeout=30)
    assert any("Y1" in r for r in rows), rows
    receipt = chippin.wait_receipts(1)[-1]
    assert "PIN VERIFIED" in receipt, receipt
    _no_digits_anywhere(chippin, PIN, WRONG)


def test_an_offline_enciphered_pin_is_verified_by_the_card(chippin: Rig) -> None:
    chippin.chip_sale("1000", "cda-enciphered-pin")
    _key_pin(chippin, PIN)
    chippin.hw.wait_display("APPROVED", timeout=30)
    receipt = chippin.wait_receipts(1)[-1]
    assert "PIN VERIFIED" in receipt, receipt


def test_a_blocked_pin_is_said_and_the_next_cvm_applies(chippin: Rig) -> None:
    chippin.chip_sale("1000", "pin-blocked")
    rows = wait_until(lambda: (lambda r: r if any(
        w in " ".join(r) for w in ("PIN BLOCKED", "APPROVED", "DECLINED", "NOT")) else None)(
        chippin.hw.display()), 30, "no outcome")
    assert rows


def test_three_wrong_offline_pins_block_it_with_a_last_try_warning(chippin: Rig) -> None:
    """Book 3 6.5.12 and 10.5: 63C2, 63C1 (LAST PIN TRY), 63C0: PIN BLOCKED; the card's
    next CVM (no CVM) lets the sale go on, with the TVR saying the try limit was hit."""
    chippin.chip_sale("1000", "offline-pin")
    _key_pin(chippin, WRONG)
    chippin.hw.wait_display("INCORRECT PIN", timeout=30)
    _key_pin(chippin, WRONG)
    chippin.hw.wait_display("LAST PIN TRY", timeout=30)
    chippin.hw.press(WRONG)
    chippin.hw.press("OK")
    # PIN BLOCKED stays only until the kernel goes on (tens of ms): the log and the
    # receipt's TVR (byte 3: PIN try limit exceeded, Book 3 Annex C5) tell it
    wait_until(lambda: "PIN entry: blocked" in chippin.log(), 30, "never blocked")
    chippin.hw.wait_display("APPROVED", timeout=30)
    receipt = chippin.wait_receipts(1)[-1]
    tvr = next(line.split()[-1] for line in receipt.splitlines() if line.startswith("TVR"))
    assert int(tvr[4:6], 16) & 0x20, tvr
    _no_digits_anywhere(chippin, WRONG)


def test_pin_bypass_where_the_card_and_the_configuration_allow_it(
        tmp_path: pathlib.Path, pcsc: Pcscd) -> None:  # noqa: F811
    """Book 4 6.3.4.3: with [pin] bypass, OK with no digits bypasses the PIN; the card's
    next CVM applies (offline-pin: no CVM)."""
    with Rig(tmp_path, pcsc=pcsc, pin=True, overrides={"pin": {"bypass": True}}) as rig:
        rig.start()
        rig.chip_sale("1000", "offline-pin")
        rig.hw.wait_display("ENTER PIN", timeout=30)
        rig.hw.press("OK")
        rows = rig.hw.wait_display("APPROVED", timeout=30)
        assert rows
        receipt = rig.wait_receipts(1)[-1]
        assert "PIN VERIFIED" not in receipt, receipt


def test_a_pin_entry_left_alone_times_out_and_sends_nothing(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, pin=True, overrides={"pin": {"entry_timeout": 5}}) as rig:
        rig.start()
        rig.sale("1250", STRIPE_PIN_CARD, service_code="120")
        rig.hw.wait_display("ENTER PIN", timeout=20)
        rig.hw.press("1")
        rig.hw.wait_display("PIN TIMED OUT", timeout=20)
        assert rig.hw.ledger() == []


def test_a_pin_block_that_cannot_be_made_ends_the_sale_not_the_terminal(
        tmp_path: pathlib.Path) -> None:
    """Whatever fails while the block is made (here an unexpected fault right after the
    KSN counter is journaled), the sale ends on the screen with nothing sent, and the
    next sale goes through."""
    with Rig(tmp_path, pin=True) as rig:
        rig.start_sim()
        rig.start_fw(raise_at="after_pin_counter")
        rig.sale("1250", STRIPE_PIN_CARD, service_code="120")
        _key_pin(rig, PIN)
        rig.hw.wait_display("PIN PAD FAULT", timeout=20)
        assert rig.hw.ledger() == []
        rig.sale("1250", STRIPE_PIN_CARD, service_code="120")
        _key_pin(rig, PIN)
        rig.hw.wait_display("APPROVED", timeout=20)


def test_tdes_dukpt_by_configuration(tmp_path: pathlib.Path) -> None:
    """host-interface 9.1: TDES DUKPT (X9.24-1) with an ISO 9564-1 format 0 block and a
    10-byte KSN where [pin] method says so; the host tells the method by 53's length."""
    with Rig(tmp_path, pin="tdes") as rig:
        rig.start()
        rig.sale("1250", STRIPE_PIN_CARD, service_code="120")
        _key_pin(rig, PIN)
        rig.hw.wait_display("APPROVED", timeout=20)
        assert rig.hw.ledger()[-1].get("pin")
        _no_digits_anywhere(rig, PIN)
