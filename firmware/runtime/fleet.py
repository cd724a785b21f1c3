"""The terminal in its fleet: the management channel over MQTT (docs/fleet.md).

Off the sale's path. The network is paho's, in its own thread (fleet_mqtt.py); on the
event loop this part only writes an event into the journal's outbox (journal_fleet.py,
no fsync of its own) or hands a message to paho, and never awaits the broker where a
sale is concerned: a broker down or slow changes nothing at the counter.

- `state` (retained): online once connected, offline as the last will and on a clean
  stop.
- `telemetry` (QoS 0): the facts `posterm status` gathers (livestatus.py), shaped as
  docs/fleet.md says (fleet_words.facts), every `[fleet] telemetry_interval` and when
  something changes (the link, the queues, a device's condition, a sale's end, a close).
- `events` (QoS 1): from the durable outbox, one at a time in seq order, each removed
  only at its PUBACK, so they arrive in order after any outage and across restarts.
- `cmd` -> `reply`: ping, status, close and restart (at the next idle moment), logs (the
  last lines, scrubbed); restart, params and update must be signed by the fleet's key;
  a stale or replayed command is refused. params (fleet_params.py): a parameter set
  checked by the configuration's own code, applied at idle by a restart; update
  (fleet_update.py): a bundle fetched over HTTPS and handed to `posterm update`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware.config import Config
from firmware.config_fleet import FleetTable
from firmware.core.events import (
    CloseDue, CloseFinished, ConditionChanged, Event, LinkChanged, PathChanged, QueueChanged,
)
from firmware.core.model import SaleRecord
from firmware.runtime import fleet_words as words
from firmware.runtime.clock import SYSTEM, Clock
from firmware.runtime.fleet_mqtt import Connection
from firmware.runtime.fleet_params import Params
from firmware.runtime.fleet_update import FleetUpdate
from firmware.runtime.journal import Journal

log = logging.getLogger("posterm.fleet")
RESTART_NOTE = "fleet_restart_reason"  # why the terminal restarts, for the next start's event
SEEN_NOTE = "fleet_seen_commands"  # {id: t} of the commands taken in the last minutes
ACK_PATIENCE = 60.0  # seconds connected without the PUBACK of an event: send it again
CHANGES = (LinkChanged, QueueChanged, PathChanged, ConditionChanged, CloseFinished)


def _steady(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts but the uptime, which always changes."""
    return {**facts, "device": {**facts["device"], "uptime": 0}}


class RecentLog(logging.Handler):
    """The last lines this run logged, for `logs` when no log file is configured."""

    def __init__(self, size: int = words.LOG_LINES_MAX) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not worth a failure
            pass


class FleetChannel:
    def __init__(self, cfg: FleetTable, tid: str, journal: Journal, *,
                 facts: Callable[[], Awaitable[dict[str, Any]]], idle: Callable[[], bool],
                 emit: Callable[[Event], None], restart: Callable[[], None], version: str,
                 clock: Clock = SYSTEM, config: Config | None = None) -> None:
        self.cfg, self.tid, self.journal, self.clock = cfg, tid.strip(), journal, clock
        self.status_doc, self.idle, self.emit, self.restart = facts, idle, emit, restart
        self.version = version
        self.since, self.started = clock.utc(), clock.monotonic()
        self.key: Ed25519PublicKey | None = None
        if cfg.command_key:  # checked by the configuration: an Ed25519 key in PEM
            key = serialization.load_pem_public_key(Path(cfg.command_key).read_bytes())
            self.key = key if isinstance(key, Ed25519PublicKey) else None
        self.conditions: dict[str, str] = {}
        self._path: tuple[str, int, str] | None = None  # the last PathChanged seen
        self.recent = RecentLog()
        logging.getLogger("posterm").addHandler(self.recent)
        self.conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()  # the publisher: an event, a PUBACK, a connection
        self._changed = asyncio.Event()  # the telemetry: something changed
        self._up = asyncio.Event()
        self._inflight: tuple[int, str, int] | None = None  # (seq, kind, mid)
        self._acked = False
        self._tasks: set[asyncio.Task[None]] = set()
        reason = journal.note(RESTART_NOTE) or "start"
        journal.set_note(RESTART_NOTE, "", durable=False)
        self.event("restart", {"reason": reason})
        # params and update need the whole configuration (None: refused, not implemented)
        self.params = Params(config, journal)
        applied = self.params.started()
        if applied is not None:
            log.info("fleet parameters version %s applied", applied["version"])
            self.event("params", applied)
        self.updates = FleetUpdate(config, journal, version=version, event=self.event,
                                   ca_file=cfg.ca_file)
        self.updates.started()

    # -- what the runtime tells it (on the loop; never waits) ---------------------------
    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Keep an event for the fleet (the journal's outbox) and wake the publisher."""
        self.journal.fleet_add(kind, data, words.utc(self.clock.utc()),
                               bound=self.cfg.outbox_max)
        self._wake.set()

    def sale_ended(self, rec: SaleRecord) -> None:
        self.event("sale", words.sale_data(rec.sale_id, rec.kind, rec.amount, rec.status,
                                           rec.entry))
        self._changed.set()

    def observe(self, event: Event) -> None:
        """Every event the parts emit passes here first: faults, recoveries, closes, and
        the changes that call for telemetry."""
        if isinstance(event, ConditionChanged):
            before = self.conditions.get(event.source, "")
            if event.text != before:
                self.conditions[event.source] = event.text
                self.event("fault" if event.text else "recovery",
                           {"source": event.source, "text": event.text or before})
        elif isinstance(event, CloseFinished):
            self.event("close", {"batch": event.batch, "ok": event.ok,
                                 "balanced": event.balanced, "message": event.message})
        if isinstance(event, PathChanged):  # the modem's poll says the same every 30 s
            path = (event.path, event.bars, event.detail)
            if path == self._path:
                return
            self._path = path
        if isinstance(event, CHANGES):
            self._changed.set()

    def restarting(self, reason: str) -> None:
        """The terminal is about to restart (the daily restart): said at the next start."""
        self.journal.set_note(RESTART_NOTE, reason)

    # -- the supervised task ------------------------------------------------------------
    async def run(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        conn = Connection(
            self.cfg, self.tid, will=lambda: (self._topic("state"), self._state(False)),
            on_up=lambda broker: loop.call_soon_threadsafe(self._connected, broker),
            on_down=lambda: loop.call_soon_threadsafe(self._disconnected),
            on_message=lambda topic, payload: loop.call_soon_threadsafe(self._command,
                                                                        payload),
            on_published=lambda mid: loop.call_soon_threadsafe(self._published, mid))
        self.conn, self._inflight = conn, None
        conn.start()
        if self.params.due():  # a set journaled, not yet written (a stop in between)
            self._at_idle("applied", self._apply_params)
        try:
            await asyncio.gather(self._publisher(), self._telemetry())
        finally:
            self._up.clear()
            for task in list(self._tasks):
                task.cancel()
            last = (self._topic("state"), self._state(False))
            await asyncio.shield(asyncio.to_thread(conn.stop, last))

    def close(self) -> None:
        logging.getLogger("posterm").removeHandler(self.recent)

    def _topic(self, leaf: str) -> str:
        return words.topic(self.tid, leaf)

    def _state(self, online: bool) -> bytes:
        return words.state(self.tid, online, self.version,
                           self.clock.utc() if not online else self.since)

    def _connected(self, broker: str) -> None:
        if self.conn is None:
            return
        self.conn.publish(self._topic("state"), self._state(True), qos=1, retain=True)
        self._up.set()
        self._wake.set()
        self._changed.set()

    def _disconnected(self) -> None:
        self._up.clear()

    def _published(self, mid: int) -> None:
        if self._inflight is not None and self._inflight[2] == mid:
            self._acked = True
            self._wake.set()

    async def _wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _publisher(self) -> None:
        """The outbox, oldest first, one event at a time, each taken off at its PUBACK."""
        assert self.conn is not None
        conn = self.conn
        sent_at = 0.0
        while True:
            self._wake.clear()
            if self._inflight is not None and self._acked:
                seq, kind, _ = self._inflight
                self.journal.fleet_sent(seq, kind)
                self._inflight, self._acked = None, False
            if not self._up.is_set():
                await self._wait(self._up, None)
                continue
            if self._inflight is not None:  # paho sends it again after a reconnect
                if self.clock.monotonic() - sent_at < ACK_PATIENCE:
                    await self._wait(self._wake, ACK_PATIENCE)
                    continue
                self._inflight = None  # no PUBACK for too long: once more
            ev = self.journal.fleet_next()
            if ev is None:
                await self._wait(self._wake, None)
                continue
            mid = conn.publish(self._topic("events"),
                               words.event(self.tid, ev.seq, ev.t, ev.kind, ev.data), qos=1)
            if mid is None:
                await self._wait(self._wake, 1.0)
                continue
            self._inflight, self._acked, sent_at = (ev.seq, ev.kind, mid), False, \
                self.clock.monotonic()

    async def _facts(self) -> dict[str, Any]:
        doc = await self.status_doc()
        facts = words.facts(doc, now=self.clock.utc(), uptime=self.clock.monotonic()
                            - self.started, conditions=self.conditions)
        facts["device"]["params_version"] = self.params.version()
        return facts

    async def _telemetry(self) -> None:
        """Every telemetry_interval, and soon after a change (if the facts differ)."""
        assert self.conn is not None
        last: dict[str, Any] | None = None
        last_at = -self.cfg.telemetry_interval
        while True:
            if not self._up.is_set():
                last = None  # a new connection gets the facts at once
                await self._wait(self._up, None)
                continue
            left = self.cfg.telemetry_interval - (self.clock.monotonic() - last_at)
            changed = left > 0 and await self._wait(self._changed, left)
            if changed:
                await asyncio.sleep(0.3)  # a burst of changes: one message
            self._changed.clear()
            facts = await self._facts()
            if changed and last is not None and _steady(facts) == _steady(last):
                continue
            payload = words.dumps({"tid": self.tid, "t": words.utc(self.clock.utc()),
                                   "facts": facts})
            # MQTT 5: a telemetry older than its interval is superseded: a broker drops it
            if self.conn.publish(self._topic("telemetry"), payload, qos=0,
                                 expiry=math.ceil(self.cfg.telemetry_interval)) is not None:
                last, last_at = facts, self.clock.monotonic()

    # -- commands -----------------------------------------------------------------------
    def _command(self, raw: bytes) -> None:
        self._spawn(self._answer(raw))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _seen(self) -> dict[str, str]:
        try:
            seen = json.loads(self.journal.note(SEEN_NOTE) or "{}")
        except ValueError:
            return {}
        now = self.clock.utc()
        return {k: v for k, v in seen.items() if isinstance(v, str)
                and (t := words.parse_utc(v)) is not None and now - t <= 2 * words.MAX_AGE}

    async def _answer(self, raw: bytes) -> None:
        cid: Any = None
        try:
            cid = json.loads(raw).get("id")
        except (ValueError, AttributeError):
            pass
        try:
            seen = self._seen()
            command = words.check(raw, now=self.clock.utc(), seen=seen, key=self.key)
            seen[command["id"]] = words.utc(self.clock.utc())
            self.journal.set_note(SEEN_NOTE, json.dumps(seen), durable=False)
            log.info("fleet command %s (%s)", command["cmd"], words.scrub(command["id"]))
            result = await self._do(command["cmd"], command.get("args", {}))
            reply: dict[str, Any] = {"id": cid, "ok": True, "result": result}
        except words.Refused as exc:
            log.warning("fleet command refused: %s", exc)
            reply = {"id": cid if isinstance(cid, str) else None, "ok": False,
                     "error": str(exc)}
        if self.conn is not None:
            self.conn.publish(self._topic("reply"), words.dumps(reply), qos=1)

    async def _do(self, name: str, args: dict[str, Any]) -> Any:
        if name == "ping":
            return {"pong": words.utc(self.clock.utc())}
        if name == "status":
            return await self._facts()
        if name == "logs":
            return {"lines": words.log_lines(self._log_lines(), args.get("lines", 50))}
        if name == "close":
            return self._at_idle("close", lambda: self.emit(CloseDue()))
        if name == "restart":
            return self._at_idle("restart", self._restart_now)
        if name == "params":
            version, tables = await asyncio.to_thread(self.params.check, args)
            self.params.take(version, tables)
            log.info("fleet parameters version %d taken: %s", version, sorted(tables))
            return {**self._at_idle("applied", self._apply_params), "version": version}
        if name == "update":
            url, digest = self.updates.check(args)
            self._spawn(self.updates.run(url, digest, self.idle))
            return {"update": "downloading"}
        raise words.Refused("not implemented")

    def _apply_params(self) -> None:
        try:
            version = self.params.write()
        except OSError as exc:  # the state directory full or read-only: the set waits
            log.error("fleet parameters cannot be written: %s", exc)
            return
        if version is not None:
            self.journal.set_note(RESTART_NOTE, f"fleet parameters {version}")
            log.info("restart for the fleet parameters version %d", version)
            self.restart()

    def _restart_now(self) -> None:
        self.journal.set_note(RESTART_NOTE, "fleet command")
        log.info("restart asked by the fleet")
        self.restart()

    def _at_idle(self, what: str, do: Callable[[], None]) -> dict[str, Any]:
        """Do it now if the terminal is idle, else at its next idle moment."""
        if self.idle():
            do()
            return {what: "now"}

        async def later() -> None:
            while not self.idle():
                await asyncio.sleep(0.5)  # only while a command waits: never at rest
            do()
        task = asyncio.ensure_future(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {what: "at idle"}

    def _log_lines(self) -> list[str]:
        if not self.cfg.log_file:
            return list(self.recent.lines)
        try:
            with open(self.cfg.log_file, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 256 * 1024))
                cut = f.tell() > 0  # the first line read may be a part of one
                return f.read().decode("utf-8", "replace").splitlines()[1 if cut else 0:]
        except OSError as exc:
            raise words.Refused(f"log file: {exc.strerror or exc}") from None
