"""Store-and-forward of what the host must still hear: pending reversals.

A reversal is journaled before its first send; it gets its own STAN and field 7
at that first send (journaled too), and every later send is a 0401 repeat with
exactly the same fields. It ends only with an 0410 answering 00 or 25; anything
else (another code, no answer, no connection) schedules a repeat with
full-jitter backoff (base and cap from configuration), without limit, across
restarts. Reversals go out before any other message: `flush()` runs right after
each sign-on and before each sale's request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timezone

from firmware.config import HostConfig
from firmware.core import iso
from firmware.core.backoff import full_jitter
from firmware.errors import HostError, HostUnreachableError
from firmware.runtime import failpoints
from firmware.runtime.hostlink import HostLink, Pending
from firmware.runtime.journal import Journal, PendingReversal

log = logging.getLogger("posterm.forward")
REVERSAL_DONE = {"00", "25"}


class Forwarder:
    def __init__(self, journal: Journal, link: HostLink, cfg: HostConfig,
                 rng: random.Random | None = None) -> None:
        self.journal, self.link, self.cfg = journal, link, cfg
        self.rng = rng or random.Random()
        self._in_flight: set[int] = set()
        self._not_before: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def kick(self) -> None:
        self._wake.set()

    def idle(self) -> bool:
        return not self._in_flight and not self.journal.pending_reversal_ids()

    async def run(self) -> None:
        while True:
            due = self._next_due()
            if due is not None and due <= time.monotonic():
                try:
                    await self.link.ensure_connected()  # flush() runs on a new connection
                    await self.flush()
                except HostUnreachableError:
                    self._postpone_all()
            self._wake.clear()
            due = self._next_due()
            wait = None if due is None else max(0.05, due - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def _next_due(self) -> float | None:
        ids = [i for i in self.journal.pending_reversal_ids() if i not in self._in_flight]
        if not ids:
            return None
        return min(self._not_before.get(i, 0.0) for i in ids)

    def _postpone_all(self) -> None:
        for rev_id in self.journal.pending_reversal_ids():
            if rev_id not in self._in_flight:
                self._backoff(rev_id)

    def _backoff(self, rev_id: int) -> None:
        tries = self.journal.reversal_tries(rev_id)
        delay = full_jitter(max(0, tries - 1), self.cfg.repeat_backoff_base,
                            self.cfg.repeat_backoff_cap, self.rng.random())
        self._not_before[rev_id] = time.monotonic() + delay

    async def flush(self, *, due_only: bool = True) -> None:
        """Write every pending reversal that is due and not in flight (no waiting)."""
        now = time.monotonic()
        for rev in self.journal.pending_reversals():
            if rev.id in self._in_flight:
                continue
            if due_only and self._not_before.get(rev.id, 0.0) > now:
                continue
            await self._send(rev)

    async def _send(self, rev: PendingReversal) -> None:
        repeat = rev.stan is not None
        stan, f7 = self.journal.reversal_identity(
            rev.id, iso.f7(datetime.now(timezone.utc)))
        failpoints.hit("after_reversal_identity")
        doc = iso.reversal(rev.fields, orig_mti="0200", orig_stan=rev.orig_stan,
                           orig_f7=rev.orig_f7, stan=int(stan), f7=f7, reason=rev.reason)
        if repeat:
            doc = iso.repeat(doc)
        self._in_flight.add(rev.id)
        try:
            pending = self.link._write(doc) if self.link.connected else await self.link.send(doc)
        except HostUnreachableError:
            self._in_flight.discard(rev.id)
            self._backoff(rev.id)
            return
        failpoints.hit("after_reversal_sent")
        log.info("reversal of sale %d: %s stan %s sent (reason %s)", rev.sale_id, doc["t"],
                 stan, rev.reason)
        task = asyncio.create_task(self._await(rev, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await(self, rev: PendingReversal, pending: Pending) -> None:
        code = ""
        try:
            answer = await pending.wait(self.cfg.response_timeout)
            code = answer.get("39", "")
        except HostError as exc:
            log.warning("reversal of sale %d: %s; will repeat", rev.sale_id, exc)
        try:
            if code in REVERSAL_DONE:
                self.journal.reversal_done(rev.id, code)
                self._not_before.pop(rev.id, None)
                log.info("reversal of sale %d done (0410 code %s)", rev.sale_id, code)
            else:
                if code:
                    log.warning("reversal of sale %d answered %s; will repeat", rev.sale_id, code)
                self.journal.reversal_tried(rev.id, code)
                self._backoff(rev.id)
        finally:
            self._in_flight.discard(rev.id)
            self.kick()

