"""The fleet channel's MQTT connection, in its own thread: never on the sale's path.

paho-mqtt 2.x, client id = the terminal id, TLS with the terminal's client
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

MQTT 5 where the broker has it (`[fleet] mqtt = "auto"`, the default): each broker is
asked for 5 first. One that refuses it, with a CONNACK "unacceptable protocol version"
(NATS's MQTT, which speaks 3.1.1 only, answers a v5 CONNECT so, then closes) or by
closing the connection before any CONNACK, is asked again at once for 3.1.1, and that
broker address is spoken to in 3.1.1 for the rest of the process's life (`_ONLY_311`):
a reconnection does not pay twice. "5" or "3.1.1" forces one. The contract on the wire
is the same in both; 5 adds only what a 3.1.1 peer never sees:

- the session: 3.1.1's clean session is 5's clean start with a session expiry of 0 (the
  session ends with the connection): the same behaviour;
- telemetry carries a message expiry (the caller's: the telemetry interval), after
  which a broker drops it rather than deliver a superseded one;
- the broker's reason codes (and reason string) when it refuses the connection, the
  `cmd` subscription or a message (a PUBACK "not authorized", where 3.1.1 drops the
  message in silence), or ends the connection itself, are logged in its words.

A connection ended by a socket error before any CONNACK (a TLS alert: the broker
refused the terminal's certificate) is no sign of the version: it is logged with the
error, in either version, and 3.1.1 is not tried for it.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from firmware import mqtt5
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
V5, V311 = mqtt.MQTTv5, mqtt.MQTTv311
NAMES = {V5: "5", V311: "3.1.1"}
# CONNACK: 5's "unsupported protocol version" (and 3.1.1's 1, as paho reads it under 5)
UNSUPPORTED_VERSION = 0x84
# broker addresses ("host:port") that refused MQTT 5 in this process, and those that took
# it (never asked for 3.1.1 on a mere closed connection); only the `fleet mqtt` thread
# writes them
_ONLY_311: set[str] = set()
_TOOK_5: set[str] = set()
# what one connection came to
ACCEPTED, REFUSED_VERSION, CLOSED, FAILED = "accepted", "refused version", "closed", "failed"


def reconnect_delay(tid: str, rounds: int, base: float, cap: float, draw: float) -> float:
    """Seconds before the next round of connections: `rounds` the rounds in a row that
    reached no broker (0 after a lost connection), `draw` uniform in [0, 1)."""
    return terminal_offset(tid, OFFSET_SPREAD * base) + full_jitter(rounds, base, cap, draw)


def protocol_for(choice: str, broker: str) -> MQTTProtocolVersion:
    """The MQTT version to ask `broker` for, `choice` being `[fleet] mqtt`."""
    if choice in NAMES.values():
        return V5 if choice == "5" else V311
    return V311 if broker in _ONLY_311 else V5


class Connection:
    def __init__(self, cfg: FleetTable, tid: str, *, will: Callable[[], tuple[str, bytes]],
                 on_up: Callable[[str], object], on_down: Callable[[], object],
                 on_message: Callable[[str, bytes], object],
                 on_published: Callable[[int], object]) -> None:
        self.cfg, self.tid, self.will = cfg, tid, will
        self.on_up, self.on_down, self.on_message = on_up, on_down, on_message
        self.on_published = on_published
        self.broker = ""  # "host:port" while connected
        self.protocol: MQTTProtocolVersion = V311  # this connection's version (or the last's)
        self._connack: Any = None  # the last connection's CONNACK reason code, if any
        self._socket_error = ""  # what paho said of the last connection's socket, if it failed
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
        c.on_subscribe = self._subscribed
        c.on_log = self._paho_said
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

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                expiry: int | None = None) -> int | None:
        """Hand a message to paho; its mid (QoS 1: `on_published(mid)` at its PUBACK), or
        None when it was not taken. `expiry`: seconds after which a broker speaking MQTT 5
        drops it undelivered (3.1.1 has no such thing: paho leaves it out)."""
        props = None if expiry is None else mqtt5.properties(
            PacketTypes.PUBLISH, MessageExpiryInterval=max(1, int(expiry)))
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
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
        """One connection to one broker, until it ends; True if it was accepted. Under
        "auto", a broker that refuses MQTT 5 is asked for 3.1.1 at once."""
        broker = f"{host}:{port}"
        protocol = protocol_for(self.cfg.mqtt, broker)
        outcome = self._attempt(host, port, protocol)
        if protocol == V5 and self.cfg.mqtt == "auto" and broker not in _TOOK_5 \
                and outcome in (REFUSED_VERSION, CLOSED) and not self._stop.is_set():
            said = "refused it" if outcome == REFUSED_VERSION else \
                "closed the connection before answering"
            log.info("fleet broker %s does not take MQTT 5 (%s): MQTT 3.1.1 with it", broker,
                     said)
            if outcome == REFUSED_VERSION:
                _ONLY_311.add(broker)
            outcome = self._attempt(host, port, V311)
            if outcome == ACCEPTED:
                _ONLY_311.add(broker)
        elif outcome == ACCEPTED and protocol == V5:
            _TOOK_5.add(broker)
        return outcome == ACCEPTED

    def _attempt(self, host: str, port: int, protocol: MQTTProtocolVersion) -> str:
        """One connection in one MQTT version, until it ends: ACCEPTED, REFUSED_VERSION
        (its CONNACK said so), CLOSED (ended before any CONNACK) or FAILED."""
        topic, payload = self.will()
        c = self.client
        # paho fixes the version when the client is made; between two connections it may
        # change (paho does the same when it falls back from 3.1.1 to 3.1): one client,
        # so the QoS 1 messages it holds go out again on the next connection, whatever
        # its version, and their mids stay the channel's
        c._protocol = self.protocol = protocol
        c.will_set(topic, payload, qos=1, retain=True)
        self._connack, self._socket_error = None, ""
        try:
            if protocol == V5:
                # 3.1.1's clean session: a clean start, and a session that ends with the
                # connection
                c.connect(host, port, keepalive=self.cfg.keepalive, clean_start=True,
                          properties=mqtt5.properties(PacketTypes.CONNECT, SessionExpiryInterval=0))
            else:
                c.connect(host, port, keepalive=self.cfg.keepalive)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.info("fleet broker %s:%d not reached: %s", host, port, exc)
            return FAILED
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
        broker, self.broker = self.broker, ""
        if accepted:
            return ACCEPTED
        if self._connack is None and self._socket_error:  # a TLS alert: not the version
            log.warning("fleet broker %s ended the connection: %s%s", broker,
                        self._socket_error, " (the terminal's certificate refused?)"
                        if "alert" in self._socket_error.lower() else "")
            return FAILED
        if self._connack is None:
            return CLOSED
        return REFUSED_VERSION if self._connack == UNSUPPORTED_VERSION else FAILED

    def _paho_said(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        # a broker that refuses the terminal's certificate answers with a TLS alert, which
        # paho only logs, then reads as a lost connection: kept for the session's end
        if level == mqtt.MQTT_LOG_ERR and "on socket" in text and not self._socket_error:
            self._socket_error = text.partition("on socket: ")[2] or text

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                   properties: Any) -> None:
        self._connack = rc
        if rc.is_failure:
            if not (rc == UNSUPPORTED_VERSION and self.cfg.mqtt == "auto"):  # said after
                log.warning("fleet broker %s refused the connection (MQTT %s): %s",
                            self.broker, NAMES.get(self.protocol), mqtt5.why(rc, properties))
            return
        client.subscribe(f"posterm/v1/{self.tid}/cmd", qos=1)
        self._up.set()
        log.info("fleet channel up: %s (MQTT %s)", self.broker, NAMES.get(self.protocol))
        self.on_up(self.broker)

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                      properties: Any) -> None:
        if self._up.is_set():
            log.info("fleet channel down (%s): %s", self.broker, mqtt5.why(rc, properties))
            self._up.clear()
            self.on_down()

    def _subscribed(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any,
                    properties: Any) -> None:
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            log.warning("fleet broker %s refused the subscription to the commands: %s",
                        self.broker, mqtt5.why(refused[0], properties))

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.on_message(message.topic, bytes(message.payload))

    def _published(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                   properties: Any) -> None:
        # MQTT 5: the broker may say it did not take the message (not authorized, quota);
        # 3.1.1 acknowledges and drops it. Either way it is done with: logged, not resent.
        if getattr(rc, "is_failure", False):
            log.warning("fleet broker %s refused message %d: %s", self.broker, mid,
                        mqtt5.why(rc, properties))
        self.on_published(mid)
