"""The journal's store-and-forward part: pending reversals and offline advices.

Each reversal or advice gets its own STAN and field 7 at its first send, and
they are journaled before that send, so a repeat (0401, 0221) after a crash
carries exactly the same identity. The sealed card data a queue entry needs is
deleted as soon as nothing pending needs it.

The forwarder pipelines the queues, so the queue writes come in batches: the
identities of every message about to be written in one transaction
(`identities`), their `written` marks in one (`mark_written`), and the answers
that arrived together in one (`record_answers`). Whoever else adds to or takes
from the queues (a reversal recorded, an offline approval, a void) tells the
listeners added with `add_queue_listener`, so the forwarder never has to poll.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from firmware.core.card import CardData
from firmware.core.iso import next_stan, stan_str
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.risk import QueueStats, offline_code
from firmware.runtime.journal_base import record_from_row
from firmware.runtime.journal_void import VOID_REASON, VoidResult, VoidStore
from firmware.runtime.vault import Vault

QUEUE_TABLES = ("reversals", "advices")


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


@dataclass(frozen=True)
class QueueAnswer:
    """What became of one transmission of a queued reversal or advice, to be journaled.

    `final`: the queue entry ends (a reversal's 00/25; an advice's answer other than
    91/96, 00 accepting it and any other code refusing it); otherwise it stays pending
    and counts one more try. `code` is "" when no answer came."""

    table: str  # "reversals" or "advices"
    item_id: int
    code: str
    final: bool
    rrn: str = ""  # field 37 of an accepted advice's 0230


Identity = tuple[str, str, bool]  # STAN, field 7, whether a transmission was written


class QueueStore(VoidStore):
    def __init__(self, path: Path, vault: Vault) -> None:
        self._queue_listeners: list[Callable[[], None]] = []
        super().__init__(path, vault)

    # -- who is told when the queues change --------------------------------------
    def add_queue_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever a reversal, void or advice is queued or taken off the
        queue by someone other than the forwarder (it keeps its own view of what it did).
        Called inside the journal's transaction: a listener only takes note; it reads the
        journal later, from the event loop, when the transaction is over."""
        self._queue_listeners.append(listener)

    def _queues_changed(self) -> None:
        for listener in self._queue_listeners:
            listener()

    def _reverse(self, db: sqlite3.Connection, sale_id: int, attempt_id: int,
                 reason: str) -> None:
        super()._reverse(db, sale_id, attempt_id, reason)
        self._queues_changed()

    def record_void(self, sale_id: int) -> VoidResult:
        result = super().record_void(sale_id)
        if result.record is not None:
            self._queues_changed()
        return result

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
                self._queues_changed()
            else:
                db.execute("UPDATE sales SET status=?, reason=? WHERE id=?",
                           (SaleStatus.FAILED, reason, sale_id))
                self._forget_card(db, sale_id)
        return self.sale(sale_id)

    def pending_advices(self, limit: int | None = None, *,
                        ids: Sequence[int] | None = None) -> list[PendingAdvice]:
        """Pending advices in queue order, card data unsealed (memory only): the first
        `limit`, or those of `ids` that are still pending."""
        sql = ("SELECT a.*, s.fields AS sale_fields, c.blob AS sealed FROM advices a "
               "JOIN sales s ON s.id = a.sale_id LEFT JOIN card_data c ON c.sale_id = a.sale_id "
               "WHERE a.state='pending'")
        if ids is not None:
            sql += f" AND a.id IN ({','.join('?' * len(ids))}) ORDER BY a.id"
        else:
            sql += " ORDER BY a.id" + (f" LIMIT {int(limit)}" if limit else "")
        rows = self.db.execute(sql, tuple(ids or ())).fetchall()
        return [PendingAdvice(id=r["id"], sale_id=r["sale_id"], approval=r["approval"],
                              fields=self._unsealed(r["sale_id"], r["sale_fields"], r["sealed"]),
                              stan=r["stan"], f7=r["f7"], tries=r["tries"],
                              written=bool(r["written"])) for r in rows]

    def _unsealed(self, sale_id: int, public: str, sealed: bytes | None) -> dict[str, str]:
        """A sale's fixed request fields with its card data unsealed (memory only): what
        `sale_fields` gives, from a row already read."""
        fields: dict[str, str] = json.loads(public)
        if sealed is not None:
            fields.update(json.loads(self.vault.unseal(f"sale:{sale_id}", sealed)))
        return fields

    def pending_advice_ids(self, limit: int | None = None) -> list[int]:
        """The ids of the pending advices in queue order (all of them without `limit`)."""
        if limit is None:
            return [r[0] for r in self.db.execute(
                "SELECT id FROM advices WHERE state='pending' ORDER BY id")]
        return [r[0] for r in self.db.execute(
            "SELECT id FROM advices WHERE state='pending' ORDER BY id LIMIT ?", (limit,))]

    def advice_tries(self, adv_id: int) -> int:
        row = self.db.execute("SELECT tries FROM advices WHERE id=?", (adv_id,)).fetchone()
        return int(row[0]) if row else 0

    def identities(self, table: str, ids: Sequence[int], f7: str) -> dict[int, Identity]:
        """Give each reversal or advice of `ids` that has none its own STAN and field 7, in
        one transaction, before any of them is written; with each identity, whether a
        transmission of it was ever written (read now, in the transaction)."""
        assert table in QUEUE_TABLES
        if not ids:
            return {}
        out: dict[int, Identity] = {}
        with self.tx() as db:
            marks = ",".join("?" * len(ids))
            rows = db.execute(f"SELECT id, stan, f7, written FROM {table} WHERE id IN "
                              f"({marks})", tuple(ids)).fetchall()
            known = {r["id"]: r for r in rows}
            fresh = [i for i in ids if i in known and not known[i]["stan"]]
            stans = self._take_stans(len(fresh))
            db.executemany(f"UPDATE {table} SET stan=?, f7=? WHERE id=?",
                           [(stan, f7, i) for i, stan in zip(fresh, stans, strict=True)])
            new = dict(zip(fresh, stans, strict=True))
            for i in ids:
                if i in new:
                    out[i] = (new[i], f7, False)
                elif i in known:
                    row = known[i]
                    out[i] = (row["stan"], row["f7"], bool(row["written"]))
        return out

    def _take_stans(self, count: int) -> list[str]:
        """`count` consecutive STANs, one read and one write of the counter."""
        if not count:
            return []
        stan = self._meta("next_stan")
        out = []
        for _ in range(count):
            out.append(stan_str(stan))
            stan = next_stan(stan)
        self._set_meta("next_stan", stan)
        return out

    def mark_written(self, table: str, ids: Sequence[int]) -> None:
        """The first transmissions of these reversals or advices are out: every later one
        is a repeat (0401, 0221). One transaction for all of them."""
        assert table in QUEUE_TABLES
        if not ids:
            return
        with self.tx() as db:
            marks = ",".join("?" * len(ids))
            db.execute(f"UPDATE {table} SET written=1 WHERE written=0 AND id IN ({marks})",
                       tuple(ids))

    def record_answers(self, answers: Sequence[QueueAnswer]) -> list[QueueAnswer]:
        """Journal what became of these transmissions, all in one transaction; returns
        the answers that changed the journal (an advice voided while its answer was on
        the way stays voided: its void settles it with the host)."""
        if not answers:
            return []
        changed: list[QueueAnswer] = []
        accepted = {a.item_id: a for a in answers
                    if a.table == "advices" and a.final and a.code == "00"}
        with self.tx() as db:
            if accepted:  # the common case, a few statements for the whole group
                changed.extend(self._accept_advices(db, accepted))
            for a in answers:
                if a.table == "advices" and a.item_id in accepted:
                    continue
                if a.table == "advices":
                    done = self._advice_answer(db, a) if a.final else self._tried(db, a)
                elif a.table == "reversals":
                    done = self._reversal_answer(db, a) if a.final else self._tried(db, a)
                else:
                    raise ValueError(f"not a queue table: {a.table!r}")
                if done:
                    changed.append(a)
        return changed

    @staticmethod
    def _accept_advices(db: sqlite3.Connection,
                        accepted: dict[int, QueueAnswer]) -> list[QueueAnswer]:
        """Advices the host accepted (00): state, their sales' field 37, card data gone."""
        marks = ",".join("?" * len(accepted))
        rows = db.execute(f"UPDATE advices SET state='accepted', tries=tries+1, "
                          f"last_code='00' WHERE state='pending' AND id IN ({marks}) "
                          "RETURNING id, sale_id", tuple(accepted)).fetchall()
        db.executemany("UPDATE sales SET rrn=? WHERE id=?",
                       [(accepted[r[0]].rrn, r[1]) for r in rows if accepted[r[0]].rrn])
        db.execute(f"DELETE FROM card_data WHERE sale_id IN ({','.join('?' * len(rows))})",
                   tuple(r[1] for r in rows))
        return [accepted[r[0]] for r in rows]

    @staticmethod
    def _tried(db: sqlite3.Connection, a: QueueAnswer) -> bool:
        cur = db.execute(f"UPDATE {a.table} SET tries=tries+1, last_code=? WHERE id=? AND "
                         "state='pending'", (a.code, a.item_id))
        return bool(cur.rowcount)

    def _advice_answer(self, db: sqlite3.Connection, a: QueueAnswer) -> bool:
        state = "accepted" if a.code == "00" else "refused"
        changed = db.execute("UPDATE advices SET state=?, tries=tries+1, last_code=? "
                             "WHERE id=? AND state='pending' RETURNING sale_id",
                             (state, a.code, a.item_id)).fetchone()
        if changed is None:
            return False
        sale_id = changed[0]
        if state == "accepted" and a.rrn:
            db.execute("UPDATE sales SET rrn=? WHERE id=?", (a.rrn, sale_id))
        if state == "refused":
            db.execute("UPDATE sales SET status=?, response_code=?, reason=? WHERE id=?",
                       (SaleStatus.OFFLINE_REFUSED, a.code, "REFUSED BY HOST", sale_id))
        db.execute("DELETE FROM card_data WHERE sale_id=?", (sale_id,))
        return True

    def _reversal_answer(self, db: sqlite3.Connection, a: QueueAnswer) -> bool:
        changed = db.execute("UPDATE reversals SET state='done', tries=tries+1, last_code=? "
                             "WHERE id=? AND state='pending' RETURNING sale_id",
                             (a.code, a.item_id)).fetchone()
        if changed is None:
            return False
        self._forget_card(db, changed[0])
        return True

    def advice_written(self, adv_id: int) -> None:
        """The advice's first transmission is out: every later one is a 0221."""
        self.mark_written("advices", [adv_id])

    def advice_identity(self, adv_id: int, f7: str) -> Identity:
        """Give an advice its own STAN and field 7 at its first send (persisted first);
        with them, whether a transmission of it was ever written (read now, not earlier)."""
        return self.identities("advices", [adv_id], f7)[adv_id]

    def unsendable(self, table: str, item_id: int, why: str) -> None:
        """A reversal or advice whose message cannot be built (a journal from a release with
        a bad configuration): out of the queue, kept, reported; it never blocks the rest."""
        assert table in ("reversals", "advices")
        with self.tx() as db:
            db.execute(f"UPDATE {table} SET state='unsendable', last_code=? WHERE id=?",
                       (why[:200], item_id))

    def advice_tried(self, adv_id: int, code: str) -> None:
        self.record_answers([QueueAnswer("advices", adv_id, code, final=False)])

    def advice_done(self, adv_id: int, code: str, rrn: str = "") -> None:
        """The host accepted (00) or refused (any final code) the advice: card data goes.
        An accepted advice's field 37 is kept on the sale (a void or the batch upload names
        it). An advice voided while its answer was on the way stays voided: its void (a
        0400 reason 17 naming it) settles it with the host."""
        self.record_answers([QueueAnswer("advices", adv_id, code, final=True, rrn=rrn)])

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

    def pending_reversals(self, *, ids: Sequence[int] | None = None) -> list[PendingReversal]:
        """Reversals and voids still to be acknowledged, oldest first (only those of `ids`
        when given). A void names its original itself (orig_*); a reversal names the
        attempt it reverses."""
        sql = ("SELECT r.*, coalesce(r.orig_stan, a.stan) AS o_stan, "
               "coalesce(r.orig_f7, a.f7) AS o_f7 FROM reversals r "
               "LEFT JOIN attempts a ON a.id = r.attempt_id WHERE r.state='pending'")
        if ids is not None:
            sql += f" AND r.id IN ({','.join('?' * len(ids))})"
        rows = self.db.execute(sql + " ORDER BY r.id", tuple(ids or ())).fetchall()
        return [PendingReversal(id=r["id"], sale_id=r["sale_id"], reason=r["reason"],
                                orig_stan=r["o_stan"] or "", orig_f7=r["o_f7"] or "",
                                fields=self.sale_fields(r["sale_id"]), stan=r["stan"],
                                f7=r["f7"], tries=r["tries"], written=bool(r["written"]),
                                orig_mti=r["orig_mti"], orig_rrn=r["orig_rrn"])
                for r in rows]

    def reversal_written(self, rev_id: int) -> None:
        """The reversal's first transmission is out: every later one is a 0401."""
        self.mark_written("reversals", [rev_id])

    def pending_reversal_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM reversals WHERE state='pending' ORDER BY id")]

    def reversal_tries(self, rev_id: int) -> int:
        return int(self.db.execute("SELECT tries FROM reversals WHERE id=?",
                                   (rev_id,)).fetchone()[0])

    def reversal_identity(self, rev_id: int, f7: str) -> Identity:
        """Give a reversal its own STAN and field 7 at its first send (persisted first);
        with them, whether a transmission of it was ever written (read now, not earlier)."""
        return self.identities("reversals", [rev_id], f7)[rev_id]

    def reversal_tried(self, rev_id: int, code: str) -> None:
        self.record_answers([QueueAnswer("reversals", rev_id, code, final=False)])

    def reversal_done(self, rev_id: int, code: str) -> None:
        self.record_answers([QueueAnswer("reversals", rev_id, code, final=True)])
