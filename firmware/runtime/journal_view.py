"""The journal read-only: what `posterm status` reads, whether the firmware runs or not.

`JournalView` opens the journal with SQLite's read-only URI (`mode=ro`): it never
writes, creates, migrates or locks anything, so it can read the journal of a running
firmware (WAL: readers never wait for the writer) or of a stopped one, in any
thread. Its reads are the journal modules' own (the queues, the last sale, the
batch's totals and closes), given this connection: the journal modules are the one
owner of the schema, and nothing outside them writes SQL against its tables.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from firmware.core.risk import QueueStats
from firmware.runtime import journal_base, journal_batch, journal_queues


# -- what it reads, as `posterm status` shows it (status.py's record holds them) ------
@dataclass(frozen=True)
class Queue:
    """The store-and-forward queues and the card data waiting with them."""

    reversals: int = 0
    advices: int = 0
    advices_amount: int = 0
    oldest_advice_age_seconds: int | None = None
    card_data_records: int = 0
    unsendable: int = 0
    refused: int = 0  # offline sales the host refused: unpaid

    @classmethod
    def of(cls, stats: QueueStats, card_data_records: int = 0,
           now: datetime | None = None) -> Queue:
        age = None
        if stats.oldest is not None:
            age = int(((now or datetime.now()) - stats.oldest).total_seconds())
        return cls(reversals=stats.reversals, advices=stats.count, advices_amount=stats.total,
                   oldest_advice_age_seconds=age, card_data_records=card_data_records,
                   unsendable=stats.unsendable, refused=stats.refused)


@dataclass(frozen=True)
class LastSale:
    id: int
    time: str
    outcome: str
    amount: int
    currency: str
    pan: str  # masked
    response_code: str


@dataclass(frozen=True)
class Closing:
    batch: int
    state: str


@dataclass(frozen=True)
class LastClose:
    batch: int
    time: str
    code: str
    balanced: bool


@dataclass(frozen=True)
class Batch:
    """The open batch's totals (what its 0500 would carry), a close in progress, the last
    close."""

    open: int
    purchases: int
    purchase_amount: int
    refunds: int
    refund_amount: int
    voids: int
    close_in_progress: Closing | None = None
    last_close: LastClose | None = None



class JournalView:
    """The journal opened read-only. Raises sqlite3.Error when it cannot be read."""

    def __init__(self, path: Path, *, timeout: float = 2.0) -> None:
        self.path = path
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        # the journal's own small page cache: the running terminal opens a view for each
        # `posterm status` and each fleet telemetry, in a worker thread, and the quick
        # check reads every page; SQLite's default 2 MiB stayed in that thread's heap
        self.db.execute(f"PRAGMA cache_size=-{journal_base.CACHE_KIB}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> JournalView:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def integrity(self) -> str:
        """SQLite's quick check: "ok", or what is wrong."""
        return str(self.db.execute("PRAGMA quick_check").fetchone()[0])

    def queue(self) -> Queue:
        return Queue.of(journal_queues.queue_stats(self.db),
                        journal_base.card_data_records(self.db))

    def last_sale(self) -> LastSale | None:
        rec = journal_base.last_sale(self.db)
        if rec is None:
            return None
        row = self.db.execute("SELECT currency FROM sales WHERE id=?", (rec.sale_id,)).fetchone()
        return LastSale(id=rec.sale_id, time=rec.local.isoformat(), outcome=rec.status,
                        amount=rec.amount, currency=str(row[0]), pan=rec.pan_masked,
                        response_code=rec.response_code)

    def batch(self) -> Batch | None:
        """The open batch, the close in progress and the last close; None for a journal
        from a release without batches."""
        try:
            number = journal_base.meta_number(self.db, "batch")
            t = journal_batch.count_totals(self.db, number)
            voids = journal_batch.voided_count(self.db, number)
            closing = journal_batch.close_in_progress(self.db)
            last = journal_batch.last_close(self.db)
        except (sqlite3.Error, TypeError, ValueError):
            return None
        return Batch(open=number, purchases=t.purchases, purchase_amount=t.purchase_amount,
                     refunds=t.refunds, refund_amount=t.refund_amount, voids=voids,
                     close_in_progress=Closing(closing.batch, closing.state) if closing
                     else None,
                     last_close=LastClose(last.batch, last.finished.isoformat() if
                                          last.finished else "", last.last_code,
                                          bool(last.balanced)) if last else None)
