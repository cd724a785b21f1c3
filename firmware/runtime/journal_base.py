"""The journal's foundation: the SQLite file, its schema, counters and sale rows.

SQLite in WAL mode with synchronous=FULL: a committed transaction survives a
power cut. Every write the firmware's safety depends on is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from firmware.core.card import CardData
from firmware.core.emv.steps import ChipData
from firmware.runtime.journal_chip import SEALED, chip_json, chip_view
from firmware.core.iso import next_stan, stan_str
from firmware.core.model import SaleRecord, SaleStatus
from firmware.errors import JournalError, KeyStoreError
from firmware.runtime.vault import Vault

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sales (
    id INTEGER PRIMARY KEY,
    local TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    pan_masked TEXT NOT NULL,
    status TEXT NOT NULL,
    response_code TEXT NOT NULL DEFAULT '',
    approval TEXT NOT NULL DEFAULT '',
    rrn TEXT NOT NULL DEFAULT '',
    stan TEXT NOT NULL DEFAULT '',
    batch INTEGER NOT NULL,
    invoice INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    fields TEXT NOT NULL,
    receipt_printed INTEGER NOT NULL DEFAULT 0,
    copy_printed INTEGER NOT NULL DEFAULT 0,
    result_shown INTEGER NOT NULL DEFAULT 0,
    voided INTEGER NOT NULL DEFAULT 0,
    pan_hash TEXT NOT NULL DEFAULT '',
    chip TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    sale_id INTEGER NOT NULL REFERENCES sales(id),
    stan TEXT NOT NULL,
    f7 TEXT NOT NULL,
    state TEXT NOT NULL,
    response_code TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS reversals (
    id INTEGER PRIMARY KEY,
    sale_id INTEGER NOT NULL REFERENCES sales(id),
    attempt_id INTEGER REFERENCES attempts(id),
    reason TEXT NOT NULL,
    stan TEXT,
    f7 TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    last_code TEXT NOT NULL DEFAULT '',
    written INTEGER NOT NULL DEFAULT 0,
    orig_mti TEXT NOT NULL DEFAULT '0200',
    orig_stan TEXT,
    orig_f7 TEXT,
    orig_rrn TEXT NOT NULL DEFAULT '',
    icc TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS advices (
    id INTEGER PRIMARY KEY,
    sale_id INTEGER NOT NULL UNIQUE REFERENCES sales(id),
    approval TEXT NOT NULL,
    stan TEXT,
    f7 TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    last_code TEXT NOT NULL DEFAULT '',
    written INTEGER NOT NULL DEFAULT 0,
    announced INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS card_data (
    sale_id INTEGER PRIMARY KEY REFERENCES sales(id),
    blob BLOB NOT NULL
);
"""

# Columns added after the first release: (table, column, definition, backfill for
# the rows already there). A journal from an older release gets them at open.
MIGRATIONS = (
    # old releases told the merchant every outcome on screen and printed no slip
    # for sales that were not completed: nothing to announce or print again
    ("sales", "result_shown", "INTEGER NOT NULL DEFAULT 0",
     "UPDATE sales SET result_shown=1, receipt_printed=CASE WHEN status IN "
     "('NOT_COMPLETED', 'FAILED', 'OFFLINE_REFUSED') THEN 1 ELSE receipt_printed END"),
    # old releases wrote a reversal or advice right after giving it its STAN
    ("reversals", "written", "INTEGER NOT NULL DEFAULT 0",
     "UPDATE reversals SET written=1 WHERE stan IS NOT NULL"),
    ("advices", "written", "INTEGER NOT NULL DEFAULT 0",
     "UPDATE advices SET written=1 WHERE stan IS NOT NULL"),
    # refusals an old release only counted in a menu: announce them once now
    ("advices", "announced", "INTEGER NOT NULL DEFAULT 0", "SELECT 1"),
    # the merchant's day: voids (a reversals row with reason 17, sales.voided) and the
    # duplicate guard's keyed PAN hash; old sales have none (nothing to compare them with)
    ("sales", "voided", "INTEGER NOT NULL DEFAULT 0", "SELECT 1"),
    ("sales", "pan_hash", "TEXT NOT NULL DEFAULT ''", "SELECT 1"),
    # the original a void names in field 90 (a void of an accepted advice has no attempt;
    # reversals of a sale's attempt keep taking them from the attempt: NULL here)
    ("reversals", "orig_mti", "TEXT NOT NULL DEFAULT '0200'", "SELECT 1"),
    ("reversals", "orig_stan", "TEXT", "SELECT 1"),
    ("reversals", "orig_f7", "TEXT", "SELECT 1"),
    ("reversals", "orig_rrn", "TEXT NOT NULL DEFAULT ''", "SELECT 1"),
    # chip sales (journal_chip.py); a reversal after the card declined carries its AAC
    ("sales", "chip", "TEXT NOT NULL DEFAULT ''", "SELECT 1"),
    ("reversals", "icc", "TEXT NOT NULL DEFAULT ''", "SELECT 1"),
)

# Tables added after the first release: (table, statements creating it). A journal
# from an older release gets them at open, in one transaction.
TABLE_MIGRATIONS = (
    # the durable print queue (firmware/runtime/printqueue.py): receipts and slips the
    # printer could not print (paper out, cover open, offline), as the rendered lines
    # that go on paper (card numbers masked, first 6 and last 4, never track data),
    # printed and deleted once the printer is ready again. At most one job per kind and
    # sale; kind is "sale" (the receipt or not-charged slip), "recovery" (a copy printed
    # after a restart) or "refused" (the slip of a refused offline sale).
    ("print_queue", (
        "CREATE TABLE IF NOT EXISTS print_queue ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " sale_id INTEGER REFERENCES sales(id),"
        " created TEXT NOT NULL,"
        " lines TEXT NOT NULL,"
        " tries INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT NOT NULL DEFAULT '')",
        "CREATE UNIQUE INDEX IF NOT EXISTS print_queue_job ON print_queue (kind, sale_id)",
    )),
)


# SQLite's page cache for the journal's connection, in KiB (PRAGMA cache_size). The
# default (2 MiB) fills as the journal grows and stays allocated: the process grew by
# megabytes over thousands of sales. What a sale touches (the last pages of a few tables,
# their indexes, the meta row) fits in a fraction of this; older pages come back from the
# kernel's file cache when a report or a recovery reads them.
CACHE_KIB = 256
IN_HAND = "sale_in_hand"  # note: a sale keyed in and not yet journaled ("kind amount")


class JournalBase:
    def __init__(self, path: Path, vault: Vault) -> None:
        self.path = path
        self.vault = vault
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._durable = True  # the connection's synchronous mode: FULL (True) or NORMAL
            self._cache: dict[str, int] = {}  # meta values and invoice counters (see _meta)
            self._in_hand_noted = True  # a sale-in-hand note may be in the journal (in_hand)
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")  # one fsync, not 30
            self._migrate()
            with self.tx():
                for key, value in (("next_stan", "1"), ("batch", "1"), ("invoice", "1")):
                    self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {path} cannot be opened: {exc}") from None
        self._check_key()

    def _migrate(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master "
                                                "WHERE type='table'")}
        for table, statements in TABLE_MIGRATIONS:
            if table in tables:
                continue
            with self.tx() as db:
                for statement in statements:
                    db.execute(statement)
        for table, column, definition, backfill in MIGRATIONS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column in have:
                continue
            with self.tx() as db:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                db.execute(backfill)
        self._relax_reversal_attempt()

    def _relax_reversal_attempt(self) -> None:
        """Old journals made reversals.attempt_id NOT NULL; a void of an advice the host
        accepted has no attempt. SQLite cannot drop a NOT NULL: the table is rebuilt with
        the current definition, rows and ids kept, in one transaction."""
        cols = list(self.db.execute("PRAGMA table_info(reversals)"))
        if not any(c["name"] == "attempt_id" and c["notnull"] for c in cols):
            return
        names = ", ".join(c["name"] for c in cols)
        create = SCHEMA.split("CREATE TABLE IF NOT EXISTS reversals ", 1)[1].split(";", 1)[0]
        with self.tx() as db:
            db.execute(f"CREATE TABLE reversals_new {create}")
            db.execute(f"INSERT INTO reversals_new ({names}) SELECT {names} FROM reversals")
            db.execute("DROP TABLE reversals")
            db.execute("ALTER TABLE reversals_new RENAME TO reversals")

    def _check_key(self) -> None:
        """Refuse a key that is not the one the stored card data was sealed with."""
        row = self.db.execute("SELECT value FROM meta WHERE key='key_check'").fetchone()
        if row is None or self.vault.created:
            blob = self.vault.seal("meta:key_check", b"posterm key check").hex()
            with self.tx() as db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('key_check', ?)", (blob,))
            return
        try:
            self.vault.unseal("meta:key_check", bytes.fromhex(row["value"]))
        except (KeyStoreError, ValueError):
            stored = self.db.execute("SELECT count(*) FROM card_data").fetchone()[0]
            if stored:
                raise KeyStoreError(
                    f"the key file does not match the journal {self.path}: it is not the key "
                    f"its card data ({stored} record(s) waiting for the host) was sealed "
                    "with. Restore the original key file; nothing was changed") from None
            raise KeyStoreError(
                f"the key file is not the one the journal {self.path} was set up with. No "
                "card data is stored right now, so nothing would be lost: restore the "
                "original key file, or delete this key file to have a new one made at the "
                "next start. Nothing was changed") from None

    @staticmethod
    def has_sealed_data(path: Path) -> bool:
        """True when an existing journal holds encrypted card data (the key is needed).

        Opens the file read-only; a file that exists but is not a readable journal
        is a JournalError here, before anything else (a key file) is created."""
        if not path.exists():
            return False
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
                row = db.execute("SELECT count(*) FROM card_data").fetchone() \
                    if "card_data" in tables else (0,)
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {path} cannot be opened: {exc}; nothing was "
                               "changed (restore it from a backup, or move it away to "
                               "start an empty journal)") from None
        return bool(row and row[0])

    def close(self) -> None:
        self.db.close()

    def note(self, key: str) -> str:
        """A free-form fact kept in the journal (e.g. the day of the last daily restart)."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (f"note:{key}",)).fetchone()
        return str(row[0]) if row else ""

    def set_note(self, key: str, value: str, *, durable: bool = True) -> None:
        """Keep a note ("" deletes it); `durable=False`: no fsync of its own (`tx`)."""
        with self.tx(durable=durable) as db:
            if value:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"note:{key}", value))
            else:
                db.execute("DELETE FROM meta WHERE key=?", (f"note:{key}",))

    def in_hand(self, kind: str, amount: int) -> None:
        """A sale's amount is confirmed and the terminal waits for the card: a cheap note
        (no fsync, no card data) that the first write of the sale itself deletes, so that a
        terminal stopped in between can say LAST SALE NOT DONE at its next start. Called
        with amount 0 when the sale ends before it reached the journal."""
        self.set_note(IN_HAND, f"{kind} {amount}" if amount else "", durable=False)
        self._in_hand_noted = bool(amount)

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (a clean stop leaves one file behind)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    @contextmanager
    def tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction. Durable (the default): its COMMIT returns once the WAL is on
        disk (synchronous=FULL), as every write of the order of durable writes needs.

        `durable=False` is for facts whose loss in a power cut costs only a repeat: the
        result was shown (a "LAST SALE" notice shown again), the receipt was printed (a
        copy printed again). The commit is written to the WAL without an fsync of its
        own (synchronous=NORMAL): it survives a crash of the process like any other, and
        the next durable commit's fsync takes it to disk with itself (the WAL is one
        file, synced whole). The mode is switched only when it changes, so a sale
        costs one PRAGMA each way."""
        if durable != self._durable:
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self._cache.clear()  # values read or set inside are rolled back with it
            self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self._cache.clear()
            raise

    def _meta(self, key: str) -> int:
        """A counter of the meta table. This connection is the journal's only writer (the
        state directory is locked for the life of the process), so values are kept in
        memory once read; a rolled-back transaction drops them (`tx`)."""
        value = self._cache.get(key)
        if value is None:
            value = meta_number(self.db, key)
            self._cache[key] = value
        return value

    def _set_meta(self, key: str, value: int) -> None:
        self.db.execute("UPDATE meta SET value=? WHERE key=?", (str(value), key))
        if key == "batch":  # a new batch counts its invoices from its own sales
            for old in [k for k in self._cache if k.startswith("invoice:")]:
                del self._cache[old]
        self._cache[key] = value

    def _next_invoice(self, db: sqlite3.Connection, batch: int) -> int:
        """The open batch's next invoice number (1, 2, ... in each batch), counted in
        memory after the first look at the sales table."""
        key = f"invoice:{batch}"
        invoice = self._cache.get(key)
        if invoice is None:
            invoice = int(db.execute("SELECT coalesce(max(invoice), 0) + 1 FROM sales WHERE "
                                     "batch=?", (batch,)).fetchone()[0])
        self._cache[key] = invoice + 1
        return invoice

    def _take_stan(self) -> str:
        stan = self._meta("next_stan")
        self._set_meta("next_stan", next_stan(stan))
        return stan_str(stan)

    def allocate_stan(self) -> str:
        with self.tx():
            return self._take_stan()

    def peek_stan(self) -> str:
        return stan_str(self._meta("next_stan"))

    def _create_sale(self, db: sqlite3.Connection, *, fields: dict[str, str], card: CardData,
                     kind: str, amount: int, currency: str, local: datetime,
                     status: str, stan: str = "",
                     chip: ChipData | None = None) -> tuple[int, dict[str, str]]:
        """Insert a sale (masked PAN, keyed PAN hash, the STAN of its first 0200 if it has
        one) and its sealed card data; give it the open batch and that batch's next
        invoice number (1, 2, ... in each batch), which its 0200 or 0220 carries in fields
        60 and 62."""
        batch = self._meta("batch")
        invoice = self._next_invoice(db, batch)
        fixed = {**fields, "60": f"{batch:06d}", "62": f"{invoice:06d}"}
        public = {k: v for k, v in fixed.items() if k not in SEALED}
        cur = db.execute(
            "INSERT INTO sales (local, kind, amount, currency, pan_masked, status, "
            "batch, invoice, fields, pan_hash, stan, chip) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (local.isoformat(timespec="seconds"), kind, amount, currency, card.masked,
             status, batch, invoice, json.dumps(public), self.vault.pan_hash(card.pan),
             stan, chip_json(fields.get("22", ""), chip)))
        sale_id = int(cur.lastrowid or 0)
        if self._in_hand_noted:  # the sale is in the journal: the note has served (in_hand)
            db.execute("DELETE FROM meta WHERE key=?", (f"note:{IN_HAND}",))
            self._in_hand_noted = False
        # the card data and, for a chip sale, its field 55 (the cryptogram an advice or a
        # busy retry must send again): sealed, and deleted once nothing pending needs them
        secret = json.dumps({"2": card.pan, "14": card.expiry,
                             **({"55": fixed["55"]} if "55" in fixed else {})}).encode()
        db.execute("INSERT INTO card_data VALUES (?, ?)",
                   (sale_id, self.vault.seal(f"sale:{sale_id}", secret)))
        return sale_id, fixed

    def sale_fields(self, sale_id: int) -> dict[str, str]:
        """The sale's fixed request fields, card data unsealed (memory only)."""
        row = self.db.execute("SELECT fields FROM sales WHERE id=?", (sale_id,)).fetchone()
        fields: dict[str, str] = json.loads(row["fields"])
        blob = self.db.execute("SELECT blob FROM card_data WHERE sale_id=?",
                               (sale_id,)).fetchone()
        if blob is not None:
            fields.update(json.loads(self.vault.unseal(f"sale:{sale_id}", blob["blob"])))
        return fields

    def _reverse(self, db: sqlite3.Connection, sale_id: int, attempt_id: int,
                 reason: str) -> None:
        db.execute("UPDATE attempts SET state='unknown' WHERE id=?", (attempt_id,))
        db.execute("UPDATE sales SET status=?, reason='NO RESPONSE' WHERE id=?",
                   (SaleStatus.NOT_COMPLETED, sale_id))
        db.execute("INSERT INTO reversals (sale_id, attempt_id, reason) VALUES (?,?,?)",
                   (sale_id, attempt_id, reason))

    def _forget_card(self, db: sqlite3.Connection, sale_id: int) -> None:
        """Delete a sale's sealed card data unless a reversal or advice still needs it."""
        if not queued(db, "pending", sale_id):
            db.execute("DELETE FROM card_data WHERE sale_id=?", (sale_id,))

    def sale(self, sale_id: int) -> SaleRecord:
        row = self.db.execute("SELECT * FROM sales WHERE id=?", (sale_id,)).fetchone()
        return record_from_row(row)

    def last_sale(self) -> SaleRecord | None:
        return last_sale(self.db)


def last_sale(db: sqlite3.Connection) -> SaleRecord | None:
    """The newest sale (the firmware's journal and JournalView alike)."""
    row = db.execute("SELECT * FROM sales ORDER BY id DESC LIMIT 1").fetchone()
    return record_from_row(row) if row else None


def queued(db: sqlite3.Connection, state: str, sale_id: int | None = None) -> int:
    """Reversals, voids and advices in `state` ("pending", "unsendable"), of one sale when
    `sale_id` is given: the two queue tables counted together."""
    where = "state=?" if sale_id is None else "state=? AND sale_id=?"
    args = (state,) if sale_id is None else (state, sale_id)
    return int(db.execute(f"SELECT (SELECT count(*) FROM reversals WHERE {where}) + "
                          f"(SELECT count(*) FROM advices WHERE {where})",
                          args * 2).fetchone()[0])


def card_data_records(db: sqlite3.Connection) -> int:
    """Sealed card data waiting for the host (the key file is needed while any is)."""
    return int(db.execute("SELECT count(*) FROM card_data").fetchone()[0])


def meta_number(db: sqlite3.Connection, key: str) -> int:
    """A counter of the meta table, read now (a view's read; the journal caches them)."""
    return int(db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])


def record_from_row(row: sqlite3.Row) -> SaleRecord:
    return SaleRecord(
        sale_id=row["id"], kind=row["kind"], amount=row["amount"],
        pan_masked=row["pan_masked"], local=datetime.fromisoformat(row["local"]),
        status=row["status"], response_code=row["response_code"], approval=row["approval"],
        rrn=row["rrn"], stan=row["stan"], batch=row["batch"], invoice=row["invoice"],
        reason=row["reason"], receipt_printed=bool(row["receipt_printed"]),
        voided=bool(row["voided"]), pan_hash=row["pan_hash"],
        **chip_view(row["chip"] if "chip" in row.keys() else ""),
    )
