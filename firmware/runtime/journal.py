"""The journal: SQLite (WAL, synchronous=FULL), the terminal's durable memory.

Write order (ARCHITECTURE.md, "Durability"): a sale attempt is recorded as
`sending` with its STAN before the request is written; the host's answer before
it is shown; a pending reversal before it is first sent. Each of those is one
transaction, so a crash lands before or after it, never in between.

The journal holds PANs masked only. The full PAN and expiry that a reversal or an
advice needs are sealed by the Vault (AES-GCM) in `card_data` and deleted as
soon as nothing pending needs them. Track data is never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmware.core.card import CardData
from firmware.core.model import SaleRecord, SaleStatus
from firmware.runtime.journal_base import SCHEMA, JournalBase, record_from_row
from firmware.runtime.journal_queues import PendingAdvice, PendingReversal, QueueStore

__all__ = ["SCHEMA", "Attempt", "Journal", "JournalBase", "PendingAdvice", "PendingReversal",
           "Recovery"]


@dataclass(frozen=True)
class Attempt:
    sale_id: int
    attempt_id: int
    stan: str
    f7: str


@dataclass(frozen=True)
class Recovery:
    reversed: list[SaleRecord]  # sent without an answer: now pending reversal
    closed: list[SaleRecord]  # never sent (or only busy answers): closed, not charged
    unprinted: list[SaleRecord]  # final, receipt or slip not printed: print a copy


class Journal(QueueStore):
    """Sale attempts, answers and recovery, on top of the queues and the base."""

    def start_attempt(self, sale_id: int | None, *, fields: dict[str, str], card: CardData,
                      kind: str, amount: int, currency: str, local: datetime,
                      f7: str) -> tuple[Attempt, dict[str, str]]:
        """Record a 0200 about to be written: one transaction, before the send.

        Returns the attempt and the sale's fixed fields (batch and invoice set)."""
        with self.tx() as db:
            if sale_id is None:
                sale_id, fixed = self._create_sale(
                    db, fields=fields, card=card, kind=kind, amount=amount, currency=currency,
                    local=local, status=SaleStatus.AUTHORIZING)
            else:
                fixed = self.sale_fields(sale_id)
            stan = self._take_stan()
            cur = db.execute("INSERT INTO attempts (sale_id, stan, f7, state) "
                             "VALUES (?,?,?,'sending')", (sale_id, stan, f7))
            db.execute("UPDATE sales SET stan=? WHERE id=?", (stan, sale_id))
            return Attempt(sale_id, int(cur.lastrowid or 0), stan, f7), fixed

    def attempt_not_sent(self, attempt: Attempt) -> None:
        with self.tx() as db:
            db.execute("UPDATE attempts SET state='not_sent' WHERE id=?", (attempt.attempt_id,))

    def attempt_busy(self, attempt: Attempt, code: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE attempts SET state='answered', response_code=? WHERE id=?",
                       (code, attempt.attempt_id))

    def record_answer(self, attempt: Attempt, *, code: str, approval: str,
                      rrn: str) -> SaleRecord:
        status = SaleStatus.APPROVED if code == "00" else SaleStatus.DECLINED
        with self.tx() as db:
            db.execute("UPDATE attempts SET state='answered', response_code=? WHERE id=?",
                       (code, attempt.attempt_id))
            db.execute("UPDATE sales SET status=?, response_code=?, approval=?, rrn=?, stan=? "
                       "WHERE id=?", (status, code, approval, rrn, attempt.stan,
                                      attempt.sale_id))
            db.execute("DELETE FROM card_data WHERE sale_id=?", (attempt.sale_id,))
        return self.sale(attempt.sale_id)

    def attempt_unknown(self, attempt: Attempt, reason: str) -> SaleRecord:
        """The request went out but its outcome is unknown: record a pending reversal."""
        with self.tx() as db:
            self._reverse(db, attempt.sale_id, attempt.attempt_id, reason)
        return self.sale(attempt.sale_id)

    def close_sale(self, sale_id: int, reason: str) -> SaleRecord:
        with self.tx() as db:
            db.execute("UPDATE sales SET status=?, reason=? WHERE id=? AND status=?",
                       (SaleStatus.FAILED, reason, sale_id, SaleStatus.AUTHORIZING))
            self._forget_card(db, sale_id)
        return self.sale(sale_id)

    def mark_shown(self, sale_id: int) -> None:
        """The sale's outcome is on the display: the merchant has been told."""
        with self.tx() as db:
            db.execute("UPDATE sales SET result_shown=1 WHERE id=?", (sale_id,))

    def was_shown(self, sale_id: int) -> bool:
        row = self.db.execute("SELECT result_shown FROM sales WHERE id=?", (sale_id,)).fetchone()
        return bool(row and row[0])

    def reversal_pending_for(self, sale_id: int) -> bool:
        row = self.db.execute("SELECT count(*) FROM reversals WHERE sale_id=? AND "
                              "state='pending'", (sale_id,)).fetchone()
        return bool(row[0])

    def mark_printed(self, sale_id: int, *, copy: bool = False) -> None:
        with self.tx() as db:
            col = "copy_printed" if copy else "receipt_printed"
            db.execute(f"UPDATE sales SET {col}=1, receipt_printed=1 WHERE id=?", (sale_id,))

    def recover(self) -> Recovery:
        """Resolve what a crash left unfinished (ARCHITECTURE.md, durability rule 5)."""
        reversed_, closed = [], []
        with self.tx() as db:
            for row in db.execute("SELECT * FROM attempts WHERE state='sending'").fetchall():
                self._reverse(db, row["sale_id"], row["id"], "68")
                reversed_.append(row["sale_id"])
            for row in db.execute("SELECT id FROM sales WHERE status=?",
                                  (SaleStatus.AUTHORIZING,)).fetchall():
                db.execute("UPDATE sales SET status=?, reason='NOT COMPLETED' WHERE id=?",
                           (SaleStatus.FAILED, row["id"]))
                self._forget_card(db, row["id"])
                closed.append(row["id"])
        unprinted = [record_from_row(r) for r in self.db.execute(
            "SELECT * FROM sales WHERE receipt_printed=0 AND status IN (?,?,?,?,?) ORDER BY id",
            (SaleStatus.APPROVED, SaleStatus.DECLINED, SaleStatus.OFFLINE_APPROVED,
             SaleStatus.NOT_COMPLETED, SaleStatus.FAILED))]
        return Recovery([self.sale(i) for i in reversed_], [self.sale(i) for i in closed],
                        unprinted)
