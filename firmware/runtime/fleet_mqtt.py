"""The fleet channel's MQTT connection, in its own thread: never on the sale's path.

paho-mqtt 2.x, MQTT 3.1.1, client id = the terminal id, TLS with the terminal's client
certificate. One thread (`fleet mqtt`) owns the network: it connects to the brokers of
`[fleet] brokers` in turn, runs paho's loop while connected, and after a round in which
no broker could be reached (or after a connection is lost) sleeps `reconnect_delay`: a
full-jitter backoff (core/backoff.py) plus the terminal's own offset (core/link.py's
`terminal_offset`) spread over OFFSET_SPREAD times `[fleet] reconnect_base`, so a fleet
whose broker comes back does not reconnect all at once (bench/fleet_storm.py).

Every connection leaves its last will (`state` offline, retained) and, once accepted,
subscribes to its `cmd` topic. `publish` is paho's, thread-safe and non-blocking: the
event loop hands a message over (paho queues it and wakes this thread, which alone
writes to the socket) and goes on; QoS 1 messages not yet acknowledged are
sent again by paho after a reconnect. What the network says comes back through the
callbacks given, called in this thread (the channel moves them onto the event loop).
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware.config_fleet import FleetTable
from firmware.core.backoff import full_jitter
from firmware.core.link import terminal_offset

log = logging.getLogger("posterm.fleet")
# The terminal's offset is spread over [0, OFFSET_SPREAD * base): wider than the host
# probe's [0, base). The first reconnect after a broker restart is the offset plus a full
# jitter under base, so the fleet comes back at most N / (OFFSET_SPREAD * base) terminals
# a second (10,000 terminals, base 5 s: 500 a second), at the price of the last terminal
# being back (OFFSET_SPREAD + 1) * base after the broker is. The channel is off the
# sale's path and its events wait in the journal's outbox: the delay costs nothing at
# the counter.
OFFSET_SPREAD = 4


def reconnect_delay(tid: str, rounds: int, base: float, cap: float, draw: float) -> float:
    """Seconds before the next round of connections: `rounds` the rounds in a row that
    reached no broker (0 after a lost connection), `draw` uniform in [0, 1)."""
    return terminal_offset(tid, OFFSET_SPREAD * base) + full_jitter(rounds, base, cap, draw)


class Connection:
    def __init__(self, cfg: FleetTable, tid: str, *, will: Callable[[], tuple[str, bytes]],
                 on_up: Callable[[str], object], on_down: Callable[[], object],
                 on_message: Callable[[str, bytes], object],
                 on_published: Callable[[int], object]) -> None:
        self.cfg, self.tid, self.will = cfg, tid, will
        self.on_up, self.on_down, self.on_message = on_up, on_down, on_message
        self.on_published = on_published
        self.broker = ""  # "host:port" while connected
        self._up = threading.Event()
        self._stop = threading.Event()
        self._rng = random.Random()
        self._thread: threading.Thread | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=tid,
                        protocol=mqtt.MQTTv311, clean_session=True)
        c.connect_timeout = 5.0
        if cfg.tls:
            c.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.client_cert or None,
                      keyfile=cfg.client_key or None, cert_reqs=ssl.CERT_REQUIRED,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect, c.on_disconnect = self._connected, self._disconnected
        c.on_message, c.on_publish = self._message, self._published
        # paho writes a message at once from the thread that publishes it unless it is
        # told someone else writes: then it only wakes this thread's select, and the
        # socket (and its TLS state) is touched by this thread alone
        c.on_socket_register_write = lambda client, userdata, sock: None
        self.client = c

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet mqtt", daemon=True)
        self._thread.start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 0,
                retain: bool = False) -> int | None:
        """Hand a message to paho; its mid (QoS 1: `on_published(mid)` at its PUBACK), or
        None when it was not taken."""
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, RuntimeError, OSError) as exc:
            log.debug("fleet publish on %s not taken: %s", topic, exc)
            return None
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return None
        return info.mid

    def stop(self, last: tuple[str, bytes] | None, timeout: float = 2.0) -> None:
        """Blocking (run it off the loop): say `last` (retained, QoS 1) when connected and
        wait a little for its PUBACK; then the thread disconnects and ends."""
        if last is not None and self.connected:
            try:
                info = self.client.publish(last[0], last[1], qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (ValueError, RuntimeError, OSError) as exc:
                log.debug("fleet: last state not sent: %s", exc)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 3)

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        brokers = self.cfg.brokers
        rounds = 0
        while not self._stop.is_set():
            reached = False
            for host, port in brokers:
                if self._stop.is_set():
                    return
                reached = self._session(host, port) or reached
                if reached:
                    break
            rounds = 0 if reached else rounds + 1
            pause = reconnect_delay(self.tid, rounds, self.cfg.reconnect_base,
                                    self.cfg.reconnect_cap, self._rng.random())
            self._stop.wait(pause)

    def _session(self, host: str, port: int) -> bool:
        """One connection to one broker, until it ends; True if it was accepted."""
        topic, payload = self.will()
        self.client.will_set(topic, payload, qos=1, retain=True)
        try:
            self.client.connect(host, port, keepalive=self.cfg.keepalive)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.info("fleet broker %s:%d not reached: %s", host, port, exc)
            return False
        self.broker = f"{host}:{port}"
        accepted = False
        try:
            while not self._stop.is_set():
                # connected, the thread sleeps until the socket or a publish from another
                # thread (paho's wake-up pair) needs it, or half the keepalive: no tick
                # every second while the terminal rests
                wait = min(self.cfg.keepalive / 2, 30.0) if self.connected else 1.0
                if self.client.loop(timeout=wait) != mqtt.MQTT_ERR_SUCCESS:
                    break
                accepted = accepted or self.connected
        except Exception as exc:  # a bug or an odd socket error: this session ends
            log.warning("fleet connection to %s failed: %s: %s", self.broker,
                        type(exc).__name__, exc)
        accepted = accepted or self.connected
        if self.connected:
            self._up.clear()
            self.on_down()
        try:
            self.client.disconnect()
            self.client.loop(timeout=0.1)
        except Exception as exc:
            log.debug("fleet: closing %s: %s", self.broker, exc)
        self.broker = ""
        return accepted

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                   properties: Any) -> None:
        if rc.is_failure:
            log.warning("fleet broker %s refused the connection: %s", self.broker, rc)
            return
        client.subscribe(f"posterm/v1/{self.tid}/cmd", qos=1)
        self._up.set()
        log.info("fleet channel up: %s", self.broker)
        self.on_up(self.broker)

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                      properties: Any) -> None:
        if self._up.is_set():
            log.info("fleet channel down (%s): %s", self.broker, rc)
            self._up.clear()
            self.on_down()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.on_message(message.topic, bytes(message.payload))

    def _published(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                   properties: Any) -> None:
        self.on_published(mid)
