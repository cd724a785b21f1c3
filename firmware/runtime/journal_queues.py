"""The journal's store-and-forward part: pending reversals and offline advices.

Each reversal or advice gets its own STAN and field 7 at its first send, and
they are journaled before that send, so a repeat (0401, 0221) after a crash
carries exactly the same identity. The sealed card data a queue entry needs is
deleted as soon as nothing pending needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmware.core.card import CardData
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.risk import QueueStats, offline_code
from firmware.runtime.journal_base import record_from_row
from firmware.runtime.journal_void import VOID_REASON, VoidStore


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
    written: bool = False  # a transmission was written: the next one is a 0401
    orig_mti: str = "0200"  # the original's first transmission: 0200, or 0220 (a void)
    orig_rrn: str = ""  # field 37 of the original's answer, when known (a void)

    @property
    def is_void(self) -> bool:
        """A void the operator asked for (reason 17), not a reversal of an unknown outcome."""
        return self.reason == VOID_REASON


@dataclass(frozen=True)
class PendingAdvice:
    id: int
    sale_id: int
    approval: str
    fields: dict[str, str]  # the sale's fields, card data included (in memory only)
    stan: str | None
    f7: str | None
    tries: int
    written: bool = False  # a transmission was written: the next one is a 0221


class QueueStore(VoidStore):
    def record_offline(self, sale_id: int | None, *, approved: bool, reason: str,
                       fields: dict[str, str], card: CardData, kind: str, amount: int,
                       currency: str, local: datetime) -> SaleRecord:
        """An offline decision in one transaction: approved means the sale, its advice
        and its sealed card data; refused means the sale closed with its reason."""
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
                              tries=r["tries"], written=bool(r["written"])) for r in rows]

    def pending_advice_ids(self, limit: int) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM advices WHERE state='pending' ORDER BY id LIMIT ?", (limit,))]

    def advice_written(self, adv_id: int) -> None:
        """The advice's first transmission is out: every later one is a 0221."""
        with self.tx() as db:
            db.execute("UPDATE advices SET written=1 WHERE id=? AND written=0", (adv_id,))

    def advice_identity(self, adv_id: int, f7: str) -> tuple[str, str, bool]:
        """Give an advice its own STAN and field 7 at its first send (persisted first);
        with them, whether a transmission of it was ever written (read now, not earlier)."""
        with self.tx() as db:
            row = db.execute("SELECT stan, f7, written FROM advices WHERE id=?",
                             (adv_id,)).fetchone()
            if row["stan"]:
                return row["stan"], row["f7"], bool(row["written"])
            stan = self._take_stan()
            db.execute("UPDATE advices SET stan=?, f7=? WHERE id=?", (stan, f7, adv_id))
            return stan, f7, False

    def unsendable(self, table: str, item_id: int, why: str) -> None:
        """A reversal or advice whose message cannot be built (a journal from a release with
        a bad configuration): out of the queue, kept, reported; it never blocks the rest."""
        assert table in ("reversals", "advices")
        with self.tx() as db:
            db.execute(f"UPDATE {table} SET state='unsendable', last_code=? WHERE id=?",
                       (why[:200], item_id))

    def advice_tried(self, adv_id: int, code: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE advices SET tries=tries+1, last_code=? WHERE id=?",
                       (code, adv_id))

    def advice_done(self, adv_id: int, code: str, rrn: str = "") -> None:
        """The host accepted (00) or refused (any final code) the advice: card data goes.
        An accepted advice's field 37 is kept on the sale (a void or the batch upload names
        it). An advice voided while its answer was on the way stays voided: its void (a
        0400 reason 17 naming it) settles it with the host."""
        with self.tx() as db:
            state = "accepted" if code == "00" else "refused"
            changed = db.execute("UPDATE advices SET state=?, tries=tries+1, last_code=? "
                                 "WHERE id=? AND state='pending'", (state, code, adv_id))
            if not changed.rowcount:
                return
            sale_id = db.execute("SELECT sale_id FROM advices WHERE id=?",
                                 (adv_id,)).fetchone()[0]
            if state == "accepted" and rrn:
                db.execute("UPDATE sales SET rrn=? WHERE id=?", (rrn, sale_id))
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
        unsendable = self.db.execute(
            "SELECT (SELECT count(*) FROM reversals WHERE state='unsendable') + "
            "(SELECT count(*) FROM advices WHERE state='unsendable')").fetchone()[0]
        oldest = datetime.fromisoformat(row[2]) if row[2] else None
        return QueueStats(count=row[0], total=row[1], oldest=oldest, refused=refused,
                          reversals=reversals, unsendable=unsendable)

    def refused_advices(self) -> list[SaleRecord]:
        rows = self.db.execute("SELECT s.* FROM advices a JOIN sales s ON s.id = a.sale_id "
                               "WHERE a.state='refused' ORDER BY a.id").fetchall()
        return [record_from_row(r) for r in rows]

    def unannounced_refusals(self) -> list[tuple[int, SaleRecord]]:
        """Refused advices the merchant has not been told about yet: (advice id, sale)."""
        rows = self.db.execute("SELECT a.id AS adv_id, s.* FROM advices a JOIN sales s "
                               "ON s.id = a.sale_id WHERE a.state='refused' AND a.announced=0 "
                               "ORDER BY a.id").fetchall()
        return [(r["adv_id"], record_from_row(r)) for r in rows]

    def mark_announced(self, sale_id: int) -> None:
        """The merchant has the printed notice of this refused offline sale."""
        with self.tx() as db:
            db.execute("UPDATE advices SET announced=1 WHERE sale_id=?", (sale_id,))

    def queued_sales(self) -> list[SaleRecord]:
        rows = self.db.execute("SELECT s.* FROM advices a JOIN sales s ON s.id = a.sale_id "
                               "WHERE a.state='pending' ORDER BY a.id").fetchall()
        return [record_from_row(r) for r in rows]

    def pending_reversals(self) -> list[PendingReversal]:
        """Reversals and voids still to be acknowledged, oldest first. A void names its
        original itself (orig_*); a reversal names the attempt it reverses."""
        rows = self.db.execute(
            "SELECT r.*, coalesce(r.orig_stan, a.stan) AS o_stan, "
            "coalesce(r.orig_f7, a.f7) AS o_f7 FROM reversals r "
            "LEFT JOIN attempts a ON a.id = r.attempt_id WHERE r.state='pending' ORDER BY r.id"
        ).fetchall()
        return [PendingReversal(id=r["id"], sale_id=r["sale_id"], reason=r["reason"],
                                orig_stan=r["o_stan"] or "", orig_f7=r["o_f7"] or "",
                                fields=self.sale_fields(r["sale_id"]), stan=r["stan"],
                                f7=r["f7"], tries=r["tries"], written=bool(r["written"]),
                                orig_mti=r["orig_mti"], orig_rrn=r["orig_rrn"])
                for r in rows]

    def reversal_written(self, rev_id: int) -> None:
        """The reversal's first transmission is out: every later one is a 0401."""
        with self.tx() as db:
            db.execute("UPDATE reversals SET written=1 WHERE id=? AND written=0", (rev_id,))

    def pending_reversal_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM reversals WHERE state='pending' ORDER BY id")]

    def reversal_tries(self, rev_id: int) -> int:
        return int(self.db.execute("SELECT tries FROM reversals WHERE id=?",
                                   (rev_id,)).fetchone()[0])

    def reversal_identity(self, rev_id: int, f7: str) -> tuple[str, str, bool]:
        """Give a reversal its own STAN and field 7 at its first send (persisted first);
        with them, whether a transmission of it was ever written (read now, not earlier)."""
        with self.tx() as db:
            row = db.execute("SELECT stan, f7, written FROM reversals WHERE id=?",
                             (rev_id,)).fetchone()
            if row["stan"]:
                return row["stan"], row["f7"], bool(row["written"])
            stan = self._take_stan()
            db.execute("UPDATE reversals SET stan=?, f7=? WHERE id=?", (stan, f7, rev_id))
            return stan, f7, False

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
