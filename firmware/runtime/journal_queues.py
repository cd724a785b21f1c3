"""The journal's outbox part: reversals, voids, offline advices and batch uploads.

One queue code for the four kinds of entry (outbox.py), keyed by `OutboxKey`: each
gets its own STAN and field 7 at its first send, journaled before that send, so a
repeat (0401, 0221, 0321) after a crash carries exactly the same identity. The
sealed card data a queue entry needs is deleted as soon as nothing pending needs it.

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
from collections.abc import Callable, Sequence, Sized
from datetime import datetime
from pathlib import Path

from firmware.core.card import CardData
from firmware.core.emv.steps import ChipData
from firmware.core.iso import next_stan, stan_str
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.risk import QueueStats, offline_code
from firmware.runtime.journal_base import queued, record_from_row
from firmware.runtime.journal_chip import chip_json, upload_icc
from firmware.runtime.journal_void import VoidResult, VoidStore
from firmware.runtime.outbox import (VOID_REASON, Answer, Identity, Kind, OutboxItem, OutboxKey,
                                     PendingAdvice, PendingReversal, PendingVoid)
from firmware.runtime.vault import Vault

TRIED = (Kind.REVERSAL, Kind.VOID, Kind.ADVICE)  # kinds that count their tries


def _marks(ids: Sized) -> str:
    return ",".join("?" * len(ids))


def _by_table(keys: Sequence[OutboxKey]) -> dict[str, list[int]]:
    tables: dict[str, list[int]] = {}
    for key in keys:
        tables.setdefault(key.kind.table, []).append(key.id)
    return tables


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
                       currency: str, local: datetime, chip: ChipData | None = None,
                       prefix: str = "Y3") -> SaleRecord:
        """An offline decision in one transaction: approved means the sale, its advice
        and its sealed card data; refused means the sale closed with its reason."""
        with self.tx() as db:
            if sale_id is None:
                sale_id, _ = self._create_sale(
                    db, fields=fields, card=card, kind=kind, amount=amount, currency=currency,
                    local=local, status=SaleStatus.AUTHORIZING, chip=chip)
            elif chip is not None:  # busy through the retries: the card's TC replaces the
                # ARQC the 0200s carried (sealed with the card data), the chip data too
                self._reseal_icc(db, sale_id, fields.get("55", ""))
                db.execute("UPDATE sales SET chip=? WHERE id=?",
                           (chip_json("05", chip), sale_id))
            if approved:
                code = offline_code(sale_id, prefix)
                if chip is not None:
                    db.execute("UPDATE sales SET chip=? WHERE id=?",
                               (chip_json("05", chip, upload=upload_icc(chip)), sale_id))
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

    def _reseal_icc(self, db: sqlite3.Connection, sale_id: int, icc: str) -> None:
        row = db.execute("SELECT blob FROM card_data WHERE sale_id=?", (sale_id,)).fetchone()
        if row is None:
            return
        secret = json.loads(self.vault.unseal(f"sale:{sale_id}", row["blob"]))
        secret["55"] = icc
        db.execute("UPDATE card_data SET blob=? WHERE sale_id=?",
                   (self.vault.seal(f"sale:{sale_id}", json.dumps(secret).encode()), sale_id))

    # -- the outbox: one queue code for reversals, voids, advices and uploads -------------
    def pending_keys(self, *kinds: Kind) -> list[OutboxKey]:
        """The pending entries of these kinds, in queue order (reversals and voids share
        one queue, `reversals`; a void is a row with reason 17)."""
        out: list[OutboxKey] = []
        if Kind.REVERSAL in kinds or Kind.VOID in kinds:
            for row in self.db.execute("SELECT id, reason FROM reversals WHERE "
                                       "state='pending' ORDER BY id"):
                kind = Kind.VOID if row[1] == VOID_REASON else Kind.REVERSAL
                if kind in kinds:
                    out.append(OutboxKey(kind, row[0]))
        if Kind.ADVICE in kinds:
            out += [OutboxKey(Kind.ADVICE, r[0]) for r in self.db.execute(
                "SELECT id FROM advices WHERE state='pending' ORDER BY id")]
        return out

    def pending(self, *kinds: Kind) -> list[OutboxItem]:
        """The pending entries of these kinds, card data unsealed (memory only)."""
        return self.pending_items(self.pending_keys(*kinds))

    def pending_items(self, keys: Sequence[OutboxKey]) -> list[OutboxItem]:
        """The entries of `keys` that are still pending, in the order of `keys`, card data
        unsealed (memory only). A void names its original itself (orig_*); a reversal names
        the attempt it reverses."""
        out: dict[OutboxKey, OutboxItem] = {}
        revs = [k.id for k in keys if k.kind.table == "reversals"]
        if revs:
            for r in self.db.execute(
                    "SELECT r.*, coalesce(r.orig_stan, a.stan) AS o_stan, coalesce(r.orig_f7, "
                    "a.f7) AS o_f7 FROM reversals r LEFT JOIN attempts a ON a.id = "
                    f"r.attempt_id WHERE r.state='pending' AND r.id IN ({_marks(revs)})", revs):
                cls = PendingVoid if r["reason"] == VOID_REASON else PendingReversal
                rev = cls(id=r["id"], sale_id=r["sale_id"], reason=r["reason"],
                          orig_stan=r["o_stan"] or "", orig_f7=r["o_f7"] or "",
                          fields=self.sale_fields(r["sale_id"]), stan=r["stan"], f7=r["f7"],
                          tries=r["tries"], written=bool(r["written"]),
                          orig_mti=r["orig_mti"], orig_rrn=r["orig_rrn"], icc=r["icc"])
                out[rev.key] = rev
        advs = [k.id for k in keys if k.kind is Kind.ADVICE]
        if advs:
            for r in self.db.execute(
                    "SELECT a.*, s.fields AS sale_fields, c.blob AS sealed FROM advices a JOIN "
                    "sales s ON s.id = a.sale_id LEFT JOIN card_data c ON c.sale_id = "
                    f"a.sale_id WHERE a.state='pending' AND a.id IN ({_marks(advs)})", advs):
                adv = PendingAdvice(
                    id=r["id"], sale_id=r["sale_id"], approval=r["approval"],
                    fields=self._unsealed(r["sale_id"], r["sale_fields"], r["sealed"]),
                    stan=r["stan"], f7=r["f7"], tries=r["tries"], written=bool(r["written"]))
                out[adv.key] = adv
        return [out[k] for k in keys if k in out]

    def _unsealed(self, sale_id: int, public: str, sealed: bytes | None) -> dict[str, str]:
        """A sale's fixed request fields with its card data unsealed (memory only): what
        `sale_fields` gives, from a row already read."""
        fields: dict[str, str] = json.loads(public)
        if sealed is not None:
            fields.update(json.loads(self.vault.unseal(f"sale:{sale_id}", sealed)))
        return fields

    def tries(self, key: OutboxKey) -> int:
        """Transmissions of a reversal, void or advice answered so far (or lost)."""
        assert key.kind in TRIED
        row = self.db.execute(f"SELECT tries FROM {key.kind.table} WHERE id=?",
                              (key.id,)).fetchone()
        return int(row[0]) if row else 0

    def identities(self, keys: Sequence[OutboxKey], f7: str) -> dict[OutboxKey, Identity]:
        """Give each entry of `keys` that has none its own STAN and field 7, in one
        transaction, before any of them is written; with each identity, whether a
        transmission of it was ever written (read now, in the transaction)."""
        if not keys:
            return {}
        out: dict[OutboxKey, Identity] = {}
        with self.tx() as db:
            for table, ids in _by_table(keys).items():
                rows = db.execute(f"SELECT id, stan, f7, written FROM {table} WHERE id IN "
                                  f"({_marks(ids)})", ids).fetchall()
                known = {r["id"]: r for r in rows}
                fresh = [i for i in ids if i in known and not known[i]["stan"]]
                stans = dict(zip(fresh, self._take_stans(len(fresh)), strict=True))
                db.executemany(f"UPDATE {table} SET stan=?, f7=? WHERE id=?",
                               [(stan, f7, i) for i, stan in stans.items()])
                for key in keys:
                    if key.kind.table != table or key.id not in known:
                        continue
                    row = known[key.id]
                    out[key] = Identity(stans[key.id], f7, False) if key.id in stans else \
                        Identity(row["stan"], row["f7"], bool(row["written"]))
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

    def mark_written(self, keys: Sequence[OutboxKey]) -> None:
        """The first transmissions of these entries are out: every later one is a repeat
        (0401, 0221, 0321). One transaction for all of them."""
        if not keys:
            return
        with self.tx() as db:
            for table, ids in _by_table(keys).items():
                db.execute(f"UPDATE {table} SET written=1 WHERE written=0 AND id IN "
                           f"({_marks(ids)})", ids)

    def record_answers(self, answers: Sequence[Answer]) -> list[Answer]:
        """Journal what became of these transmissions, all in one transaction; returns
        the answers that changed the journal (an advice voided while its answer was on
        the way stays voided: its void settles it with the host)."""
        if not answers:
            return []
        changed: list[Answer] = []
        accepted = {a.key.id: a for a in answers
                    if a.key.kind is Kind.ADVICE and a.final and a.code == "00"}
        with self.tx() as db:
            if accepted:  # the common case, a few statements for the whole group
                changed.extend(self._accept_advices(db, accepted))
            for a in answers:
                if a.key.kind is Kind.ADVICE and a.key.id in accepted:
                    continue
                if not a.final:
                    done = self._tried(db, a)
                elif a.key.kind is Kind.ADVICE:
                    done = self._advice_answer(db, a)
                elif a.key.kind is Kind.UPLOAD:
                    done = bool(db.execute("UPDATE batch_uploads SET state='answered', code=? "
                                           "WHERE id=? AND state='pending'",
                                           (a.code, a.key.id)).rowcount)
                else:
                    done = self._reversal_answer(db, a)
                if done:
                    changed.append(a)
        return changed

    @staticmethod
    def _accept_advices(db: sqlite3.Connection, accepted: dict[int, Answer]) -> list[Answer]:
        """Advices the host accepted (00): state, their sales' field 37, card data gone."""
        rows = db.execute(f"UPDATE advices SET state='accepted', tries=tries+1, "
                          f"last_code='00' WHERE state='pending' AND id IN "
                          f"({_marks(accepted)}) RETURNING id, sale_id",
                          tuple(accepted)).fetchall()
        db.executemany("UPDATE sales SET rrn=? WHERE id=?",
                       [(accepted[r[0]].rrn, r[1]) for r in rows if accepted[r[0]].rrn])
        db.execute(f"DELETE FROM card_data WHERE sale_id IN ({_marks(rows)})",
                   tuple(r[1] for r in rows))
        return [accepted[r[0]] for r in rows]

    @staticmethod
    def _tried(db: sqlite3.Connection, a: Answer) -> bool:
        """One more try of a pending entry (an upload counts its tries itself)."""
        if a.key.kind not in TRIED:
            return False
        cur = db.execute(f"UPDATE {a.key.kind.table} SET tries=tries+1, last_code=? WHERE "
                         "id=? AND state='pending'", (a.code, a.key.id))
        return bool(cur.rowcount)

    def _advice_answer(self, db: sqlite3.Connection, a: Answer) -> bool:
        state = "accepted" if a.code == "00" else "refused"
        changed = db.execute("UPDATE advices SET state=?, tries=tries+1, last_code=? "
                             "WHERE id=? AND state='pending' RETURNING sale_id",
                             (state, a.code, a.key.id)).fetchone()
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

    def _reversal_answer(self, db: sqlite3.Connection, a: Answer) -> bool:
        changed = db.execute("UPDATE reversals SET state='done', tries=tries+1, last_code=? "
                             "WHERE id=? AND state='pending' RETURNING sale_id",
                             (a.code, a.key.id)).fetchone()
        if changed is None:
            return False
        self._forget_card(db, changed[0])
        return True

    def unsendable(self, key: OutboxKey, why: str) -> None:
        """A reversal, void or advice whose message cannot be built (a journal from a release
        with a bad configuration): out of the queue, kept, reported; it never blocks the
        rest."""
        assert key.kind in TRIED
        with self.tx() as db:
            db.execute(f"UPDATE {key.kind.table} SET state='unsendable', last_code=? WHERE "
                       "id=?", (why[:200], key.id))

    def queue_stats(self) -> QueueStats:
        return queue_stats(self.db)

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


def queue_stats(db: sqlite3.Connection) -> QueueStats:
    """The queues as counted now (the firmware's journal and JournalView alike)."""
    row = db.execute(
        "SELECT count(*), coalesce(sum(s.amount), 0), min(s.local) FROM advices a "
        "JOIN sales s ON s.id = a.sale_id WHERE a.state='pending'").fetchone()
    refused = db.execute("SELECT count(*) FROM advices WHERE state='refused'").fetchone()[0]
    reversals = db.execute("SELECT count(*) FROM reversals WHERE state='pending'"
                           ).fetchone()[0]
    oldest = datetime.fromisoformat(row[2]) if row[2] else None
    return QueueStats(count=row[0], total=row[1], oldest=oldest, refused=refused,
                      reversals=reversals, unsendable=queued(db, "unsendable"))
