"""The invariant checker learns chip sales (host-interface 8.1): a chip purchase shown
APPROVED has its card's decision journaled (chip state "settled", the upload's field 55);
none is left "awaiting" the card; one the card declined (or a crash left without the
card's word) is reversed with reason 06, acknowledged, and not charged. And card data:
no PAN in clear in the journal's bytes, no sealed field in a sale's fields, no tag 57
(nor 5A, 5F20) in a field 55 kept in clear. Each test builds a journal with the real
Journal, breaks one rule and sees it caught."""

from __future__ import annotations

import json
import pathlib
from datetime import datetime
from typing import Any

from firmware.core.card import CardData
from firmware.core.emv import tlv
from firmware.core.emv.steps import ChipData
from firmware.runtime.journal import Journal
from firmware.runtime.outbox import Answer, Kind
from firmware.runtime.vault import Vault
from tests.invariants import check

PAN = "4761739001010218"  # hwsim's online-pin card
CARD = CardData(pan=PAN, expiry="3012", service_code="201", track2=f"{PAN}=3012201")
F55 = tlv.encode_all([(0x9F26, bytes(8)), (0x9F27, b"\x80"), (0x9F36, b"\x00\x01")])
F7 = "0101000000"


def journal(tmp: pathlib.Path) -> Journal:
    return Journal(tmp / "j.sqlite3", Vault.open(tmp / "k", create=True))


def chip(cid: int, cryptogram: str = "1122334455667788") -> ChipData:
    return ChipData(card=CARD, psn="01", aid="F0000000011010", label="TEST CREDIT",
                    field55=F55, tvr="0000008000", tsi="E800", cvm="SIGNATURE",
                    cryptogram=cryptogram, cid=cid, atc="0001")


ARQC, TC, AAC = chip(0x80), chip(0x40, "A1A2A3A4A5A6A7A8"), chip(0x00, "B1B2B3B4B5B6B7B8")


def approved_by_host(j: Journal, f7: str = F7) -> tuple[int, str]:
    """A chip purchase the host approved: its card's decision not yet journaled."""
    fields = {"3": "000000", "4": "000000001000", "22": "051", "23": "001",
              "55": F55.hex().upper()}
    attempt, _ = j.start_attempt(None, fields=fields, card=CARD, kind="purchase",
                                 amount=1000, currency="978", local=datetime(2026, 1, 1),
                                 f7=f7, chip=ARQC)
    j.record_answer(attempt, code="00", approval="123456", rrn="000000000001")
    return attempt.sale_id, attempt.stan


def entry(stan: str, charged: bool, f7: str = F7) -> dict[str, Any]:
    return {"tid": "TERM0001", "stan": stan, "f7": f7, "charged": charged, "amount": 1000,
            "pan": "476173******0218"}


def acknowledge_reversals(j: Journal) -> None:
    for rev in j.pending(Kind.REVERSAL):
        j.identities([rev.key], "0101000100")
        j.record_answers([Answer(rev.key, "00", final=True)])


def set_chip(j: Journal, sale_id: int, **changes: Any) -> None:
    data = json.loads(j.db.execute("SELECT chip FROM sales WHERE id=?", (sale_id,))
                      .fetchone()[0])
    data.update(changes)  # None: the key taken out
    j.db.execute("UPDATE sales SET chip=? WHERE id=?",
                 (json.dumps({k: v for k, v in data.items() if v is not None}), sale_id))


def test_a_chip_sale_settled_with_the_cards_tc_passes(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = approved_by_host(j)
    j.settle_chip(sid, TC, approved=True)
    assert check(j.path, [entry(stan, True)], "TERM0001") == []


def test_a_chip_sale_still_awaiting_the_card_is_caught(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = approved_by_host(j)  # the card never gave its word, nobody reversed it
    problems = check(j.path, [entry(stan, True)], "TERM0001")
    assert any(f"chip sale {sid} still awaits the card's decision" in p for p in problems)
    assert any(f"chip sale {sid} shows APPROVED without the card's decision" in p
               for p in problems)


def test_approved_without_the_cards_decision_is_caught(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = approved_by_host(j)
    j.settle_chip(sid, TC, approved=True)
    set_chip(j, sid, upload=None)  # settled, but its final cryptogram is not kept
    problems = check(j.path, [entry(stan, True)], "TERM0001")
    assert any(f"chip sale {sid} shows APPROVED without the card's decision journaled" in p
               for p in problems), problems
    set_chip(j, sid, state=None, upload="9F2608A1A2A3A4A5A6A7A8")  # never settled at all
    problems = check(j.path, [entry(stan, True)], "TERM0001")
    assert any("chip state None" in p for p in problems), problems


def test_declined_by_card_must_be_reversed_with_06_and_not_charged(
        tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = approved_by_host(j)
    aac = tlv.encode_all([(0x9F26, bytes.fromhex(AAC.cryptogram)), (0x9F27, b"\x00"),
                          (0x9F36, b"\x00\x01")]).hex().upper()
    rec = j.settle_chip(sid, AAC, approved=False, aac=aac)
    assert rec.status == "DECLINED"
    waiting = check(j.path, [entry(stan, False)], "TERM0001")
    assert any(f"chip sale {sid} declined by the card: its reversal 06 was not "
               "acknowledged (pending)" in p for p in waiting), waiting
    acknowledge_reversals(j)
    assert check(j.path, [entry(stan, False)], "TERM0001") == []
    charged = check(j.path, [entry(stan, True)], "TERM0001")
    assert any(f"chip sale {sid} declined by the card is charged at the host" in p
               for p in charged), charged
    j.db.execute("DELETE FROM reversals WHERE sale_id=?", (sid,))
    lost = check(j.path, [entry(stan, False)], "TERM0001")
    assert any(f"chip sale {sid} declined by the card has no reversal 06" in p
               for p in lost), lost


def test_a_crash_before_the_cards_word_must_end_reversed(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = approved_by_host(j)
    j.recover()  # what the next start does: NOT COMPLETED, reversal 06
    problems = check(j.path, [entry(stan, False)], "TERM0001")
    assert any(f"chip sale {sid} NOT_COMPLETED after the host's approval: its reversal 06 "
               "was not acknowledged" in p for p in problems), problems
    acknowledge_reversals(j)
    assert check(j.path, [entry(stan, False)], "TERM0001") == []


def test_an_offline_chip_approval_needs_the_cards_tc(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    fields = {"3": "000000", "4": "000000001000", "22": "051", "55": F55.hex().upper()}
    rec = j.record_offline(None, approved=True, reason="Y1", fields=fields, card=CARD,
                           kind="purchase", amount=1000, currency="978",
                           local=datetime(2026, 1, 1), chip=TC, prefix="Y1")
    ok = check(j.path, [], "TERM0001")
    assert not any("without the card's TC" in p for p in ok), ok
    set_chip(j, rec.sale_id, ac="ARQC")
    problems = check(j.path, [], "TERM0001")
    assert any(f"chip sale {rec.sale_id} shows OFFLINE_APPROVED without the card's TC" in p
               for p in problems), problems


def settled(tmp: pathlib.Path) -> tuple[Journal, int, list[dict[str, Any]]]:
    """A fresh journal with one chip sale approved by the host and the card, its books
    in order. (A fresh one per case: bytes once written stay in the file's pages.)"""
    tmp.mkdir()
    j = journal(tmp)
    sid, stan = approved_by_host(j)
    j.settle_chip(sid, TC, approved=True)
    ledger = [entry(stan, True)]
    assert check(j.path, ledger, "TERM0001") == []
    return j, sid, ledger


def test_a_sealed_field_in_a_sales_fields_is_caught(tmp_path: pathlib.Path) -> None:
    j, sid, ledger = settled(tmp_path / "j")
    fields = json.loads(j.db.execute("SELECT fields FROM sales").fetchone()[0])
    j.db.execute("UPDATE sales SET fields=?", (json.dumps({**fields, "55": "9F2701"}),))
    problems = check(j.path, ledger, "TERM0001")
    assert any(f"sale {sid}: field 55 stored in clear" in p for p in problems), problems


def test_card_tags_in_a_field_55_kept_in_clear_are_caught(tmp_path: pathlib.Path) -> None:
    j, sid, ledger = settled(tmp_path / "upload")
    track2 = tlv.encode(0x57, bytes.fromhex("4761739001010218D30122010000000000000F"))
    upload = json.loads(j.db.execute("SELECT chip FROM sales").fetchone()[0])["upload"]
    set_chip(j, sid, upload=upload + track2.hex().upper())
    problems = check(j.path, ledger, "TERM0001")
    assert any(f"sale {sid}: its upload's field 55 holds tag 57" in p
               for p in problems), problems
    assert any("holds PAN 476173...0218 in clear" in p for p in problems), problems  # BCD

    j, sid, ledger = settled(tmp_path / "reversal")
    j.db.execute("INSERT INTO reversals (sale_id, reason, icc, state) VALUES (?, '06', ?, "
                 "'done')", (sid, tlv.encode(0x5A, bytes.fromhex("5413330089010020")).hex()))
    problems = check(j.path, ledger, "TERM0001")
    assert any("field 55 holds tag 5A (PAN)" in p for p in problems), problems
    assert any("holds PAN 541333...0020 in clear" in p for p in problems), problems

    j, sid, ledger = settled(tmp_path / "garbage")
    j.db.execute("INSERT INTO reversals (sale_id, reason, icc, state) VALUES (?, '06', "
                 "'9F2608AA', 'done')", (sid,))
    problems = check(j.path, ledger, "TERM0001")
    assert any("is not BER-TLV" in p for p in problems), problems


def test_a_pan_in_clear_anywhere_in_the_journal_is_caught(tmp_path: pathlib.Path) -> None:
    j, sid, ledger = settled(tmp_path / "text")
    j.db.execute("UPDATE sales SET reason=?", (f"card {PAN}",))
    problems = check(j.path, ledger, "TERM0001")
    assert any("holds PAN 476173...0218 in clear" in p for p in problems), problems

    # the ledger's own PANs, when it has them in clear, and the PANs a caller names
    j, sid, ledger = settled(tmp_path / "other")
    j.db.execute("UPDATE sales SET reason=?", ("card 4000123412341234",))
    assert check(j.path, ledger, "TERM0001") == []
    clear = [{**ledger[0], "pan": "4000123412341234"}]
    assert any("holds PAN 400012...1234" in p for p in check(j.path, clear, "TERM0001"))
    assert any("holds PAN 400012...1234" in p
               for p in check(j.path, ledger, "TERM0001", pans=["4000123412341234"]))


def test_a_chip_sale_through_the_journal_keeps_no_card_data(tmp_path: pathlib.Path) -> None:
    """The real journal's writes pass the card-data rules: the sealed field 55 (with the
    ARQC) and the PAN never reach the file in clear."""
    j = journal(tmp_path)
    sid, stan = approved_by_host(j)
    j.settle_chip(sid, TC, approved=True)
    sid2, stan2 = approved_by_host(j, "0102000000")
    j.settle_chip(sid2, AAC, approved=False, aac="9F2608B1B2B3B4B5B6B7B8")
    acknowledge_reversals(j)
    j.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert PAN.encode() not in j.path.read_bytes()
    assert check(j.path, [entry(stan, True), entry(stan2, False, "0102000000")],
                 "TERM0001") == []
