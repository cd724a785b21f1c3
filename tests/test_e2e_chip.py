"""Chip sales end to end: the firmware's PC/SC driver and EMV kernel against hwsim's chip
cards through a real pcscd and vpcd (tests/chiprig.py), hwsim's host checking the
cryptograms (host-interface 8.2). Each test inserts a card as a cardholder would, and
checks the display, the paper, the host's ledger and messages, and the money.

Without root, pcscd or vpcd these tests skip and say how to get them.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chiprig import Pcscd, pcsc  # noqa: F401  (the fixture)
from tests.invariants import wait_and_check
from tests.rig import Rig, wait_until
from tests.test_e2e_refund_void import PIN_HASH, function

ONLINE = "online-pin"  # 4761739001010218, DDA, online PIN then signature, online only
OFFLINE = "offline-pin"  # 5413330089010020, DDA, offline PIN then no CVM, Y1 / Y3
CDA = "cda-enciphered-pin"  # 4761739001010333


@pytest.fixture
def chip(tmp_path: pathlib.Path, pcsc: Pcscd) -> Iterator[Rig]:  # noqa: F811
    r = Rig(tmp_path, pcsc=pcsc, overrides={"operator": {"pin_hash": PIN_HASH}})
    try:
        yield r.start()
    finally:
        r.stop()


def _chip_sales(rig: Rig) -> list[dict[str, Any]]:
    return [m for m in rig.hw.messages() if m.get("mti") in ("0200", "0220")]


def _field(rig: Rig, mti: str, field: str) -> list[str]:
    out = []
    for m in rig.hw.messages():
        if m.get("mti") == mti:
            fields = m.get("fields", {})
            if field in fields:
                out.append(str(fields[field]))
    return out


def _done(rig: Rig, want: str) -> list[str]:
    rows = rig.hw.wait_display(want, timeout=30)
    return rows


def _asked_to_remove(rig: Rig, timeout: float = 30) -> list[str]:
    """The display says REMOVE CARD at the start of a row (not DO NOT REMOVE CARD), the
    battery level, if any, beside it."""
    return wait_until(lambda: (lambda rows: rows if any(
        r.startswith("REMOVE CARD") for r in rows) else None)(rig.hw.display()), timeout,
        lambda: f"never asked to remove the card: {rig.hw.display()}")


def _remove(rig: Rig) -> None:
    _asked_to_remove(rig)
    rig.hw.chip_remove()
    rig.wait_idle()


def test_online_chip_sale_is_approved_with_the_hosts_00_and_the_cards_tc(chip: Rig) -> None:
    """hardware.md's first card: DDA, the online PIN skipped (no PIN pad: Book 3 10.5),
    then signature; online only; the host checks the ARQC and answers tag 91, the card
    checks the ARPC (EXTERNAL AUTHENTICATE) and gives its TC."""
    chip.chip_sale("1250", ONLINE)
    _done(chip, "APPROVED")
    receipt = chip.wait_receipts(1)[-1]
    for word in ("CHIP", "F0000000011010", "TVR", "TSI", "TC", "SIGNATURE"):
        assert word in receipt, receipt
    assert "4761739001010218" not in receipt and "476173******0218" in receipt
    ledger = chip.hw.ledger()
    assert len(ledger) == 1 and ledger[0]["charged"] and ledger[0]["amount"] == 1250
    assert ledger[0].get("entry_mode", "").startswith("05")
    _remove(chip)
    wait_and_check(chip)
    log = chip.log()
    assert "4761739001010218" not in log


def test_a_chip_card_swiped_is_asked_for_its_chip(chip: Rig) -> None:
    chip.hw.wait_display("ENTER AMOUNT")
    chip.key_amount("1250")
    chip.hw.wait_display("SWIPE OR INSERT CARD")
    chip.hw.swipe("4111111111111111", service_code="201")
    chip.hw.wait_display("INSERT CARD")
    assert chip.hw.ledger() == []


def test_offline_approval_at_the_first_generate_ac_is_y1_and_goes_as_an_advice(
        chip: Rig) -> None:
    """hardware.md's second card under the floor limit: the card's TC at the first
    GENERATE AC; a 0220 with that TC, accepted by the host."""
    chip.chip_sale("1000", OFFLINE)
    rows = _done(chip, "APPROVED OFFLINE")
    assert any("Y1" in r for r in rows), rows
    _remove(chip)
    wait_until(lambda: any(e["charged"] for e in chip.hw.ledger()), 20,
               "the advice was not accepted")
    assert _field(chip, "0220", "38")[0].startswith("Y1")
    wait_and_check(chip)


def test_host_down_above_the_floor_limit_lets_the_card_approve_y3(chip: Rig) -> None:
    chip.hw.host_down()  # the sale finds the host gone: refused, retried, then offline
    chip.chip_sale("9000", OFFLINE)
    rows = _done(chip, "APPROVED OFFLINE")
    assert any("Y3" in r for r in rows), rows
    _remove(chip)
    chip.hw.host_up()
    wait_until(lambda: any(e["charged"] for e in chip.hw.ledger()), 30,
               "the advice was not accepted")
    wait_and_check(chip)


def test_an_online_only_card_refuses_y3_and_nothing_is_charged(chip: Rig) -> None:
    chip.hw.host_down()
    chip.chip_sale("1250", ONLINE)
    _done(chip, "NOT COMPLETED")
    _remove(chip)
    chip.hw.host_up()
    wait_and_check(chip)
    assert not any(e["charged"] for e in chip.hw.ledger())


def test_cda_card_is_approved_online(chip: Rig) -> None:
    chip.chip_sale("2000", CDA)
    _done(chip, "APPROVED")
    _remove(chip)
    wait_and_check(chip)


def test_the_cardholder_chooses_between_two_applications(chip: Rig) -> None:
    """hardware.md's fourth card: no PSE (6A82), the AID list finds credit and debit."""
    chip.chip_sale("1500", "no-pse")
    rows = chip.hw.wait_display("SELECT 1-2", timeout=20)
    assert any("1 " in r for r in rows[1:]) and any("2 " in r for r in rows[1:]), rows
    chip.hw.press("2")
    _done(chip, "APPROVED")
    receipt = chip.wait_receipts(1)[-1]
    assert "F0000000012010" in receipt, receipt
    _remove(chip)


def test_a_mute_chip_falls_back_to_the_stripe_as_entry_80(chip: Rig) -> None:
    """hardware.md's fifth card: the chip does not answer; its stripe (201) is taken
    after the chip failed, sent as 80x."""
    chip.chip_sale("1250", "mute")
    chip.hw.wait_display("CHIP FAILED: SWIPE", timeout=20)
    chip.hw.chip_remove()
    chip.hw.swipe("4761739001010457", service_code="201")
    _done(chip, "APPROVED")
    assert _field(chip, "0200", "22")[-1].startswith("80")
    wait_and_check(chip)


def test_a_wrong_arpc_makes_the_card_decline_and_the_sale_is_reversed(chip: Rig) -> None:
    """host-interface 8.1: host 00, the card's AAC -> DECLINED BY CARD and a 0400 with
    reason 06 whose field 55 is the AAC's 9F26, 9F27, 9F36."""
    chip.hw.chip_wrong_arpc()
    chip.chip_sale("1250", ONLINE)
    _done(chip, "DECLINED BY CARD")
    _remove(chip)
    wait_and_check(chip)
    assert _field(chip, "0400", "39") == ["06"]
    assert not any(e["charged"] for e in chip.hw.ledger())


def test_no_answer_reverses_and_never_approves(chip: Rig) -> None:
    chip.hw.host_fault("swallow")
    chip.chip_sale("1250", ONLINE)
    _done(chip, "NO RESPONSE")
    _remove(chip)
    wait_and_check(chip)
    assert _field(chip, "0400", "39") == ["68"]


def test_a_card_pulled_after_the_approval_is_declined_and_reversed(chip: Rig) -> None:
    chip.chip_sale("9000", "pulled-at-second-ac")  # above the floor limit: online
    _done(chip, "DECLINED BY CARD")
    chip.wait_idle()
    wait_and_check(chip)
    assert not any(e["charged"] for e in chip.hw.ledger())


def test_a_host_decline_is_shown_and_the_card_gives_its_aac(chip: Rig) -> None:
    chip.chip_sale("1205", ONLINE)
    _done(chip, "DECLINED")
    _remove(chip)
    assert not any(e["charged"] for e in chip.hw.ledger())


def test_a_chip_refund_goes_online_with_an_aac(chip: Rig) -> None:
    function(chip, "5")
    chip.hw.wait_display("REFUND")
    chip.key_amount("700")
    chip.hw.wait_display("INSERT CARD")
    chip.hw.chip_insert(ONLINE)
    _done(chip, "REFUND APPROVED")
    _remove(chip)
    assert any(e.get("credited") for e in chip.hw.ledger())


@pytest.mark.parametrize("profile", ["blocked-card", "blocked-app", "garbage-tlv",
                                     "length-past-end", "wrong-sw", "recursive-template",
                                     "gpo-no-afl", "huge-record"])
def test_a_card_that_cannot_be_used_ends_with_words_and_nothing_sent(
        chip: Rig, profile: str) -> None:
    chip.chip_sale("1250", profile)
    rows = _asked_to_remove(chip, timeout=40)
    assert rows[0].strip(), rows
    chip.hw.chip_remove()
    chip.wait_idle()
    assert _chip_sales(chip) == [] and chip.hw.ledger() == []
    assert "Traceback" not in chip.log()


def test_the_journal_keeps_no_card_data_of_a_chip_sale(chip: Rig) -> None:
    chip.chip_sale("1250", ONLINE)
    _done(chip, "APPROVED")
    _remove(chip)
    raw = chip.journal_path.read_bytes()
    assert b"4761739001010218" not in raw
    db = sqlite3.connect(f"file:{chip.journal_path}?mode=ro", uri=True)
    (fields, chip_json), = db.execute("SELECT fields, chip FROM sales").fetchall()
    assert '"55"' not in fields and '"35"' not in fields
    assert '"state": "settled"' in chip_json and '"upload"' in chip_json


def test_issuer_scripts_run_and_their_results_are_kept_for_the_upload(chip: Rig) -> None:
    """host-interface 8.1 and Book 3 10.10: scripts 71 (before) and 72 (after the second
    GENERATE AC) from the 0210; their results (9F5B) travel with the 0320 of the sale."""
    chip.hw.chip_scripts(templates="both")
    chip.chip_sale("1250", ONLINE)
    _done(chip, "APPROVED")
    _remove(chip)
    db = sqlite3.connect(f"file:{chip.journal_path}?mode=ro", uri=True)
    (chip_json,), = db.execute("SELECT chip FROM sales").fetchall()
    assert "9F5B" in chip_json, chip_json
    wait_and_check(chip)


def test_a_ca_key_the_terminal_lacks_fails_offline_authentication_and_goes_online(
        chip: Rig) -> None:
    """Book 3 10.3: no CA public key for the card's index -> offline data authentication
    failed (TVR byte 1); TAC-Online sends the sale to the host, which approves it."""
    chip.chip_sale("1250", "unknown-ca-index")
    _done(chip, "APPROVED")
    receipt = chip.wait_receipts(1)[-1]
    tvr = next(line.split()[-1] for line in receipt.splitlines() if line.startswith("TVR"))
    assert int(tvr[:2], 16) & 0x0C or int(tvr[:2], 16) & 0x80, tvr  # DDA/CDA failed or not done
    _remove(chip)
