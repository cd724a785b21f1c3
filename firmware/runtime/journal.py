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
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

from firmware.core.card import CardData
from firmware.core.iso import next_stan, stan_str
from firmware.core.model import SaleRecord, SaleStatus
from firmware.errors import JournalError, KeyStoreError
from firmware.runtime.vault import Vault

if TYPE_CHECKING:
    from firmware.core.risk import QueueStats

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
    copy_printed INTEGER NOT NULL DEFAULT 0
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
    attempt_id INTEGER NOT NULL REFERENCES attempts(id),
    reason TEXT NOT NULL,
    stan TEXT,
    f7 TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    last_code TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS advices (
    id INTEGER PRIMARY KEY,
    sale_id INTEGER NOT NULL UNIQUE REFERENCES sales(id),
    approval TEXT NOT NULL,
    stan TEXT,
    f7 TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    last_code TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS card_data (
    sale_id INTEGER PRIMARY KEY REFERENCES sales(id),
    blob BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Attempt:
    sale_id: int
    attempt_id: int
    stan: str
    f7: str


@dataclass(frozen=True)
class PendingReversal:
    id: int
    sale_id: int
    reason: str
    orig_stan: str
    orig_f7: str
    fields: dict[str, str]  # the original's fields, card data included (in memory only)
    stan: str | None
    f7: str | None
    tries: int


@dataclass(frozen=True)
class PendingAdvice:
    id: int
    sale_id: int
    approval: str
    fields: dict[str, str]  # the sale's fields, card data included (in memory only)
    stan: str | None
    f7: str | None
    tries: int


@dataclass(frozen=True)
class Recovery:
    reversed: list[SaleRecord]  # sent without an answer: now pending reversal
    closed: list[SaleRecord]  # never sent (or only busy answers): closed, not charged
    unprinted: list[SaleRecord]  # final, receipt not printed: print a copy


class Journal:
    def __init__(self, path: Path, vault: Vault) -> None:
        self.path = path
        self.vault = vault
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            with self.tx():
                for key, value in (("next_stan", "1"), ("batch", "1"), ("invoice", "1")):
                    self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {path} cannot be opened: {exc}") from None
        self._check_key()

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
        except KeyStoreError:
            raise KeyStoreError(
                f"the key file does not match the journal {self.path}: it is not the key its "
                "card data was sealed with. Restore the original key file; nothing was "
                "changed") from None

    @staticmethod
    def has_sealed_data(path: Path) -> bool:
        """True when an existing journal holds encrypted card data (the key is needed)."""
        if not path.exists():
            return False
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT count(*) FROM card_data").fetchone()
            finally:
                db.close()
        except sqlite3.DatabaseError:
            return False
        return bool(row and row[0])

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- counters -----------------------------------------------------------
    def _meta(self, key: str) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def _set_meta(self, key: str, value: int) -> None:
        self.db.execute("UPDATE meta SET value=? WHERE key=?", (str(value), key))

    def _take_stan(self) -> str:
        stan = self._meta("next_stan")
        self._set_meta("next_stan", next_stan(stan))
        return stan_str(stan)

    def allocate_stan(self) -> str:
        with self.tx():
            return self._take_stan()

    def peek_stan(self) -> str:
        return stan_str(self._meta("next_stan"))

    # -- sales ----------------------------------------------------------------
    def _create_sale(self, db: sqlite3.Connection, *, fields: dict[str, str], card: CardData,
                     kind: str, amount: int, currency: str, local: datetime,
                     status: str) -> tuple[int, dict[str, str]]:
        """Insert a sale (masked PAN) and its sealed card data; give it batch and invoice."""
        batch, invoice = self._meta("batch"), self._meta("invoice")
        self._set_meta("invoice", invoice % 999999 + 1)
        fixed = {**fields, "60": f"{batch:06d}", "62": f"{invoice:06d}"}
        public = {k: v for k, v in fixed.items() if k not in ("2", "14", "35")}
        cur = db.execute(
            "INSERT INTO sales (local, kind, amount, currency, pan_masked, status, "
            "batch, invoice, fields) VALUES (?,?,?,?,?,?,?,?,?)",
            (local.isoformat(timespec="seconds"), kind, amount, currency, card.masked,
             status, batch, invoice, json.dumps(public)))
        sale_id = int(cur.lastrowid or 0)
        secret = json.dumps({"2": card.pan, "14": card.expiry}).encode()
        db.execute("INSERT INTO card_data VALUES (?, ?)",
                   (sale_id, self.vault.seal(f"sale:{sale_id}", secret)))
        return sale_id, fixed

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

    # -- offline ----------------------------------------------------------------
    def record_offline(self, sale_id: int | None, *, approved: bool, reason: str,
                       fields: dict[str, str], card: CardData, kind: str, amount: int,
                       currency: str, local: datetime) -> SaleRecord:
        """An offline decision in one transaction: approved means the sale, its advice
        and its sealed card data; refused means the sale closed with its reason."""
        from firmware.core.risk import offline_code

        with self.tx() as db:
            if sale_id is None:
                sale_id, _ = self._create_sale(
                    db, fields=fields, card=card, kind=kind, amount=amount, currency=currency,
                    local=local, status=SaleStatus.AUTHORIZING)
            if approved:
                code = offline_code(sale_id)
                db.execute("UPDATE sales SET status=?, approval=?, reason=?, stan='' "
                           "WHERE id=?", (SaleStatus.OFFLINE_APPROVED, code, reason, sale_id))
                db.execute("INSERT INTO advices (sale_id, approval) VALUES (?, ?)",
                           (sale_id, code))
            else:
                db.execute("UPDATE sales SET status=?, reason=? WHERE id=?",
                           (SaleStatus.FAILED, reason, sale_id))
                self._forget_card(db, sale_id)
        return self.sale(sale_id)

    def pending_advices(self, limit: int | None = None) -> list[PendingAdvice]:
        sql = "SELECT * FROM advices WHERE state='pending' ORDER BY id"
        rows = self.db.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        return [PendingAdvice(id=r["id"], sale_id=r["sale_id"], approval=r["approval"],
                              fields=self.sale_fields(r["sale_id"]), stan=r["stan"], f7=r["f7"],
                              tries=r["tries"]) for r in rows]

    def advice_identity(self, adv_id: int, f7: str) -> tuple[str, str]:
        """Give an advice its own STAN and field 7 at its first send (persisted first)."""
        with self.tx() as db:
            row = db.execute("SELECT stan, f7 FROM advices WHERE id=?", (adv_id,)).fetchone()
            if row["stan"]:
                return row["stan"], row["f7"]
            stan = self._take_stan()
            db.execute("UPDATE advices SET stan=?, f7=? WHERE id=?", (stan, f7, adv_id))
            return stan, f7

    def advice_tried(self, adv_id: int, code: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE advices SET tries=tries+1, last_code=? WHERE id=?",
                       (code, adv_id))

    def advice_done(self, adv_id: int, code: str) -> None:
        """The host accepted (00) or refused (any final code) the advice: card data goes."""
        with self.tx() as db:
            state = "accepted" if code == "00" else "refused"
            db.execute("UPDATE advices SET state=?, tries=tries+1, last_code=? WHERE id=?",
                       (state, code, adv_id))
            sale_id = db.execute("SELECT sale_id FROM advices WHERE id=?",
                                 (adv_id,)).fetchone()[0]
            if state == "refused":
                db.execute("UPDATE sales SET status=?, response_code=?, reason=? WHERE id=?",
                           (SaleStatus.OFFLINE_REFUSED, code, "REFUSED BY HOST", sale_id))
            db.execute("DELETE FROM card_data WHERE sale_id=?", (sale_id,))

    def queue_stats(self) -> QueueStats:
        from firmware.core.risk import QueueStats

        row = self.db.execute(
            "SELECT count(*), coalesce(sum(s.amount), 0), min(s.local) FROM advices a "
            "JOIN sales s ON s.id = a.sale_id WHERE a.state='pending'").fetchone()
        refused = self.db.execute("SELECT count(*) FROM advices WHERE state='refused'"
                                  ).fetchone()[0]
        reversals = self.db.execute("SELECT count(*) FROM reversals WHERE state='pending'"
                                    ).fetchone()[0]
        oldest = datetime.fromisoformat(row[2]) if row[2] else None
        return QueueStats(count=row[0], total=row[1], oldest=oldest, refused=refused,
                          reversals=reversals)

    def refused_advices(self) -> list[SaleRecord]:
        rows = self.db.execute("SELECT s.* FROM advices a JOIN sales s ON s.id = a.sale_id "
                               "WHERE a.state='refused' ORDER BY a.id").fetchall()
        return [_record(r) for r in rows]

    def queued_sales(self) -> list[SaleRecord]:
        rows = self.db.execute("SELECT s.* FROM advices a JOIN sales s ON s.id = a.sale_id "
                               "WHERE a.state='pending' ORDER BY a.id").fetchall()
        return [_record(r) for r in rows]

    def sale_fields(self, sale_id: int) -> dict[str, str]:
        """The sale's fixed request fields, card data unsealed (memory only)."""
        row = self.db.execute("SELECT fields FROM sales WHERE id=?", (sale_id,)).fetchone()
        fields: dict[str, str] = json.loads(row["fields"])
        blob = self.db.execute("SELECT blob FROM card_data WHERE sale_id=?",
                               (sale_id,)).fetchone()
        if blob is not None:
            fields.update(json.loads(self.vault.unseal(f"sale:{sale_id}", blob["blob"])))
        return fields

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

    def _reverse(self, db: sqlite3.Connection, sale_id: int, attempt_id: int,
                 reason: str) -> None:
        db.execute("UPDATE attempts SET state='unknown' WHERE id=?", (attempt_id,))
        db.execute("UPDATE sales SET status=?, reason='NO RESPONSE' WHERE id=?",
                   (SaleStatus.NOT_COMPLETED, sale_id))
        db.execute("INSERT INTO reversals (sale_id, attempt_id, reason) VALUES (?,?,?)",
                   (sale_id, attempt_id, reason))

    def close_sale(self, sale_id: int, reason: str) -> SaleRecord:
        with self.tx() as db:
            db.execute("UPDATE sales SET status=?, reason=? WHERE id=? AND status=?",
                       (SaleStatus.FAILED, reason, sale_id, SaleStatus.AUTHORIZING))
            self._forget_card(db, sale_id)
        return self.sale(sale_id)

    def mark_printed(self, sale_id: int, *, copy: bool = False) -> None:
        with self.tx() as db:
            col = "copy_printed" if copy else "receipt_printed"
            db.execute(f"UPDATE sales SET {col}=1, receipt_printed=1 WHERE id=?", (sale_id,))

    def _forget_card(self, db: sqlite3.Connection, sale_id: int) -> None:
        busy = db.execute("SELECT count(*) FROM reversals WHERE sale_id=? AND state='pending'",
                          (sale_id,)).fetchone()[0]
        if not busy:
            db.execute("DELETE FROM card_data WHERE sale_id=?", (sale_id,))

    def sale(self, sale_id: int) -> SaleRecord:
        row = self.db.execute("SELECT * FROM sales WHERE id=?", (sale_id,)).fetchone()
        return _record(row)

    def last_sale(self) -> SaleRecord | None:
        row = self.db.execute("SELECT * FROM sales ORDER BY id DESC LIMIT 1").fetchone()
        return _record(row) if row else None

    # -- reversals ------------------------------------------------------------
    def pending_reversals(self) -> list[PendingReversal]:
        rows = self.db.execute(
            "SELECT r.*, a.stan AS orig_stan, a.f7 AS orig_f7 FROM reversals r "
            "JOIN attempts a ON a.id = r.attempt_id WHERE r.state='pending' ORDER BY r.id"
        ).fetchall()
        return [PendingReversal(id=r["id"], sale_id=r["sale_id"], reason=r["reason"],
                                orig_stan=r["orig_stan"], orig_f7=r["orig_f7"],
                                fields=self.sale_fields(r["sale_id"]), stan=r["stan"],
                                f7=r["f7"], tries=r["tries"]) for r in rows]

    def pending_reversal_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM reversals WHERE state='pending' ORDER BY id")]

    def reversal_tries(self, rev_id: int) -> int:
        return int(self.db.execute("SELECT tries FROM reversals WHERE id=?",
                                   (rev_id,)).fetchone()[0])

    def reversal_identity(self, rev_id: int, f7: str) -> tuple[str, str]:
        """Give a reversal its own STAN and field 7 at its first send (persisted first)."""
        with self.tx() as db:
            row = db.execute("SELECT stan, f7 FROM reversals WHERE id=?", (rev_id,)).fetchone()
            if row["stan"]:
                return row["stan"], row["f7"]
            stan = self._take_stan()
            db.execute("UPDATE reversals SET stan=?, f7=? WHERE id=?", (stan, f7, rev_id))
            return stan, f7

    def reversal_tried(self, rev_id: int, code: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE reversals SET tries=tries+1, last_code=? WHERE id=?",
                       (code, rev_id))

    def reversal_done(self, rev_id: int, code: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE reversals SET state='done', tries=tries+1, last_code=? "
                       "WHERE id=?", (code, rev_id))
            sale_id = db.execute("SELECT sale_id FROM reversals WHERE id=?",
                                 (rev_id,)).fetchone()[0]
            self._forget_card(db, sale_id)

    # -- recovery -------------------------------------------------------------
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
        unprinted = [_record(r) for r in self.db.execute(
            "SELECT * FROM sales WHERE receipt_printed=0 AND status IN (?,?,?)",
            (SaleStatus.APPROVED, SaleStatus.DECLINED, SaleStatus.OFFLINE_APPROVED))]
        return Recovery([self.sale(i) for i in reversed_], [self.sale(i) for i in closed],
                        unprinted)

    def counts(self) -> dict[str, Any]:
        rev = self.db.execute("SELECT count(*) FROM reversals WHERE state='pending'").fetchone()
        return {"pending_reversals": rev[0]}


def _record(row: sqlite3.Row) -> SaleRecord:
    return SaleRecord(
        sale_id=row["id"], kind=row["kind"], amount=row["amount"],
        pan_masked=row["pan_masked"], local=datetime.fromisoformat(row["local"]),
        status=row["status"], response_code=row["response_code"], approval=row["approval"],
        rrn=row["rrn"], stan=row["stan"], batch=row["batch"], invoice=row["invoice"],
        reason=row["reason"], receipt_printed=bool(row["receipt_printed"]),
    )
