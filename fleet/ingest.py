"""The subscriber: everything the fleet says, into the store, exactly once.

One paho client subscribes to `posterm/v1/+/#` (QoS 1) with a persistent session
(`clean_session=False`, a fixed client id): while the console is away the broker keeps
its QoS 1 messages (up to the broker's queue bound), and a restarted console gets
them. Each message goes from paho's network thread onto a queue; one writer thread
takes what has gathered (up to `BATCH` at a time), writes it in one transaction and
only then acknowledges the QoS 1 messages of the batch (paho's `manual_ack`). So a
message the broker counts as delivered is on disk, and a message delivered twice
(no PUBACK before a crash, a terminal resending after an outage) is one row: events
are keyed by (tid, seq) in the store. Exactly once, from at least once.

Replies wake whoever waits for them (`expect` before publishing, then `wait_reply`).

MQTT 5 where the broker has it (fleet/mqtt.py): the persistent session is said as a
session expiry that never comes, and a subscription or a command the broker refuses is
logged with its reason code; paho reconnects in the version first agreed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from fleet import TOPIC_ROOT
from firmware import mqtt5
from fleet.mqtt import Broker, client, connect, topic
from fleet.store import Store

log = logging.getLogger("posterm.fleet.ingest")

SUBSCRIPTION = f"{TOPIC_ROOT}/+/#"
BATCH = 2000
CLIENT_ID = "posterm-fleet"


@dataclass
class Counts:
    received: int = 0
    events: int = 0
    duplicates: int = 0
    rejected: int = 0
    unmatched: int = 0
    batches: int = 0


class Ingest:
    """The subscriber and its writer thread (see the module docstring)."""

    def __init__(self, db: Path, broker: Broker, client_id: str = CLIENT_ID,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.db, self.broker, self.clock = db, broker, clock
        self.client = client(broker, client_id, clean=False, manual_ack=True)
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.counts = Counts()
        self._inbox: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._cond = threading.Condition()
        self._replies: dict[str, dict[str, Any] | None] = {}  # id expected -> its reply
        self.idle = threading.Event()  # set when the writer has nothing left to write

    # -- life ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe (again after each reconnection), start writing."""
        Store(self.db).close()  # the schema, before anyone reads
        self._writer = threading.Thread(target=self._write, name="fleet-writer", daemon=True)
        self._writer.start()
        subscribed = threading.Event()

        def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, codes: Any,
                         properties: Any) -> None:
            bad = [code for code in codes if getattr(code, "is_failure", False)]
            if bad:
                log.error("the broker refused the console's subscription to %s: %s",
                          SUBSCRIPTION, mqtt5.why(bad[0], properties))
            subscribed.set()

        self.client.on_subscribe = on_subscribe
        connect(self.client, self.broker, timeout)
        self.client.on_connect = self._on_reconnect
        self.client.subscribe(SUBSCRIPTION, qos=1)
        if not subscribed.wait(timeout):
            raise TimeoutError("the broker did not confirm the console's subscription")
        log.info("fleet console subscribed to %s on %s (MQTT %s)", SUBSCRIPTION,
                 self.broker.address, self.client.version())

    def _on_reconnect(self, c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused the console: %s", mqtt5.why(reason, properties))
            return
        c.subscribe(SUBSCRIPTION, qos=1)

    def _on_publish(self, c: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):  # MQTT 5: a command the broker refused
            log.warning("the broker refused a command (message %d): %s", mid,
                        mqtt5.why(reason, properties))

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._inbox.put(None)
        if self._writer is not None:
            self._writer.join(timeout=30)

    # -- receiving and writing ------------------------------------------------------

    def _on_message(self, c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.idle.clear()
        self._inbox.put(msg)

    def _write(self) -> None:
        store = Store(self.db)
        try:
            while True:
                first = self._inbox.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        more = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._inbox.put(None)
                        break
                    batch.append(more)
                self._store(store, batch)
                if self._inbox.empty():
                    self.idle.set()
        finally:
            store.close()

    def _store(self, store: Store, batch: list[mqtt.MQTTMessage]) -> None:
        try:
            done = store.apply(((m.topic, m.payload) for m in batch), self.clock())
        except Exception:  # the disk, the database: nothing acknowledged, the broker resends
            log.exception("fleet store write failed: %d messages not acknowledged", len(batch))
            return
        for m in batch:
            if m.qos:
                self.client.ack(m.mid, m.qos)
        c = self.counts
        c.received += len(batch)
        c.events += done.events
        c.duplicates += done.duplicates
        c.rejected += done.rejected
        c.unmatched += done.unmatched
        c.batches += 1
        if done.replies:
            with self._cond:
                for reply in done.replies:
                    if reply["id"] in self._replies:
                        self._replies[reply["id"]] = reply
                self._cond.notify_all()

    # -- commands -------------------------------------------------------------------

    def expect(self, command_id: str) -> None:
        """Say a reply to `command_id` is awaited (before the command is published)."""
        with self._cond:
            self._replies.setdefault(command_id, None)

    def publish(self, tid: str, command: dict[str, Any], timeout: float = 10.0) -> None:
        info = self.client.publish(topic(tid, "cmd"), json.dumps(command), qos=1)
        info.wait_for_publish(timeout)

    def wait_reply(self, command_id: str, timeout: float) -> dict[str, Any] | None:
        """The reply to an `expect`ed command, or None after `timeout` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._replies.get(command_id) is not None, timeout)
            return self._replies.pop(command_id, None)
