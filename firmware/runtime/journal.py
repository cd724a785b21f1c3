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

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from firmware.core.card import CardData
from firmware.core.emv.steps import ChipData
from firmware.core.texts import CARD_DECLINED
from firmware.core.model import SaleRecord, SaleStatus
from firmware.runtime.journal_base import (
    SCHEMA, JournalBase, record_from_row,
)
from firmware.runtime.journal_chip import chip_json, upload_icc
from firmware.runtime.journal_batch import BatchStore
from firmware.runtime.journal_fleet import FleetStore
from firmware.runtime.journal_queues import QueueStore
from firmware.runtime.outbox import PendingAdvice, PendingReversal

__all__ = ["SCHEMA", "Attempt", "Journal", "JournalBase", "PendingAdvice", "PendingReversal",
           "QueuedPrint", "Recovery"]

RECEIPT_JOBS = ("sale", "recovery")  # print-queue kinds that are a sale's receipt or slip


@dataclass(frozen=True)
class Attempt:
    sale_id: int
    attempt_id: int
    stan: str
    f7: str


@dataclass(frozen=True)
class QueuedPrint:
    """A receipt or slip waiting in the print queue for the printer to be ready."""

    job_id: int
    kind: str  # "sale", "recovery" or "refused"
    sale_id: int | None
    created: datetime  # local time when it could not be printed
    lines: tuple[str, ...]  # exactly the rendered lines (card number masked)
    tries: int
    last_error: str


@dataclass(frozen=True)
class Recovery:
    reversed: list[SaleRecord]  # sent without an answer: now pending reversal
    closed: list[SaleRecord]  # never sent (or only busy answers): closed, not charged
    unprinted: list[SaleRecord]  # final, receipt or slip not printed nor queued: a copy


class Journal(QueueStore, BatchStore, FleetStore):
    """Sale attempts, answers and recovery, on top of the queues and the base."""

    def counter(self, key: str) -> int:
        """A counter of the meta table that another part keeps there (the DUKPT
        transaction counter, firmware/runtime/pinkeys.py); 0 when it was never set."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def advance_counter(self, key: str, advance: Callable[[int], int | None]) -> int | None:
        """Set that counter to `advance(its value)` in one durable transaction (one fsync),
        and return the new value once it is on disk; None, and nothing written, when
        `advance` returns None (the counter is exhausted)."""
        with self.tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            new = advance(int(row[0]) if row else 0)
            if new is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(new)))
        return new

    def start_attempt(self, sale_id: int | None, *, fields: dict[str, str], card: CardData,
                      kind: str, amount: int, currency: str, local: datetime,
                      f7: str, chip: ChipData | None = None) -> tuple[Attempt, dict[str, str]]:
        """Record a 0200 about to be written: one transaction, before the send.

        Returns the attempt and the sale's fixed fields (batch and invoice set)."""
        with self.tx() as db:
            stan = self._take_stan()
            if sale_id is None:  # the sale is new: it is inserted with its first STAN
                sale_id, fixed = self._create_sale(
                    db, fields=fields, card=card, kind=kind, amount=amount, currency=currency,
                    local=local, status=SaleStatus.AUTHORIZING, stan=stan, chip=chip)
            else:
                fixed = self.sale_fields(sale_id)
                db.execute("UPDATE sales SET stan=? WHERE id=?", (stan, sale_id))
            cur = db.execute("INSERT INTO attempts (sale_id, stan, f7, state) "
                             "VALUES (?,?,?,'sending')", (sale_id, stan, f7))
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
        """The host's final answer. A chip purchase it approved now waits for the card's
        decision (`awaiting`): its card data stays sealed, because a card that declines
        means a reversal (settle_chip), and so does a crash before the card's word
        (recover)."""
        status = SaleStatus.APPROVED if code == "00" else SaleStatus.DECLINED
        with self.tx() as db:
            db.execute("UPDATE attempts SET state='answered', response_code=? WHERE id=?",
                       (code, attempt.attempt_id))
            row = db.execute("UPDATE sales SET status=?, response_code=?, approval=?, rrn=?, "
                             "stan=? WHERE id=? RETURNING *",
                             (status, code, approval, rrn, attempt.stan,
                              attempt.sale_id)).fetchall()[0]
            chip = json.loads(row["chip"]) if row["chip"] else {}
            if chip.get("entry") == "CHIP" and status == SaleStatus.APPROVED and \
                    row["kind"] == "purchase":
                chip["state"] = "awaiting"
                row = db.execute("UPDATE sales SET chip=? WHERE id=? RETURNING *",
                                 (json.dumps(chip), attempt.sale_id)).fetchall()[0]
            else:
                db.execute("DELETE FROM card_data WHERE sale_id=?", (attempt.sale_id,))
        return record_from_row(row)

    def settle_chip(self, sale_id: int, chip: ChipData | None, *, approved: bool,
                    aac: str = "", script_results: str = "",
                    crashed: bool = False) -> SaleRecord:
        """The card's decision on a purchase the host approved, in one transaction.
        Approved (its TC): the sale stands; its final cryptogram is kept for the batch
        upload (9F26 9F27 9F36 95 9B 9F5B) and its card data deleted. Declined (an AAC),
        or the card could not finish: a pending reversal with reason 06 (field 55: the
        AAC's 9F26 9F27 9F36, when the card gave one) and DECLINED BY CARD."""
        with self.tx() as db:
            row = db.execute("SELECT chip FROM sales WHERE id=?", (sale_id,)).fetchone()
            old = json.loads(row["chip"]) if row and row["chip"] else {}
            if old.get("state") != "awaiting":
                return self.sale(sale_id)  # settled already (a repeat after a restart)
            new = json.loads(chip_json("05", chip)) if chip is not None else dict(old)
            new["state"] = "settled"
            if approved:
                if chip is not None:
                    new["upload"] = upload_icc(chip, script_results)
                db.execute("UPDATE sales SET chip=? WHERE id=?", (json.dumps(new), sale_id))
                db.execute("DELETE FROM card_data WHERE sale_id=?", (sale_id,))
            else:
                attempt = db.execute("SELECT id FROM attempts WHERE sale_id=? AND "
                                     "state='answered' ORDER BY id DESC LIMIT 1",
                                     (sale_id,)).fetchone()
                # `crashed`: the terminal stopped before the card's word (recover): the
                # customer was told nothing, the sale is not completed
                status, why = (SaleStatus.NOT_COMPLETED, "NOT COMPLETED") if crashed else \
                    (SaleStatus.DECLINED, CARD_DECLINED)
                db.execute("UPDATE sales SET status=?, reason=?, chip=? WHERE id=?",
                           (status, why, json.dumps(new), sale_id))
                db.execute("INSERT INTO reversals (sale_id, attempt_id, reason, icc) "
                           "VALUES (?,?,?,?)", (sale_id, attempt["id"], "06", aac))
                self._queues_changed()
        return self.sale(sale_id)

    def chip_awaiting(self) -> list[int]:
        """Chip purchases the host approved whose card's decision was never journaled."""
        return [r[0] for r in self.db.execute(
            "SELECT id FROM sales WHERE status=? AND chip LIKE '%\"state\": \"awaiting\"%'",
            (SaleStatus.APPROVED,))]

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

    def mark_shown(self, sale_id: int, shown: bool = True) -> None:
        """The sale's outcome is on the display: the merchant has been told (`shown`
        False: a stop took it off the glass too soon, the next start tells it again).
        Not a write of the order of durable writes (lost in a power cut, the restart only
        tells the outcome again): committed without an fsync of its own (`tx`)."""
        with self.tx(durable=False) as db:
            db.execute("UPDATE sales SET result_shown=? WHERE id=?", (int(shown), sale_id))

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

    # -- the print queue (firmware/runtime/printqueue.py) ---------------------------------

    def queue_print(self, kind: str, sale_id: int | None, lines: tuple[str, ...],
                    created: datetime, error: str) -> int:
        """Keep a receipt the printer could not print; one job per kind and sale (a second
        one for the same sale is the same paper: the first stays, with the new error)."""
        with self.tx() as db:
            if sale_id is not None:
                row = db.execute("SELECT id FROM print_queue WHERE kind=? AND sale_id=?",
                                 (kind, sale_id)).fetchone()
                if row is not None:
                    db.execute("UPDATE print_queue SET last_error=? WHERE id=?",
                               (error, row["id"]))
                    return int(row["id"])
            cur = db.execute("INSERT INTO print_queue (kind, sale_id, created, lines, "
                             "last_error) VALUES (?,?,?,?,?)",
                             (kind, sale_id, created.isoformat(timespec="seconds"),
                              json.dumps(list(lines)), error))
            return int(cur.lastrowid or 0)

    def queued_prints(self) -> list[QueuedPrint]:
        """The print queue, oldest first."""
        return [QueuedPrint(r["id"], r["kind"], r["sale_id"], datetime.fromisoformat(r["created"]),
                            tuple(json.loads(r["lines"])), r["tries"], r["last_error"])
                for r in self.db.execute("SELECT * FROM print_queue ORDER BY id")]

    def print_queued(self, kind: str, sale_id: int) -> bool:
        row = self.db.execute("SELECT count(*) FROM print_queue WHERE kind=? AND sale_id=?",
                              (kind, sale_id)).fetchone()
        return bool(row[0])

    def print_failed(self, job_id: int, error: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE print_queue SET tries=tries+1, last_error=? WHERE id=?",
                       (error, job_id))

    def print_done(self, job: str, sale_id: int | None, job_id: int | None = None) -> None:
        """A print came out: in one transaction, take it (and any queued print of the same
        paper) out of the queue and record it on the sale. `job` is the Print effect's
        job: "sale", "copy", "recovery", "recovery-last" or "refused".

        Committed without an fsync of its own (`tx`), except for a refused offline sale's
        slip, whose record ends the announcements of the refusal: a receipt recorded as
        printed and lost in a power cut is printed again as a copy at the restart, which
        is what happens anyway when the power goes while it prints."""
        with self.tx(durable=job == "refused") as db:
            if job_id is not None:
                db.execute("DELETE FROM print_queue WHERE id=?", (job_id,))
            if sale_id is None:
                return
            if job == "refused":
                db.execute("UPDATE advices SET announced=1 WHERE sale_id=?", (sale_id,))
                db.execute("DELETE FROM print_queue WHERE kind='refused' AND sale_id=?",
                           (sale_id,))
                return
            if job not in ("sale", "copy", "recovery", "recovery-last"):
                return
            col = "receipt_printed" if job == "sale" else "copy_printed"
            db.execute(f"UPDATE sales SET {col}=1, receipt_printed=1 WHERE id=?", (sale_id,))
            db.execute("DELETE FROM print_queue WHERE sale_id=? AND kind IN (?,?)",
                       (sale_id, *RECEIPT_JOBS))

    def recover(self) -> Recovery:
        """Resolve what a crash left unfinished (ARCHITECTURE.md, durability rule 5)."""
        reversed_, closed = [], []
        # the host approved a chip sale and the terminal stopped before the card's decision
        # was journaled: the customer saw no approval, so the sale is reversed (06)
        for sale_id in self.chip_awaiting():
            self.settle_chip(sale_id, None, approved=False, crashed=True)
            reversed_.append(sale_id)
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
        # a receipt waiting in the print queue is printed from there (marked as a delayed
        # print), never also as a copy: only receipts nobody knows the fate of are copied
        unprinted = [record_from_row(r) for r in self.db.execute(
            "SELECT * FROM sales WHERE receipt_printed=0 AND status IN (?,?,?,?,?) AND id NOT "
            "IN (SELECT sale_id FROM print_queue WHERE sale_id IS NOT NULL AND kind IN (?,?)) "
            "ORDER BY id",
            (SaleStatus.APPROVED, SaleStatus.DECLINED, SaleStatus.OFFLINE_APPROVED,
             SaleStatus.NOT_COMPLETED, SaleStatus.FAILED, *RECEIPT_JOBS))]
        return Recovery([self.sale(i) for i in reversed_], [self.sale(i) for i in closed],
                        unprinted)
