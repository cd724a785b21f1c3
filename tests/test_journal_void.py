"""The journal's part of the merchant's day: batch and invoice numbers, void eligibility,
the void record (a reason-17 reversal, or an unsent advice taken off the queue in one
transaction), the duplicate guard's memory, and what never lands in the file."""

from __future__ import annotations

import hashlib
import pathlib
import sqlite3
from datetime import datetime, timedelta

import pytest

from firmware.core import iso
from firmware.core.card import CardData
from firmware.core.model import SaleRecord, SaleStatus
from firmware.runtime.journal import Attempt, Journal
from firmware.runtime.outbox import URGENT, Answer, Kind
from firmware.runtime.vault import Vault

PAN = "4761739001010010"
CARD = CardData(pan=PAN, expiry="3012", service_code="101", track2=f"{PAN}=30121011000000000000")
IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")
LOCAL = datetime(2026, 3, 4, 10, 20, 30)


def open_journal(tmp: pathlib.Path) -> Journal:
    return Journal(tmp / "journal.sqlite3", Vault.open(tmp / "card.key", create=True))


@pytest.fixture()
def j(tmp_path: pathlib.Path) -> Journal:
    journal = open_journal(tmp_path)
    yield journal  # type: ignore[misc]
    journal.close()


def base(amount: int, kind: str = "purchase") -> dict[str, str]:
    code = iso.REFUND if kind == "refund" else iso.PURCHASE
    return iso.sale_fields(IDENT, card=CARD, amount=amount, processing_code=code, local=LOCAL,
                           batch=0, invoice=0)


def online(j: Journal, amount: int = 1250, code: str = "00", kind: str = "purchase",
           f7: str = "0304092030", local: datetime = LOCAL) -> tuple[SaleRecord, dict[str, str]]:
    attempt, fixed = j.start_attempt(None, fields=base(amount, kind), card=CARD, kind=kind,
                                     amount=amount, currency="978", local=local, f7=f7)
    rec = j.record_answer(attempt, code=code, approval="123456" if code == "00" else "",
                          rrn="000000000042")
    return rec, fixed


def offline(j: Journal, amount: int = 1000, local: datetime = LOCAL) -> SaleRecord:
    return j.record_offline(None, approved=True, reason="HOST DOWN", fields=base(amount),
                            card=CARD, kind="purchase", amount=amount, currency="978",
                            local=local)


def close_batch(j: Journal) -> None:
    """What the batch close does at its end: the next batch opens."""
    with j.tx():
        j._set_meta("batch", j.current_batch() + 1)


def advice_row(j: Journal, sale_id: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = j.db.execute("SELECT * FROM advices WHERE sale_id=?",
                                           (sale_id,)).fetchone()
    return row


def card_data(j: Journal, sale_id: int) -> int:
    return int(j.db.execute("SELECT count(*) FROM card_data WHERE sale_id=?",
                            (sale_id,)).fetchone()[0])


# -- numbering ----------------------------------------------------------------------------------
def test_batch_and_invoice_numbers_reach_fields_60_and_62(j: Journal) -> None:
    assert j.current_batch() == 1
    first, fixed = online(j)
    assert (first.batch, first.invoice) == (1, 1)
    assert (fixed["60"], fixed["62"]) == ("000001", "000001")
    doc = iso.financial_request(fixed, stan=int(first.stan), utc=datetime(2026, 3, 4),
                                track2=CARD.track2)
    assert iso.decode(iso.encode(doc))["62"] == "000001"
    second = offline(j)
    assert (second.batch, second.invoice) == (1, 2)
    assert j.sale_fields(second.sale_id)["62"] == "000002"  # the advice's 0220 carries it
    close_batch(j)
    third, fixed = online(j, f7="0304102031")
    assert (third.batch, third.invoice) == (2, 1)  # invoices start again in each batch
    assert (fixed["60"], fixed["62"]) == ("000002", "000001")
    assert j.sale_by_invoice(1, 2) == j.sale(second.sale_id)
    assert j.sale_by_invoice(2, 2) is None
    assert j.last_transaction(1) == j.sale(second.sale_id)
    assert j.last_transaction(2) == j.sale(third.sale_id)
    assert j.last_transaction(3) is None


def test_busy_retries_keep_the_invoice(j: Journal) -> None:
    attempt, fixed = j.start_attempt(None, fields=base(500), card=CARD, kind="purchase",
                                     amount=500, currency="978", local=LOCAL, f7="0304092030")
    j.attempt_busy(attempt, "91")
    again, fixed2 = j.start_attempt(attempt.sale_id, fields=base(500), card=CARD,
                                    kind="purchase", amount=500, currency="978", local=LOCAL,
                                    f7="0304092031")
    assert fixed2["62"] == fixed["62"] == "000001" and again.stan != attempt.stan


# -- eligibility --------------------------------------------------------------------------------
def test_void_candidates_and_their_problems(j: Journal) -> None:
    assert j.void_candidate(None) == (None, "NOT FOUND")
    approved, _ = online(j)
    declined, _ = online(j, amount=1205, code="05", f7="0304092031")
    assert j.void_candidate(None) == (declined, "CANNOT BE VOIDED")  # the last one
    assert j.void_candidate(1) == (approved, "")
    assert j.void_candidate(2) == (declined, "CANNOT BE VOIDED")
    assert j.void_candidate(7) == (None, "NOT FOUND")
    attempt, _ = j.start_attempt(None, fields=base(300), card=CARD, kind="purchase",
                                 amount=300, currency="978", local=LOCAL, f7="0304092032")
    unknown = j.attempt_unknown(attempt, "68")
    assert unknown.status == SaleStatus.NOT_COMPLETED
    assert j.void_candidate(3)[1] == "CANNOT BE VOIDED"
    assert j.record_void(unknown.sale_id).problem == "CANNOT BE VOIDED"
    assert j.record_void(declined.sale_id).problem == "CANNOT BE VOIDED"
    assert j.record_void(999).problem == "NOT FOUND"
    assert j.record_void(approved.sale_id).record is not None
    assert j.void_candidate(1)[1] == "ALREADY VOIDED"
    again = j.record_void(approved.sale_id)
    assert (again.record, again.problem) == (None, "ALREADY VOIDED")
    assert [r.reason for r in j.pending(*URGENT)] == ["68", "17"]  # one void, not two


def test_a_closed_batch_says_use_refund(j: Journal) -> None:
    sale, _ = online(j)
    refund, _ = online(j, kind="refund", f7="0304092031")
    close_batch(j)
    later, _ = online(j, f7="0304092032")  # invoice 1 of batch 2
    assert j.void_candidate(1) == (later, "")
    assert j.void_candidate(2) == (j.sale(refund.sale_id), "CANNOT BE VOIDED")
    assert j.record_void(sale.sale_id).problem == "USE REFUND"
    close_batch(j)
    assert j.void_candidate(1) == (later, "USE REFUND")  # the newest closed batch with it
    assert j.void_candidate(None) == (None, "NOT FOUND")  # batch 3 is empty
    assert j.queue_stats().reversals == 0


# -- the void record ----------------------------------------------------------------------------
def test_void_of_an_online_approval_queues_a_reason_17_reversal(j: Journal) -> None:
    sale, _ = online(j, f7="0304092030")
    result = j.record_void(sale.sale_id)
    assert result.sent_to_host and result.record is not None and result.record.voided
    assert j.sale(sale.sale_id).voided
    (rev,) = j.pending(*URGENT)
    assert rev.is_void and rev.reason == "17" and rev.orig_mti == "0200"
    assert (rev.orig_stan, rev.orig_f7, rev.orig_rrn) == (sale.stan, "0304092030",
                                                         "000000000042")
    assert "2" not in rev.fields and "14" not in rev.fields  # the card data is long gone
    stan, f7, written = j.identities([rev.key], "0304103000")[rev.key]
    doc = iso.void(rev.fields, orig_mti=rev.orig_mti, orig_stan=rev.orig_stan,
                   orig_f7=rev.orig_f7, rrn=rev.orig_rrn, stan=int(stan), f7=f7)
    back = iso.decode(iso.encode(doc))
    assert back["t"] == "0400" and back["39"] == "17" and back["37"] == "000000000042"
    assert back["90"] == f"0200{sale.stan}0304092030" + "0" * 22
    assert not {"2", "14", "35"} & set(back)
    assert (back["4"], back["60"], back["62"], back["11"]) == ("000000001250", "000001",
                                                               "000001", stan)
    j.record_answers([Answer(rev.key, "00", final=True)])
    assert j.pending(*URGENT) == [] and j.sale(sale.sale_id).voided


def test_void_of_a_refund(j: Journal) -> None:
    refund, _ = online(j, amount=800, kind="refund")
    result = j.record_void(refund.sale_id)
    assert result.sent_to_host and result.record is not None
    assert result.record.kind == "refund" and result.record.voided
    (rev,) = j.pending(*URGENT)
    assert rev.fields["3"] == iso.REFUND and rev.is_void


def test_unsent_offline_sale_is_taken_off_the_queue(j: Journal) -> None:
    sale = offline(j)
    assert j.queue_stats().count == 1 and card_data(j, sale.sale_id) == 1
    result = j.record_void(sale.sale_id)
    assert result.record is not None and result.record.voided and not result.sent_to_host
    assert advice_row(j, sale.sale_id) is None and card_data(j, sale.sale_id) == 0
    assert j.queue_stats().count == 0 and j.queue_stats().reversals == 0
    assert j.pending(Kind.ADVICE) == [] and j.pending(*URGENT) == []
    assert j.sale(sale.sale_id).status == SaleStatus.OFFLINE_APPROVED  # approved, then voided


def test_the_offline_removal_is_one_transaction(j: Journal) -> None:
    sale = offline(j)
    # the last write of the void fails (a disk error, say): nothing of it may remain
    j.db.execute("CREATE TEMP TRIGGER fail_void BEFORE UPDATE OF voided ON sales "
                 "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END")
    with pytest.raises(sqlite3.DatabaseError, match="simulated write failure"):
        j.record_void(sale.sale_id)
    assert advice_row(j, sale.sale_id) is not None and card_data(j, sale.sale_id) == 1
    assert not j.sale(sale.sale_id).voided and j.queue_stats().count == 1
    j.db.execute("DROP TRIGGER fail_void")
    assert not j.record_void(sale.sale_id).sent_to_host


def test_an_advice_that_may_have_left_is_voided_at_the_host(j: Journal) -> None:
    sale = offline(j)
    (adv,) = j.pending(Kind.ADVICE)
    stan, f7, _ = j.identities([adv.key], "0304110000")[adv.key]  # its first send is under way
    result = j.record_void(sale.sale_id)
    assert result.sent_to_host
    assert advice_row(j, sale.sale_id)["state"] == "voided"  # type: ignore[index]
    assert j.pending(Kind.ADVICE) == [] and card_data(j, sale.sale_id) == 0
    (rev,) = j.pending(*URGENT)
    assert (rev.orig_mti, rev.orig_stan, rev.orig_f7) == ("0220", stan, f7)
    doc = iso.void(rev.fields, orig_mti=rev.orig_mti, orig_stan=rev.orig_stan,
                   orig_f7=rev.orig_f7, rrn=rev.orig_rrn, stan=1, f7="0304110100")
    assert doc["90"].startswith(f"0220{stan}0304110000") and "37" not in doc
    iso.encode(doc)
    # its 0230 comes in after the void
    j.record_answers([Answer(adv.key, "00", final=True, rrn="000000000077")])
    assert advice_row(j, sale.sale_id)["state"] == "voided"  # type: ignore[index]
    assert j.sale(sale.sale_id).voided and j.sale(sale.sale_id).rrn == ""


def test_an_accepted_advice_is_voided_with_its_0220_and_rrn(j: Journal) -> None:
    sale = offline(j)
    (adv,) = j.pending(Kind.ADVICE)
    stan, f7, _ = j.identities([adv.key], "0304110000")[adv.key]
    j.mark_written([adv.key])
    j.record_answers([Answer(adv.key, "00", final=True, rrn="000000000077")])
    assert j.sale(sale.sale_id).rrn == "000000000077"
    assert j.record_void(sale.sale_id).sent_to_host
    (rev,) = j.pending(*URGENT)
    assert (rev.orig_mti, rev.orig_stan, rev.orig_f7, rev.orig_rrn) == (
        "0220", stan, f7, "000000000077")


def test_a_refused_advice_cannot_be_voided(j: Journal) -> None:
    sale = offline(j)
    (adv,) = j.pending(Kind.ADVICE)
    j.identities([adv.key], "0304110000")
    j.record_answers([Answer(adv.key, "05", final=True)])
    assert j.record_void(sale.sale_id).problem == "CANNOT BE VOIDED"


# -- duplicate guard ------------------------------------------------------------------------------
def test_recent_approvals_for_the_duplicate_guard(j: Journal) -> None:
    now = datetime(2026, 3, 4, 12, 0, 0)
    old, _ = online(j, local=now - timedelta(minutes=30))
    fresh, _ = online(j, local=now - timedelta(minutes=5), f7="0304092031")
    online(j, local=now - timedelta(minutes=4), f7="0304092032", code="05")  # declined
    online(j, local=now - timedelta(minutes=3), f7="0304092033", kind="refund")
    off = offline(j, local=now - timedelta(minutes=2))
    voided, _ = online(j, local=now - timedelta(minutes=1), f7="0304092034")
    j.record_void(voided.sale_id)
    got = j.recent_approvals(10, now=now)
    assert [r.sale_id for r in got] == [fresh.sale_id, off.sale_id]
    assert got[0].pan_hash == got[1].pan_hash == old.pan_hash != ""
    assert j.recent_approvals(0, now=now) == []
    assert [r.sale_id for r in j.recent_approvals(60, now=now)][0] == old.sale_id


def test_pan_hash_is_keyed_per_terminal(tmp_path: pathlib.Path) -> None:
    a = Vault.open(tmp_path / "a.key", create=True)
    b = Vault.open(tmp_path / "b.key", create=True)
    assert a.pan_hash(PAN) == a.pan_hash(PAN) != b.pan_hash(PAN)
    assert a.pan_hash(PAN) != hashlib.sha256(PAN.encode()).hexdigest()
    assert len(a.pan_hash(PAN)) == 64 and a.pan_hash(PAN) != a.pan_hash("4000000000000002")


def test_no_full_pan_in_the_journal_file(tmp_path: pathlib.Path) -> None:
    j = open_journal(tmp_path)
    sale, _ = online(j)
    off = offline(j)
    j.record_void(sale.sale_id)
    j.record_void(off.sale_id)
    online(j, kind="refund", f7="0304092035")
    offline(j)  # still queued: its card data is sealed, never in clear
    j.close()
    for f in tmp_path.iterdir():
        data = f.read_bytes()
        assert PAN.encode() not in data, f.name
        assert CARD.track2.encode() not in data, f.name


# -- old journals --------------------------------------------------------------------------------
OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sales (id INTEGER PRIMARY KEY, local TEXT NOT NULL, kind TEXT NOT NULL,
    amount INTEGER NOT NULL, currency TEXT NOT NULL, pan_masked TEXT NOT NULL,
    status TEXT NOT NULL, response_code TEXT NOT NULL DEFAULT '',
    approval TEXT NOT NULL DEFAULT '', rrn TEXT NOT NULL DEFAULT '',
    stan TEXT NOT NULL DEFAULT '', batch INTEGER NOT NULL, invoice INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '', fields TEXT NOT NULL,
    receipt_printed INTEGER NOT NULL DEFAULT 0, copy_printed INTEGER NOT NULL DEFAULT 0,
    result_shown INTEGER NOT NULL DEFAULT 0);
CREATE TABLE attempts (id INTEGER PRIMARY KEY, sale_id INTEGER NOT NULL REFERENCES sales(id),
    stan TEXT NOT NULL, f7 TEXT NOT NULL, state TEXT NOT NULL,
    response_code TEXT NOT NULL DEFAULT '');
CREATE TABLE reversals (id INTEGER PRIMARY KEY,
    sale_id INTEGER NOT NULL REFERENCES sales(id),
    attempt_id INTEGER NOT NULL REFERENCES attempts(id), reason TEXT NOT NULL, stan TEXT,
    f7 TEXT, state TEXT NOT NULL DEFAULT 'pending', tries INTEGER NOT NULL DEFAULT 0,
    last_code TEXT NOT NULL DEFAULT '', written INTEGER NOT NULL DEFAULT 0);
INSERT INTO meta VALUES ('next_stan', '8'), ('batch', '1'), ('invoice', '3');
INSERT INTO sales (id, local, kind, amount, currency, pan_masked, status, stan, batch,
    invoice, fields, rrn, approval)
    VALUES (1, '2026-03-04T10:00:00', 'purchase', 700, '978', '476173******0010', 'APPROVED',
            '000004', 1, 1, '{"3": "000000", "4": "000000000700"}', '000000000011', '111111'),
           (2, '2026-03-04T10:05:00', 'purchase', 900, '978', '476173******0010',
            'NOT_COMPLETED', '000006', 1, 2, '{"3": "000000", "4": "000000000900"}', '', '');
INSERT INTO attempts VALUES (1, 1, '000004', '0304090000', 'answered', '00'),
    (2, 2, '000006', '0304090500', 'unknown', '');
INSERT INTO reversals (id, sale_id, attempt_id, reason, stan, f7, written)
    VALUES (1, 2, 2, '68', '000007', '0304090600', 1);
"""


def test_an_old_journal_is_migrated(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    j = Journal(path, Vault.open(tmp_path / "card.key", create=True))
    (rev,) = j.pending(*URGENT)  # the pending reversal survived the rebuild, as it was
    assert (rev.id, rev.reason, rev.stan, rev.f7, rev.written) == (1, "68", "000007",
                                                                   "0304090600", True)
    assert (rev.orig_mti, rev.orig_stan, rev.orig_f7, rev.is_void) == (
        "0200", "000006", "0304090500", False)
    old = j.sale(1)
    assert not old.voided and old.pan_hash == ""
    assert j.record_void(1).sent_to_host  # an old approval of the open batch can be voided
    void = [r for r in j.pending(*URGENT) if r.is_void][0]
    assert (void.orig_stan, void.orig_f7, void.orig_rrn) == ("000004", "0304090000",
                                                             "000000000011")
    new, fixed = online(j, f7="0304100000")
    assert new.invoice == 3 and fixed["62"] == "000003"  # numbering goes on in batch 1
    j.close()
    j = Journal(path, Vault.open(tmp_path / "card.key", create=False))  # opens again as is
    assert len(j.pending(*URGENT)) == 2
    j.close()


def test_voided_advice_keeps_the_record_and_attempt_references(j: Journal) -> None:
    """A void of an accepted advice has no attempt: the reversals row allows that."""
    sale = offline(j)
    (adv,) = j.pending(Kind.ADVICE)
    j.identities([adv.key], "0304110000")
    j.record_answers([Answer(adv.key, "00", final=True, rrn="000000000077")])
    j.record_void(sale.sale_id)
    row = j.db.execute("SELECT attempt_id, reason FROM reversals").fetchone()
    assert row["attempt_id"] is None and row["reason"] == "17"
    assert j.db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_recover_leaves_a_pending_void_alone(j: Journal) -> None:
    sale, _ = online(j)
    j.record_void(sale.sale_id)
    rec = j.recover()
    assert rec.reversed == [] and rec.closed == []
    (rev,) = j.pending(*URGENT)
    assert rev.is_void and j.sale(sale.sale_id).status == SaleStatus.APPROVED


def test_attempt_dataclass_unchanged() -> None:
    assert Attempt(1, 2, "000001", "0101000000").stan == "000001"
