"""The invariant checker learns refunds and voids: a refund is credited exactly when the
terminal showed REFUND APPROVED, never twice; a voided transaction is neither charged nor
credited at the host; a void still waiting for its 0410 is 'pending'."""

from __future__ import annotations

import pathlib
from datetime import datetime
from typing import Any

from firmware.core import iso
from firmware.core.card import CardData
from firmware.runtime.journal import Journal
from firmware.runtime.outbox import Answer, Kind
from firmware.runtime.vault import Vault
from tests.invariants import check, pending

PAN = "4761739001010010"
CARD = CardData(pan=PAN, expiry="3012", service_code="101", track2=f"{PAN}=3012101")
IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")


def journal(tmp: pathlib.Path) -> Journal:
    return Journal(tmp / "j.sqlite3", Vault.open(tmp / "k", create=True))


def txn(j: Journal, f7: str, kind: str, code: str = "00", amount: int = 1000) -> tuple[int, str]:
    fields = iso.sale_fields(IDENT, card=CARD, amount=amount, local=datetime(2026, 1, 1),
                             processing_code=iso.REFUND if kind == "refund" else iso.PURCHASE,
                             batch=0, invoice=0)
    attempt, _ = j.start_attempt(None, fields=fields, card=CARD, kind=kind, amount=amount,
                                 currency="978", local=datetime(2026, 1, 1), f7=f7)
    j.record_answer(attempt, code=code, approval="1" if code == "00" else "", rrn="1")
    return attempt.sale_id, attempt.stan


def entry(stan: str, f7: str, kind: str, *, charged: bool = False, credited: bool = False,
          voided: bool = False, amount: int = 1000) -> dict[str, Any]:
    return {"tid": "TERM0001", "stan": stan, "f7": f7, "kind": kind, "amount": amount,
            "processing_code": iso.REFUND if kind == "refund" else iso.PURCHASE,
            "charged": charged, "credited": credited, "voided": voided}


def test_refund_credited_once_passes(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    _, stan = txn(j, "0101000000", "refund")
    assert check(j.path, [entry(stan, "0101000000", "refund", credited=True)], "TERM0001") == []


def test_refund_violations(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = txn(j, "0101000000", "refund")
    lost = check(j.path, [entry(stan, "0101000000", "refund")], "TERM0001")
    assert any("lost refund" in p for p in lost)
    wrong = check(j.path, [entry(stan, "0101000000", "refund", credited=True, amount=5)],
                  "TERM0001")
    assert any("host credited 5" in p for p in wrong)
    charged = check(j.path, [entry(stan, "0101000000", "refund", charged=True)], "TERM0001")
    assert any(f"refund {sid} was charged" in p for p in charged)
    sid2, stan2 = txn(j, "0102000000", "refund", code="05")
    declined = check(j.path, [entry(stan, "0101000000", "refund", credited=True),
                              entry(stan2, "0102000000", "refund", credited=True)],
                     "TERM0001")
    assert any(f"phantom credit: refund {sid2} shows DECLINED" in p for p in declined)
    stranger = check(j.path, [entry(stan, "0101000000", "refund", credited=True),
                              entry("999999", "0101000000", "refund", credited=True)],
                     "TERM0001")
    assert any("phantom credit: host credited stan 999999" in p for p in stranger)


def test_double_credit_is_caught(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = txn(j, "0101000000", "refund")
    _, stan2 = txn(j, "0102000000", "refund")
    j.db.execute("UPDATE attempts SET sale_id=? WHERE stan=?", (sid, stan2))
    problems = check(j.path, [entry(stan, "0101000000", "refund", credited=True),
                              entry(stan2, "0102000000", "refund", credited=True)], "TERM0001")
    assert any(f"double credit: refund {sid} credited 2 times" in p for p in problems)


def test_voids(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sale, stan = txn(j, "0101000000", "purchase")
    refund, rstan = txn(j, "0102000000", "refund")
    j.record_void(sale)
    j.record_void(refund)
    assert pending(j.path) == 2  # the two voids wait for their 0410
    for rev in j.pending(Kind.REVERSAL, Kind.VOID):
        j.identities([rev.key], "0103000000")
        j.record_answers([Answer(rev.key, "00", final=True)])
    assert pending(j.path) == 0
    undone = [entry(stan, "0101000000", "purchase", voided=True),
              entry(rstan, "0102000000", "refund", voided=True)]
    assert check(j.path, undone, "TERM0001") == []
    still = [entry(stan, "0101000000", "purchase", charged=True),
             entry(rstan, "0102000000", "refund", credited=True)]
    problems = check(j.path, still, "TERM0001")
    assert any(f"voided sale {sale} is still charged" in p for p in problems)
    assert any(f"refund {refund} was voided but the host credited it" in p for p in problems)


def test_ledgers_without_credit_fields_still_check(tmp_path: pathlib.Path) -> None:
    """A ledger from before refunds: `charged` only, a refund told by its processing code."""
    j = journal(tmp_path)
    _, stan = txn(j, "0101000000", "refund")
    old = {"tid": "TERM0001", "stan": stan, "f7": "0101000000", "charged": True,
           "amount": 1000, "processing_code": iso.REFUND}
    assert check(j.path, [old], "TERM0001") == []
