"""The invariant checker itself: it must catch each kind of money error."""

from __future__ import annotations

import pathlib
from datetime import datetime

from firmware.core.card import CardData
from firmware.runtime.journal import Journal
from firmware.runtime.vault import Vault
from tests.invariants import check

CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101", track2="x")


def journal(tmp: pathlib.Path) -> Journal:
    return Journal(tmp / "j.sqlite3", Vault.open(tmp / "k", create=True))


def sale(j: Journal, f7: str) -> tuple[int, str]:
    attempt, _ = j.start_attempt(None, fields={"3": "000000", "4": "000000001000"}, card=CARD,
                                 kind="purchase", amount=1000, currency="978",
                                 local=datetime(2026, 1, 1), f7=f7)
    return attempt.sale_id, attempt.stan


def entry(stan: str, f7: str, charged: bool, amount: int = 1000) -> dict[str, object]:
    return {"tid": "TERM0001", "stan": stan, "f7": f7, "charged": charged, "amount": amount}


def test_consistent_books_pass(tmp_path: pathlib.Path) -> None:
    j = journal(tmp_path)
    sid, stan = sale(j, "0101000000")
    attempt = j.db.execute("SELECT id FROM attempts").fetchone()[0]
    from firmware.runtime.journal import Attempt
    j.record_answer(Attempt(sid, attempt, stan, "0101000000"), code="00", approval="1",
                    rrn="1")
    assert check(j.path, [entry(stan, "0101000000", True)], "TERM0001") == []


def test_each_violation_is_reported(tmp_path: pathlib.Path) -> None:
    from firmware.runtime.journal import Attempt

    j = journal(tmp_path)
    sid, stan = sale(j, "0101000000")
    aid = j.db.execute("SELECT max(id) FROM attempts").fetchone()[0]
    j.record_answer(Attempt(sid, aid, stan, "0101000000"), code="00", approval="1", rrn="1")
    lost = check(j.path, [entry(stan, "0101000000", False)], "TERM0001")
    assert any("lost approval" in p for p in lost)
    wrong_amount = check(j.path, [entry(stan, "0101000000", True, 999)], "TERM0001")
    assert any("host charged 999" in p for p in wrong_amount)
    phantom = check(j.path, [entry(stan, "0101000000", True),
                             entry("999999", "0101000000", True)], "TERM0001")
    assert any("never recorded" in p for p in phantom)

    sid2, stan2 = sale(j, "0102000000")
    aid2 = j.db.execute("SELECT max(id) FROM attempts").fetchone()[0]
    j.record_answer(Attempt(sid2, aid2, stan2, "0102000000"), code="05", approval="", rrn="")
    declined_but_charged = check(j.path, [entry(stan, "0101000000", True),
                                          entry(stan2, "0102000000", True)], "TERM0001")
    assert any(f"sale {sid2} shows DECLINED" in p for p in declined_but_charged)

    sid3, stan3 = sale(j, "0103000000")  # second attempt of sale 1 charged too: double
    j.db.execute("UPDATE attempts SET sale_id=? WHERE stan=?", (sid, stan3))
    j.db.execute("UPDATE sales SET status='FAILED' WHERE id=?", (sid3,))
    double = check(j.path, [entry(stan, "0101000000", True), entry(stan3, "0103000000", True)],
                   "TERM0001")
    assert any("double charge" in p for p in double)
    assert any("still pending" in p for p in double)  # sale 1's 2nd attempt is 'sending'
