"""The journal's fleet part: the events outbox of the fleet channel (docs/fleet.md).

Each event the terminal tells the fleet (a sale's end, a device fault or recovery, a
restart, a close) gets the next `seq` of the terminal (journal meta `fleet_seq`, from
1, never reused) and waits in `fleet_events` until the broker acknowledged it (PUBACK,
QoS 1); the channel sends them one at a time, oldest first, so they arrive in order
after any outage and across restarts.

The outbox is bounded (`[fleet] outbox_max`): when an event would pass the bound, the
oldest waiting events are replaced by one `dropped` event that carries their count and
the seq of the newest of them, so seqs stay increasing and the next event sent says how
many were lost; the meta counter `fleet_dropped` keeps the total.

The writes are not fsynced on their own (`tx(durable=False)`): an event is written at
the end of a sale, on the loop, and must cost that sale nothing noticeable; a crash of
the process keeps it, a power cut may lose the last ones (the next durable commit of a
sale takes them to disk with itself). Nothing here holds card data: the events are the
fleet's words (firmware/runtime/fleet_words.py), checked before they are written.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.errors import JournalError
from firmware.runtime.journal_base import JournalBase
from firmware.runtime.vault import Vault

FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_events (
    seq INTEGER PRIMARY KEY,
    t TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
"""
SEQ, DROPPED = "fleet_seq", "fleet_dropped"


@dataclass(frozen=True)
class FleetEvent:
    seq: int
    t: str  # UTC, ISO 8601 with Z
    kind: str
    data: dict[str, Any]


class FleetStore(JournalBase):
    """The fleet events outbox; `Journal` inherits it."""

    def __init__(self, path: Path, vault: Vault) -> None:
        super().__init__(path, vault)
        try:
            # one transaction: a new journal's tables cost one fsync, not one each
            self.db.executescript(f"BEGIN IMMEDIATE;{FLEET_SCHEMA}COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path}: fleet table cannot be created: "
                               f"{exc}") from None

    def _meta_int(self, db: sqlite3.Connection, key: str) -> int:
        row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def fleet_add(self, kind: str, data: dict[str, Any], t: str, *, bound: int) -> int:
        """Keep one event for the fleet; its seq. Past `bound` waiting events the oldest
        become one `dropped` event (module doc)."""
        with self.tx(durable=False) as db:
            seq = self._meta_int(db, SEQ) + 1
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (SEQ, str(seq)))
            db.execute("INSERT INTO fleet_events VALUES (?,?,?,?)",
                       (seq, t, kind, json.dumps(data, sort_keys=True)))
            waiting = db.execute("SELECT COUNT(*) FROM fleet_events").fetchone()[0]
            if waiting > bound:
                oldest = db.execute("SELECT seq, kind, data FROM fleet_events ORDER BY seq "
                                    "LIMIT ?", (waiting - bound + 1,)).fetchall()
                count = sum(json.loads(r["data"]).get("count", 0) if r["kind"] == "dropped"
                            else 1 for r in oldest)
                lost = sum(r["kind"] != "dropped" for r in oldest)
                top = oldest[-1]["seq"]
                db.execute("DELETE FROM fleet_events WHERE seq<=?", (top,))
                db.execute("INSERT INTO fleet_events VALUES (?,?,?,?)",
                           (top, t, "dropped", json.dumps({"count": count})))
                total = self._meta_int(db, DROPPED) + lost
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (DROPPED, str(total)))
        return seq

    def fleet_next(self) -> FleetEvent | None:
        """The oldest event not yet acknowledged by the broker."""
        row = self.db.execute("SELECT seq, t, kind, data FROM fleet_events ORDER BY seq "
                              "LIMIT 1").fetchone()
        if row is None:
            return None
        return FleetEvent(int(row["seq"]), row["t"], row["kind"], json.loads(row["data"]))

    def fleet_sent(self, seq: int, kind: str) -> None:
        """The broker acknowledged event `seq` (of that kind: an event the bound turned
        into `dropped` meanwhile is still to be sent): it leaves the outbox."""
        with self.tx(durable=False) as db:
            db.execute("DELETE FROM fleet_events WHERE seq=? AND kind=?", (seq, kind))

    def fleet_counts(self) -> tuple[int, int, int]:
        """(events waiting, last seq given, events dropped in all)."""
        waiting = self.db.execute("SELECT COUNT(*) FROM fleet_events").fetchone()[0]
        return int(waiting), self._meta_int(self.db, SEQ), self._meta_int(self.db, DROPPED)
