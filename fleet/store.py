"""The console's memory: SQLite, each terminal's latest word and its events.

Tables:

- `terminals`: one row per terminal id: its state message (`state`, `version`,
  `since`), its latest telemetry facts (JSON) and their time, the trend of its unsent
  offline sales (`offline_trend`: "up" when the count rose at its last change, "down"
  when it fell), the highest event `seq` seen, how many events are kept, and when the
  console last heard from it (`seen`, the console's clock).
- `events`: keyed by (tid, seq): an event delivered twice (MQTT QoS 1 is at least
  once; a terminal resends after an outage) is stored once, whatever the order.
- `commands`: each command by its id, whoever sent it (this console's page, `posterm-fleet
  send`, or any client seen on the broker), and the terminal's reply when it comes: a
  reply is matched by its id and its terminal; one to no command seen is only counted.

`apply` takes a batch of (topic, payload) as the broker delivered them and writes
them in one transaction; a message that does not follow docs/fleet.md is counted and
logged, never stored and never fatal. WAL mode: the page reads while the subscriber
writes. One `Store` per thread (sqlite3 connections are not shared).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fleet import TOPIC_ROOT
from fleet.alerts import Facts, part

log = logging.getLogger("posterm.fleet.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS terminals (
    tid TEXT PRIMARY KEY,
    state TEXT, version TEXT, since TEXT,
    facts TEXT, facts_t TEXT,
    offline_count INTEGER NOT NULL DEFAULT 0,
    offline_trend TEXT NOT NULL DEFAULT '',
    last_seq INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL DEFAULT 0,
    seen TEXT
);
CREATE TABLE IF NOT EXISTS events (
    tid TEXT NOT NULL, seq INTEGER NOT NULL, t TEXT, kind TEXT NOT NULL, data TEXT NOT NULL,
    received TEXT NOT NULL,
    PRIMARY KEY (tid, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, tid TEXT NOT NULL, cmd TEXT, args TEXT, t TEXT, signed INTEGER,
    reply TEXT, replied TEXT
);
CREATE INDEX IF NOT EXISTS commands_by_tid ON commands (tid, t);
"""
KINDS = ("state", "telemetry", "events", "cmd", "reply")
MAX_TID = 64


def utc(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Applied:
    """What one `apply` did."""
    events: int = 0  # new events stored
    duplicates: int = 0  # events already stored (same tid and seq)
    rejected: int = 0  # messages that do not follow docs/fleet.md
    unmatched: int = 0  # replies to no command seen (not stored)
    replies: list[dict[str, Any]] = field(default_factory=list)  # replies stored


class BadMessage(ValueError):
    pass


def split_topic(topic: str) -> tuple[str, str]:
    """`posterm/v1/<tid>/<kind>` -> (tid, kind); BadMessage for anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT or parts[3] not in KINDS \
            or not parts[2] or len(parts[2]) > MAX_TID:
        raise BadMessage(f"not a fleet topic: {topic!r}")
    return parts[2], parts[3]


def _payload(tid: str, raw: bytes | bytearray, required: Iterable[str]) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadMessage("not a JSON object")
    if b"\\u" in raw and _lone_surrogate(doc):  # "\udcff" is JSON, but no text SQLite takes
        raise BadMessage("a string with a lone surrogate (\\ud800-\\udfff): not text")
    missing = [k for k in required if k not in doc]
    if missing:
        raise BadMessage(f"lacks {', '.join(missing)}")
    if "tid" in doc and doc["tid"] != tid:
        raise BadMessage(f"tid {doc['tid']!r} in a message on {tid}'s topic")
    return doc


def _lone_surrogate(doc: Any) -> bool:
    try:
        json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


class Store:
    def __init__(self, path: Path | str, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no fleet database at {self.path}")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                      check_same_thread=False)
        else:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    # -- writing ------------------------------------------------------------------

    def apply(self, messages: Iterable[tuple[str, bytes | bytearray]], now: datetime) -> Applied:
        """Store a batch of messages as delivered, in one transaction."""
        done = Applied()
        received = utc(now)
        with self.db:
            for topic, raw in messages:
                try:
                    tid, kind = split_topic(topic)
                    getattr(self, f"_on_{kind}")(tid, raw, received, done)
                except BadMessage as exc:
                    done.rejected += 1
                    log.warning("fleet message on %s refused: %s", topic[:200], exc)
        return done

    def _touch(self, tid: str, received: str) -> None:
        self.db.execute("INSERT INTO terminals (tid, seen) VALUES (?, ?) ON CONFLICT (tid) "
                        "DO UPDATE SET seen = excluded.seen", (tid, received))

    def _on_state(self, tid: str, raw: bytes | bytearray, received: str, done: Applied) -> None:
        doc = _payload(tid, raw, ("state",))
        if doc["state"] not in ("online", "offline"):
            raise BadMessage(f"state {doc['state']!r} is neither online nor offline")
        self._touch(tid, received)
        version = doc.get("version") if isinstance(doc.get("version"), str) else None
        self.db.execute("UPDATE terminals SET state = ?, since = ?, "
                        "version = coalesce(?, version) WHERE tid = ?",
                        (doc["state"], str(doc.get("since") or ""), version, tid))

    def _on_telemetry(self, tid: str, raw: bytes | bytearray, received: str, done: Applied) -> None:
        doc = _payload(tid, raw, ("facts",))
        facts = doc["facts"]
        if not isinstance(facts, dict):
            raise BadMessage("facts is not an object")
        self._touch(tid, received)
        row = self.db.execute("SELECT offline_count, offline_trend FROM terminals "
                              "WHERE tid = ?", (tid,)).fetchone()
        queue = part(facts, "queue")
        count = queue.get("offline_count", 0)
        count = count if isinstance(count, int) else 0
        trend = row["offline_trend"]
        if count != row["offline_count"]:
            trend = "up" if count > row["offline_count"] else "down"
        version = part(facts, "device").get("firmware_version")
        self.db.execute("UPDATE terminals SET facts = ?, facts_t = ?, offline_count = ?, "
                        "offline_trend = ?, version = coalesce(?, version) WHERE tid = ?",
                        (json.dumps(facts), str(doc.get("t") or received), count, trend,
                         version if isinstance(version, str) else None, tid))

    def _on_events(self, tid: str, raw: bytes | bytearray, received: str, done: Applied) -> None:
        doc = _payload(tid, raw, ("seq", "kind"))
        seq, kind = doc["seq"], doc["kind"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise BadMessage(f"seq {seq!r} is not a positive integer")
        if not isinstance(kind, str):
            raise BadMessage("kind is not a string")
        data = doc.get("data", {})
        self._touch(tid, received)
        cur = self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                              (tid, seq, str(doc.get("t") or ""), kind, json.dumps(data),
                               received))
        if cur.rowcount == 0:
            done.duplicates += 1
            return
        done.events += 1
        self.db.execute("UPDATE terminals SET events = events + 1, "
                        "last_seq = max(last_seq, ?) WHERE tid = ?", (seq, tid))

    def _on_cmd(self, tid: str, raw: bytes | bytearray, received: str, done: Applied) -> None:
        self._record_command(tid, _payload(tid, raw, ("id", "cmd")))

    def _on_reply(self, tid: str, raw: bytes | bytearray, received: str, done: Applied) -> None:
        doc = _payload(tid, raw, ("id", "ok"))
        if not isinstance(doc["id"], str) or not isinstance(doc["ok"], bool):
            raise BadMessage("reply id is not a string or ok is not true or false")
        self._touch(tid, received)
        done.replies.append(doc)
        cur = self.db.execute("UPDATE commands SET reply = ?, replied = ? WHERE id = ? AND "
                              "tid = ?", (json.dumps(doc), received, doc["id"], tid))
        if cur.rowcount == 0:
            done.unmatched += 1
            log.info("%s replied to %r, a command this console has not seen", tid, doc["id"])

    def record_command(self, tid: str, command: dict[str, Any]) -> None:
        """A command sent (or seen on the broker): kept by its id, once."""
        with self.db:
            self._record_command(tid, command)

    def _record_command(self, tid: str, command: dict[str, Any]) -> None:
        if not isinstance(command.get("id"), str) or not command["id"]:
            raise BadMessage("command id is not a string")
        self.db.execute("INSERT INTO commands (id, tid, cmd, args, t, signed) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                        "cmd = excluded.cmd, args = excluded.args, t = excluded.t, "
                        "signed = excluded.signed WHERE commands.cmd IS NULL",
                        (command["id"], tid, str(command.get("cmd")),
                         json.dumps(command.get("args", {})), str(command.get("t") or ""),
                         int("sig" in command)))

    # -- reading ------------------------------------------------------------------

    def facts(self) -> list[tuple[Facts, sqlite3.Row]]:
        """Every terminal: what the alerts read, and its row."""
        return [(self.facts_of(row), row) for row in self.db.execute("SELECT * FROM terminals")]

    @staticmethod
    def facts_of(row: sqlite3.Row) -> Facts:
        facts = json.loads(row["facts"]) if row["facts"] else {}
        return Facts(row["tid"], row["state"], row["version"], facts, row["offline_trend"])

    def versions(self) -> list[str]:
        """Every version the fleet runs (as last heard from each terminal)."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT version FROM terminals WHERE version IS NOT NULL")]

    def terminal(self, tid: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM terminals WHERE tid = ?", (tid,)).fetchone()
        return row

    def events(self, tid: str, limit: int = 200) -> list[dict[str, Any]]:
        """The terminal's newest events first."""
        rows = self.db.execute("SELECT seq, t, kind, data, received FROM events WHERE tid = ? "
                               "ORDER BY seq DESC LIMIT ?", (tid, limit))
        return [{"seq": r["seq"], "t": r["t"], "kind": r["kind"], "data": json.loads(r["data"]),
                 "received": r["received"]} for r in rows]

    def commands(self, tid: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM commands WHERE tid = ? "
                               "ORDER BY coalesce(t, replied) DESC LIMIT ?", (tid, limit))
        return [_command(r) for r in rows]

    def command(self, command_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM commands WHERE id = ?", (command_id,)).fetchone()
        return _command(row) if row else None


def _command(r: sqlite3.Row) -> dict[str, Any]:
    return {"id": r["id"], "tid": r["tid"], "cmd": r["cmd"],
            "args": json.loads(r["args"]) if r["args"] else None, "t": r["t"],
            "signed": bool(r["signed"]), "reply": json.loads(r["reply"]) if r["reply"] else None,
            "replied": r["replied"]}
