"""The journal's part for the merchant's day: batch and invoice lookups, voids, duplicates.

Batch numbers start at 1 (meta "batch"; the batch close advances it). Each sale or
refund gets the open batch and that batch's next invoice number when it is created
(journal_base.py `_create_sale`), and its 0200 or 0220 carries them in fields 60
and 62.

A void is not a transaction of its own: it marks the original `voided`, in the
same transaction that queues what the host must hear (host-interface.md 1.1,
"0400 / 0410 with reason 17"):

- a purchase or refund approved online: a row of the `reversals` table with
  reason 17, naming the original 0200 (its STAN and field 7, and its field 37);
  the forwarder sends it like any reversal (0400, repeated as 0401 until an 0410);
- an offline sale whose advice has surely never been sent (it has no STAN yet:
  the forwarder gives it one, journaled, before its first transmission): the
  advice and the sealed card data are deleted; nothing goes to the host;
- an offline sale whose advice may have reached the host (it has a STAN), or that
  the host accepted: the advice leaves the queue (state `voided`; a 0230 still on
  its way changes nothing) and a reason-17 row names the 0220 by the advice's own
  STAN and field 7 (and the 0230's field 37 when known). A host that never got the
  advice answers 25 and must never charge it later.

Only approved transactions (APPROVED, OFFLINE_APPROVED) of the open batch can be
voided, each once, in full. The checks are made again inside the transaction that
records the void, so a batch closed in between, or a second void, is refused there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from firmware.core.iso import VOID_REASON
from firmware.core.dupguard import RECENT_MAX
from firmware.core.model import SaleRecord, SaleStatus
from firmware.runtime.journal_base import JournalBase, record_from_row

NOT_FOUND = "NOT FOUND"
USE_REFUND = "USE REFUND"
ALREADY_VOIDED = "ALREADY VOIDED"
CANNOT_VOID = "CANNOT BE VOIDED"
VOIDABLE = (SaleStatus.APPROVED, SaleStatus.OFFLINE_APPROVED)


@dataclass(frozen=True)
class VoidResult:
    """What recording a void did: the original (now voided), or why it was refused."""

    record: SaleRecord | None
    sent_to_host: bool = False  # a 0400 reason 17 is queued (False: taken off the queue)
    problem: str = ""


class VoidStore(JournalBase):
    def current_batch(self) -> int:
        """The open batch's number (1 on a new journal)."""
        return self._meta("batch")

    def sale_by_invoice(self, batch: int, invoice: int) -> SaleRecord | None:
        row = self.db.execute("SELECT * FROM sales WHERE batch=? AND invoice=?",
                              (batch, invoice)).fetchone()
        return record_from_row(row) if row else None

    def last_transaction(self, batch: int) -> SaleRecord | None:
        """The newest transaction of `batch` that has an outcome (not one in flight)."""
        row = self.db.execute("SELECT * FROM sales WHERE batch=? AND status!=? ORDER BY id "
                              "DESC LIMIT 1", (batch, SaleStatus.AUTHORIZING)).fetchone()
        return record_from_row(row) if row else None

    def recent_approvals(self, minutes: float, now: datetime | None = None) -> list[SaleRecord]:
        """Purchases approved (online or offline) and not voided within the last `minutes`
        (local time), oldest first, that carry a PAN hash: the duplicate guard's memory."""
        if minutes <= 0:
            return []
        since = (now or datetime.now()) - timedelta(minutes=minutes)
        rows = self.db.execute(
            "SELECT * FROM sales WHERE kind='purchase' AND status IN (?,?) AND voided=0 AND "
            "pan_hash!='' AND local>=? ORDER BY id DESC LIMIT ?",
            (*VOIDABLE, since.isoformat(timespec="seconds"), RECENT_MAX)).fetchall()
        return [record_from_row(r) for r in reversed(rows)]  # at most the core keeps

    # -- voids ---------------------------------------------------------------------------
    @staticmethod
    def void_problem(rec: SaleRecord, open_batch: int) -> str:
        """Why `rec` cannot be voided now ("" when it can)."""
        if rec.voided:
            return ALREADY_VOIDED
        if rec.status not in VOIDABLE:
            return CANNOT_VOID  # declined, not completed, failed, refused by the host
        if rec.batch != open_batch:  # a closed batch: the money is settled
            return USE_REFUND if rec.kind == "purchase" else CANNOT_VOID
        return ""

    def void_candidate(self, invoice: int | None) -> tuple[SaleRecord | None, str]:
        """The transaction an operator asked to void (None: the last one) and why it cannot
        be voided ("" when it can). Invoice numbers start again at 1 in each batch: a
        number the open batch does not have yet is looked for in the closed batches, so
        that the operator hears "USE REFUND" rather than "NOT FOUND"."""
        batch = self.current_batch()
        if invoice is None:
            rec = self.last_transaction(batch)
        else:
            rec = self.sale_by_invoice(batch, invoice)
            if rec is None:
                row = self.db.execute("SELECT * FROM sales WHERE invoice=? AND batch<? "
                                      "ORDER BY batch DESC LIMIT 1",
                                      (invoice, batch)).fetchone()
                rec = record_from_row(row) if row else None
        if rec is None:
            return None, NOT_FOUND
        return rec, self.void_problem(rec, batch)

    def record_void(self, sale_id: int) -> VoidResult:
        """Void a transaction: one transaction, checked again inside it (see the module doc)."""
        with self.tx() as db:
            row = db.execute("SELECT * FROM sales WHERE id=?", (sale_id,)).fetchone()
            if row is None:
                return VoidResult(None, problem=NOT_FOUND)
            problem = self.void_problem(record_from_row(row), self._meta("batch"))
            if problem:
                return VoidResult(None, problem=problem)
            if row["status"] == SaleStatus.OFFLINE_APPROVED:
                sent = self._void_offline(db, row)
                if sent is None:
                    return VoidResult(None, problem=CANNOT_VOID)
            else:
                attempt = db.execute(
                    "SELECT id, stan, f7 FROM attempts WHERE sale_id=? AND stan=? AND "
                    "state='answered' ORDER BY id DESC LIMIT 1",
                    (sale_id, row["stan"])).fetchone()
                if attempt is None:  # an approval always has its answered attempt
                    return VoidResult(None, problem=CANNOT_VOID)
                db.execute("INSERT INTO reversals (sale_id, attempt_id, reason, orig_mti, "
                           "orig_stan, orig_f7, orig_rrn) VALUES (?,?,?,?,?,?,?)",
                           (sale_id, attempt["id"], VOID_REASON, "0200", attempt["stan"],
                            attempt["f7"], row["rrn"]))
                sent = True
            db.execute("UPDATE sales SET voided=1 WHERE id=?", (sale_id,))
        return VoidResult(self.sale(sale_id), sent_to_host=sent)

    @staticmethod
    def _void_offline(db: sqlite3.Connection, row: sqlite3.Row) -> bool | None:
        """The advice side of voiding an offline sale; True when the host must hear a
        0400, False when the advice was taken off the queue unsent, None if no advice."""
        sale_id = row["id"]
        adv = db.execute("SELECT * FROM advices WHERE sale_id=?", (sale_id,)).fetchone()
        if adv is None:
            return None
        db.execute("DELETE FROM card_data WHERE sale_id=?", (sale_id,))
        maybe_sent = adv["state"] == "accepted" or bool(adv["written"]) or (
            adv["stan"] is not None and adv["state"] == "pending")
        if not maybe_sent:  # never given to the host: nothing to undo there
            db.execute("DELETE FROM advices WHERE id=?", (adv["id"],))
            return False
        if adv["state"] == "pending":
            db.execute("UPDATE advices SET state='voided' WHERE id=?", (adv["id"],))
        db.execute("INSERT INTO reversals (sale_id, attempt_id, reason, orig_mti, orig_stan, "
                   "orig_f7, orig_rrn) VALUES (?,NULL,?,?,?,?,?)",
                   (sale_id, VOID_REASON, "0220", adv["stan"], adv["f7"], row["rrn"]))
        return True
