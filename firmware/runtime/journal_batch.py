"""The journal's batch part: batch totals, the batch close and its upload, Z reports.

A batch close is a small state machine kept in `batch_closes`, one row per batch,
so that a crash or a lost connection at any point resumes where it stopped:

    (no row: open) --begin_close--> closing --0510 00--> closed
    closing --0510 95--> uploading --every 0330--> uploaded --0510 00 / 95--> closed
    closing --other code, no answer--> failed   (open; the next close starts afresh)

`begin_close` journals the totals before the first 0500; each 0500 gets a new
STAN and field 7, journaled before it is written (0500 has no repeat). Each
upload item (`batch_uploads`, one per counted transaction) is an outbox entry
(outbox.py): it gets its STAN and field 7 at its first send, journaled before it,
and is a 0321 after a transmission that was written, through the queue code of
journal_queues.py. The row turns `closed` in the same transaction
that advances the batch number and keeps the Z report's lines, and only from a
state that is not `closed`: a batch is closed once, whatever crashes.

What a batch's totals count (the 0500's fields 74, 76, 86, 88): purchases approved
online plus offline sales whose advice the host accepted, refunds approved; none
of them voided. Reversed, declined, failed, refused and voided ones do not count.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from firmware.core.iso import BatchTotals
from firmware.core.model import SaleStatus
from firmware.core.receipt import BatchSummary, Tally
from firmware.errors import JournalError
from firmware.runtime.journal_base import JournalBase, queued
from firmware.runtime.outbox import UploadItem
from firmware.runtime.vault import Vault

BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_closes (
    batch INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    scheduled INTEGER NOT NULL DEFAULT 0,
    started TEXT NOT NULL,
    finished TEXT NOT NULL DEFAULT '',
    purchases INTEGER NOT NULL DEFAULT 0,
    purchase_amount INTEGER NOT NULL DEFAULT 0,
    refunds INTEGER NOT NULL DEFAULT 0,
    refund_amount INTEGER NOT NULL DEFAULT 0,
    pcode TEXT NOT NULL DEFAULT '',
    stan TEXT NOT NULL DEFAULT '',
    f7 TEXT NOT NULL DEFAULT '',
    written INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    first_code TEXT NOT NULL DEFAULT '',
    last_code TEXT NOT NULL DEFAULT '',
    balanced INTEGER,
    report TEXT NOT NULL DEFAULT '',
    z_printed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batch_uploads (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    sale_id INTEGER NOT NULL REFERENCES sales(id),
    orig_mti TEXT NOT NULL,
    orig_stan TEXT NOT NULL,
    orig_f7 TEXT NOT NULL,
    rrn TEXT NOT NULL,
    approval TEXT NOT NULL,
    stan TEXT NOT NULL DEFAULT '',
    f7 TEXT NOT NULL DEFAULT '',
    written INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    code TEXT NOT NULL DEFAULT '',
    UNIQUE (batch, sale_id)
);
"""

IN_PROGRESS = ("closing", "uploading", "uploaded")

# the transactions a batch's totals count (see the module's docstring)
_COUNTED = (
    "FROM sales s LEFT JOIN advices a ON a.sale_id = s.id WHERE s.batch = ? AND s.voided = 0 "
    f"AND ((s.status = '{SaleStatus.APPROVED}' AND s.kind IN ('purchase', 'refund')) OR "
    f"(s.status = '{SaleStatus.OFFLINE_APPROVED}' AND s.kind = 'purchase' "
    "AND a.state = 'accepted'))")


@dataclass(frozen=True)
class BatchClose:
    """A batch close as the journal holds it."""

    batch: int
    state: str  # "closing", "failed", "uploading", "uploaded", "closed"
    scheduled: bool
    started: datetime
    finished: datetime | None
    totals: BatchTotals  # frozen before the first 0500
    pcode: str  # the current 0500's processing code ("" before the first)
    stan: str
    f7: str
    written: bool
    sent: int  # 0500s written so far
    first_code: str  # the answer to 920000 that decided (00, or 95: upload)
    last_code: str  # the last answer (or "" for none)
    balanced: bool | None
    report: tuple[str, ...]  # the Z report's lines, once closed
    z_printed: bool


class BatchStore(JournalBase):
    """Totals, batch closes and uploads; `Journal` inherits it."""

    def __init__(self, path: Path, vault: Vault) -> None:
        super().__init__(path, vault)
        try:
            # one transaction: a new journal's tables cost one fsync, not one each
            self.db.executescript(f"BEGIN IMMEDIATE;{BATCH_SCHEMA}COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path}: batch tables cannot be created: "
                               f"{exc}") from None

    # -- totals --------------------------------------------------------------------
    def open_batch(self) -> int:
        """The batch new transactions join (journal meta "batch", from 1)."""
        return self._meta("batch")

    def batch_totals(self, batch: int) -> BatchTotals:
        """What a 0500 for `batch` carries, counted now."""
        return count_totals(self.db, batch)

    def batch_summary(self, batch: int) -> BatchSummary:
        """The batch by type, for the X and Z reports and `posterm status`."""
        q = self.db.execute

        def tally(where: str) -> Tally:
            row = q(f"SELECT count(*), coalesce(sum(s.amount), 0) FROM sales s LEFT JOIN "
                    f"advices a ON a.sale_id = s.id WHERE s.batch = ? AND {where}",
                    (batch,)).fetchone()
            return Tally(int(row[0]), int(row[1]))

        span = q("SELECT min(local), max(local) FROM sales WHERE batch = ?", (batch,)).fetchone()
        return BatchSummary(
            batch=batch,
            sales=tally(f"s.voided = 0 AND s.status = '{SaleStatus.APPROVED}' "
                        "AND s.kind = 'purchase'"),
            refunds=tally(f"s.voided = 0 AND s.status = '{SaleStatus.APPROVED}' "
                          "AND s.kind = 'refund'"),
            voids=tally("s.voided = 1"),
            offline_approved=tally(f"s.voided = 0 AND s.status = "
                                   f"'{SaleStatus.OFFLINE_APPROVED}'"),
            offline_waiting=tally(f"s.voided = 0 AND s.status = '{SaleStatus.OFFLINE_APPROVED}' "
                                  "AND a.state = 'pending'"),
            offline_refused=tally(f"s.status = '{SaleStatus.OFFLINE_REFUSED}'"),
            totals=count_totals(self.db, batch),
            first=datetime.fromisoformat(span[0]) if span[0] else None,
            last=datetime.fromisoformat(span[1]) if span[1] else None)

    def close_blockers(self) -> int:
        """What must reach the host (or end) before a close: pending reversals and voids,
        pending advices, and sales still in flight."""
        return queued(self.db, "pending") + int(self.db.execute(
            "SELECT count(*) FROM sales WHERE status = ?", (SaleStatus.AUTHORIZING,)
        ).fetchone()[0])

    # -- the close -----------------------------------------------------------------
    def batch_close(self, batch: int) -> BatchClose | None:
        row = self.db.execute("SELECT * FROM batch_closes WHERE batch = ?", (batch,)).fetchone()
        return _close_from_row(row) if row else None

    def close_in_progress(self) -> BatchClose | None:
        """A close that was cut short after its totals were journaled (crash, lost host)."""
        return close_in_progress(self.db)

    def last_close(self) -> BatchClose | None:
        return last_close(self.db)

    def begin_close(self, *, scheduled: bool, now: datetime) -> BatchClose | None:
        """Journal the close of the open batch (or pick up the one in progress) with its
        totals counted now, in one transaction; None while something is still pending
        (a batch is never closed with a reversal, void or advice pending).

        A close picked up in `uploading` or `uploaded` gets an upload item for every
        transaction counted now that it has none for (one joined the batch after a close
        attempt that failed), and goes back to `uploading` if so."""
        with self.tx() as db:
            if self.close_blockers():
                return None
            row = db.execute("SELECT * FROM batch_closes WHERE state IN (?, ?, ?) "
                             "ORDER BY batch LIMIT 1", IN_PROGRESS).fetchone()
            batch = int(row["batch"]) if row else self._meta("batch")
            totals = count_totals(db, batch)
            frozen = (totals.purchases, totals.purchase_amount, totals.refunds,
                      totals.refund_amount)
            if row is None:
                existing = db.execute("SELECT state FROM batch_closes WHERE batch = ?",
                                      (batch,)).fetchone()
                if existing is not None and existing["state"] == "closed":
                    raise JournalError(f"batch {batch} is closed already but still the open "
                                       "batch: the journal is inconsistent")
                db.execute(
                    "INSERT INTO batch_closes (batch, state, scheduled, started, purchases, "
                    "purchase_amount, refunds, refund_amount) VALUES (?, 'closing', ?, ?, ?, ?, "
                    "?, ?) ON CONFLICT (batch) DO UPDATE SET state = 'closing', "
                    "scheduled = excluded.scheduled, started = excluded.started, "
                    "purchases = excluded.purchases, purchase_amount = excluded.purchase_amount, "
                    "refunds = excluded.refunds, refund_amount = excluded.refund_amount, "
                    "pcode = '', stan = '', f7 = '', written = 0",
                    (batch, int(scheduled), now.isoformat(timespec="seconds"), *frozen))
            else:
                db.execute("UPDATE batch_closes SET purchases = ?, purchase_amount = ?, "
                           "refunds = ?, refund_amount = ? WHERE batch = ?", (*frozen, batch))
                if row["state"] != "closing":
                    # items never sent for a transaction no longer counted (voided since)
                    db.execute(f"DELETE FROM batch_uploads WHERE batch = ? AND stan = '' AND "
                               f"sale_id NOT IN (SELECT s.id {_COUNTED})", (batch, batch))
                    if self._add_upload_items(db, batch):
                        db.execute("UPDATE batch_closes SET state = 'uploading' "
                                   "WHERE batch = ?", (batch,))
        close = self.batch_close(batch)
        assert close is not None
        return close

    def close_identity(self, batch: int, pcode: str, f7: str) -> str:
        """A new 0500's STAN, with its processing code and field 7, journaled before it is
        written; the STAN. Every 0500 is new: there is no repeat."""
        with self.tx() as db:
            stan = self._take_stan()
            db.execute("UPDATE batch_closes SET pcode = ?, stan = ?, f7 = ?, written = 0 "
                       "WHERE batch = ?", (pcode, stan, f7, batch))
            return stan

    def close_written(self, batch: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE batch_closes SET written = 1, sent = sent + 1 WHERE batch = ?",
                       (batch,))

    def close_failed(self, batch: int, code: str) -> None:
        """No answer, or an answer that neither closes nor uploads: the batch stays open.
        Before an upload the close starts afresh next time; after it, the close goes on
        from where it is (a new 0500 960000, no new upload)."""
        with self.tx() as db:
            db.execute("UPDATE batch_closes SET last_code = ?, state = CASE state "
                       "WHEN 'closing' THEN 'failed' ELSE state END WHERE batch = ? "
                       "AND state != 'closed'", (code, batch))

    def close_out_of_balance(self, batch: int) -> int:
        """95 to 920000: the batch is uploaded next. One item per counted transaction, in
        the same transaction; the number of items."""
        with self.tx() as db:
            db.execute("UPDATE batch_closes SET state = 'uploading', first_code = '95', "
                       "last_code = '95' WHERE batch = ? AND state = 'closing'", (batch,))
            self._add_upload_items(db, batch)
            return int(db.execute("SELECT count(*) FROM batch_uploads WHERE batch = ?",
                                  (batch,)).fetchone()[0])

    def close_done(self, batch: int, *, code: str, balanced: bool, report: list[str],
                   now: datetime) -> bool:
        """The batch is closed: in one transaction the row turns `closed` with its Z report
        and the batch number advances (invoices start again at 1). False when it was
        closed already (nothing changes)."""
        with self.tx() as db:
            cur = db.execute(
                "UPDATE batch_closes SET state = 'closed', last_code = ?, balanced = ?, "
                "first_code = CASE first_code WHEN '' THEN ? ELSE first_code END, "
                "report = ?, finished = ? WHERE batch = ? AND state IN (?, ?, ?)",
                (code, int(balanced), code, json.dumps(report),
                 now.isoformat(timespec="seconds"), batch, *IN_PROGRESS))
            if cur.rowcount != 1:
                return False
            if self._meta("batch") == batch:
                self._set_meta("batch", batch % 999999 + 1)
                self._set_meta("invoice", 1)
            return True

    # -- the upload ----------------------------------------------------------------
    def _add_upload_items(self, db: sqlite3.Connection, batch: int) -> int:
        """An upload item for each counted transaction that has none; how many were added.
        The original's identity: the answered attempt (0200) or the advice (0220)."""
        rows = db.execute(
            "SELECT s.id, s.status, s.stan, s.rrn, s.approval, a.stan AS adv_stan, "
            f"a.f7 AS adv_f7 {_COUNTED} AND s.id NOT IN "
            "(SELECT sale_id FROM batch_uploads WHERE batch = ?) ORDER BY s.id",
            (batch, batch)).fetchall()
        for r in rows:
            if r["status"] == SaleStatus.APPROVED:
                att = db.execute("SELECT stan, f7 FROM attempts WHERE sale_id = ? AND stan = ? "
                                 "ORDER BY id DESC LIMIT 1", (r["id"], r["stan"])).fetchone()
                mti, stan, f7 = "0200", att["stan"] if att else r["stan"], att["f7"] if att else ""
            else:
                mti, stan, f7 = "0220", r["adv_stan"] or "", r["adv_f7"] or ""
            db.execute("INSERT INTO batch_uploads (batch, sale_id, orig_mti, orig_stan, "
                       "orig_f7, rrn, approval) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (batch, r["id"], mti, stan, f7, r["rrn"], r["approval"]))
        return len(rows)

    def upload_items(self, batch: int, *, pending_only: bool = True) -> list[UploadItem]:
        """The batch's upload items, oldest transaction first, each with its original's
        stored request fields (no card data: none is unsealed)."""
        sql = ("SELECT u.*, s.fields AS sale_fields, s.chip AS sale_chip FROM batch_uploads u JOIN "
               "sales s ON "
               "s.id = u.sale_id WHERE u.batch = ?")
        if pending_only:
            sql += " AND u.state = 'pending'"
        return [_item_from_row(r) for r in self.db.execute(sql + " ORDER BY u.sale_id",
                                                           (batch,))]

    def upload_finished(self, batch: int) -> bool:
        """Every item answered: the close goes on with 960000. False if one is pending."""
        with self.tx() as db:
            left = db.execute("SELECT count(*) FROM batch_uploads WHERE batch = ? AND "
                              "state = 'pending'", (batch,)).fetchone()[0]
            if left:
                return False
            db.execute("UPDATE batch_closes SET state = 'uploaded' WHERE batch = ? AND "
                       "state = 'uploading'", (batch,))
            return True

    # -- Z reports -----------------------------------------------------------------
    def z_printed(self, batch: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE batch_closes SET z_printed = 1 WHERE batch = ?", (batch,))

    def unprinted_z(self) -> list[BatchClose]:
        """Closed batches whose Z report never came out (a crash or a printer fault)."""
        return [_close_from_row(r) for r in self.db.execute(
            "SELECT * FROM batch_closes WHERE state = 'closed' AND z_printed = 0 "
            "ORDER BY batch")]


def close_in_progress(db: sqlite3.Connection) -> BatchClose | None:
    """A close cut short (the firmware's journal and JournalView alike)."""
    row = db.execute("SELECT * FROM batch_closes WHERE state IN (?, ?, ?) ORDER BY batch "
                     "LIMIT 1", IN_PROGRESS).fetchone()
    return _close_from_row(row) if row else None


def last_close(db: sqlite3.Connection) -> BatchClose | None:
    """The newest closed batch (the firmware's journal and JournalView alike)."""
    row = db.execute("SELECT * FROM batch_closes WHERE state = 'closed' "
                     "ORDER BY batch DESC LIMIT 1").fetchone()
    return _close_from_row(row) if row else None


def voided_count(db: sqlite3.Connection, batch: int) -> int:
    """Transactions of `batch` the operator voided."""
    return int(db.execute("SELECT count(*) FROM sales WHERE batch = ? AND voided = 1",
                          (batch,)).fetchone()[0])


def count_totals(db: sqlite3.Connection, batch: int) -> BatchTotals:
    """What a 0500 for `batch` carries, counted now (the journal and JournalView alike)."""
    row = db.execute(
        "SELECT coalesce(sum(s.kind = 'purchase'), 0), "
        "coalesce(sum(CASE WHEN s.kind = 'purchase' THEN s.amount ELSE 0 END), 0), "
        "coalesce(sum(s.kind = 'refund'), 0), "
        f"coalesce(sum(CASE WHEN s.kind = 'refund' THEN s.amount ELSE 0 END), 0) {_COUNTED}",
        (batch,)).fetchone()
    return BatchTotals(purchases=int(row[0]), purchase_amount=int(row[1]),
                       refunds=int(row[2]), refund_amount=int(row[3]))


def _close_from_row(row: sqlite3.Row) -> BatchClose:
    return BatchClose(
        batch=row["batch"], state=row["state"], scheduled=bool(row["scheduled"]),
        started=datetime.fromisoformat(row["started"]),
        finished=datetime.fromisoformat(row["finished"]) if row["finished"] else None,
        totals=BatchTotals(purchases=row["purchases"], purchase_amount=row["purchase_amount"],
                           refunds=row["refunds"], refund_amount=row["refund_amount"]),
        pcode=row["pcode"], stan=row["stan"], f7=row["f7"], written=bool(row["written"]),
        sent=row["sent"], first_code=row["first_code"], last_code=row["last_code"],
        balanced=None if row["balanced"] is None else bool(row["balanced"]),
        report=tuple(json.loads(row["report"])) if row["report"] else (),
        z_printed=bool(row["z_printed"]))


def _item_from_row(row: sqlite3.Row) -> UploadItem:
    return UploadItem(
        id=row["id"], batch=row["batch"], sale_id=row["sale_id"], orig_mti=row["orig_mti"],
        orig_stan=row["orig_stan"], orig_f7=row["orig_f7"], rrn=row["rrn"],
        approval=row["approval"], stan=row["stan"], f7=row["f7"], written=bool(row["written"]),
        state=row["state"], code=row["code"],
        fields={k: v for k, v in json.loads(row["sale_fields"]).items()
                if k not in ("2", "14", "35")},
        icc=json.loads(row["sale_chip"]).get("upload", "") if row["sale_chip"] else "",)
