"""The console's MQTT connection: paho-mqtt 2.x, TLS with its own client certificate.

`Broker` is where and how to connect: TLS verified against `ca` with the console's
certificate (`cert`, `cert_key`), or plain TCP only when `plain` is set (tests, a
broker on loopback), and which MQTT version (`mqtt`, `--mqtt`): "auto" (the default)
asks for 5 and, from a broker that refuses it (a CONNACK "unacceptable protocol
version", as NATS's MQTT answers, or a connection closed before any CONNACK without
a socket error: a TLS alert is a refused certificate, said as such), 3.1.1 at once;
that broker is then spoken to in 3.1.1 for the rest of the process's life, by every
client (`send` makes one per command). "5" or "3.1.1" forces one. A client keeps
its version across paho's own reconnections.

What 5 brings, none of it seen by a 3.1.1 peer: the session's lifetime said as a
session expiry (the subscriber's persistent session never expires, as 3.1.1's does
not; a `send` client's ends with its connection, as 3.1.1's clean session), and the
broker's reason codes when it refuses the console, its subscription or its command
(`send` says "not authorized" at once where 3.1.1 waits for a reply that cannot come).

`send` is `posterm-fleet send`: one short-lived client that subscribes to the
terminal's reply topic, publishes the command (QoS 1) and waits for the reply whose
id matches; other replies on the topic are ignored.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from firmware import mqtt5
from fleet import TOPIC_ROOT

log = logging.getLogger("posterm.fleet.mqtt")

DEFAULT_PORT_TLS, DEFAULT_PORT_PLAIN = 8883, 1883
KEEPALIVE = 30
VERSIONS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
CHOICES = ("auto", *VERSIONS)
UNSUPPORTED_VERSION = 0x84  # CONNACK (3.1.1's 1 as paho reads it under 5)
NEVER = 0xFFFFFFFF  # a session expiry that never comes
_ONLY_311: set[str] = set()  # "host:port" of the brokers that refused 5 in this process
_TOOK_5: set[str] = set()
_memory = threading.Lock()


class BrokerError(RuntimeError):
    """The broker cannot be reached or refused the console: the message says why."""


class BrokerConfigError(ValueError):
    """The broker's options do not make a connection: the message says which."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    plain: bool = False
    ca: Path | None = None
    cert: Path | None = None
    cert_key: Path | None = None
    mqtt: str = "auto"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, plain: bool = False, ca: Path | None = None,
              cert: Path | None = None, cert_key: Path | None = None,
              mqtt: str = "auto") -> Broker:
        """`HOST[:PORT]` (HOST may be [v6]); the port defaults to 8883 (1883 plain)."""
        if mqtt not in CHOICES:
            raise BrokerConfigError(f"--mqtt must be {', '.join(CHOICES)}, not {mqtt!r}")
        host, sep, port = text.rpartition(":")
        if not sep or "]" in port:
            host, port = text, ""
        host = host.strip("[]")
        if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
            raise BrokerConfigError(f"--broker must be HOST[:PORT], not {text!r}")
        if not plain and ca is None:
            raise BrokerConfigError("TLS needs the broker's CA (--ca FILE); --plain for plain TCP")
        if (cert is None) != (cert_key is None):
            raise BrokerConfigError("--cert and --cert-key go together")
        default = DEFAULT_PORT_PLAIN if plain else DEFAULT_PORT_TLS
        return cls(host, int(port) if port else default, plain, ca, cert, cert_key, mqtt)


def topic(tid: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{tid}/{kind}"


class Client(mqtt.Client):
    """paho's client, whose MQTT version `connect` chooses (and may change between two
    connections, as paho itself does when it falls back from 3.1.1 to 3.1)."""

    def __init__(self, client_id: str, clean: bool, manual_ack: bool) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean, protocol=mqtt.MQTTv311, manual_ack=manual_ack)
        self.clean = clean
        self.connack: Any = None  # the last CONNACK's reason code (None: none came)
        self.socket_error = ""  # what paho said of the socket when it failed (a TLS alert)
        self.on_log = self._said

    def _said(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR and "on socket" in text and not self.socket_error:
            self.socket_error = text.partition("on socket: ")[2] or text

    def use(self, version: MQTTProtocolVersion) -> None:
        self._protocol = version

    def version(self) -> str:
        return next((k for k, v in VERSIONS.items() if v == self.protocol), "3.1")


def client(broker: Broker, client_id: str, clean: bool = True,
           manual_ack: bool = False) -> Client:
    """A paho client for `broker`, not yet connected."""
    c = Client(client_id, clean, manual_ack)
    if not broker.plain:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(broker.ca) if broker.ca else None)
        if broker.cert is not None:
            try:
                context.load_cert_chain(str(broker.cert), str(broker.cert_key))
            except (OSError, ssl.SSLError) as exc:
                raise BrokerConfigError(f"cannot load the console's certificate {broker.cert}: "
                                  f"{exc}") from None
        c.tls_set_context(context)
    c.reconnect_delay_set(1, 30)
    return c


def connect(c: Client, broker: Broker, timeout: float) -> None:
    """Connect and start the network thread; BrokerError if not connected in `timeout`.
    Under "auto", a broker that refuses MQTT 5 is asked for 3.1.1 at once."""
    where = broker.address
    with _memory:
        v5 = broker.mqtt == "5" or (broker.mqtt == "auto" and where not in _ONLY_311)
        fallback = broker.mqtt == "auto" and where not in _TOOK_5
    try:
        _connect(c, broker, timeout, mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    except _NotTaken as exc:
        if not (v5 and fallback and (exc.refused or exc.closed)):
            raise BrokerError(str(exc)) from None
        log.info("the broker %s does not take MQTT 5 (%s): MQTT 3.1.1 with it", where,
                 "refused it" if exc.refused else "closed the connection before answering")
        with _memory:
            if exc.refused:
                _ONLY_311.add(where)
        _connect(c, broker, timeout, mqtt.MQTTv311)
        with _memory:
            _ONLY_311.add(where)
        return
    if v5:
        with _memory:
            _TOOK_5.add(where)


class _NotTaken(BrokerError):
    """A connection that ended before it was taken: `refused`, the CONNACK said the MQTT
    version is not one the broker takes; `closed`, it was closed before any CONNACK, with
    no socket error (a TLS alert, a refused certificate, says nothing of the version)."""

    def __init__(self, message: str, refused: bool, closed: bool) -> None:
        super().__init__(message)
        self.refused, self.closed = refused, closed


def _connect(c: Client, broker: Broker, timeout: float,
             version: MQTTProtocolVersion) -> None:
    ready, outcome = threading.Event(), {}
    c.connack, c.socket_error = None, ""

    def on_connect(cl: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        outcome["reason"], c.connack = mqtt5.why(reason, properties), reason
        ready.set()

    def on_gone(cl: mqtt.Client, userdata: Any, *rest: Any) -> None:
        outcome.setdefault("reason", f"the connection was closed ({c.socket_error}: a "
                           "certificate refused?)" if c.socket_error else
                           "the connection was closed (a certificate refused?)")
        ready.set()

    c.use(version)
    c.on_connect = on_connect
    c.on_disconnect = on_gone
    c.on_connect_fail = on_gone
    try:
        if version == mqtt.MQTTv5:
            expiry = 0 if c.clean else NEVER  # as 3.1.1's clean or persistent session
            c.connect(broker.host, broker.port, keepalive=KEEPALIVE, clean_start=c.clean,
                      properties=mqtt5.properties(PacketTypes.CONNECT,
                                             SessionExpiryInterval=expiry))
        else:
            c.connect(broker.host, broker.port, keepalive=KEEPALIVE)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot reach the broker {broker.address}: {exc}") from None
    c.loop_start()
    if not ready.wait(timeout):
        c.loop_stop()
        raise BrokerError(f"the broker {broker.address} did not answer in {timeout:g} s")
    c.on_disconnect = c.on_connect_fail = None
    reason = c.connack
    if reason is None or reason.is_failure:
        c.loop_stop()
        raise _NotTaken(f"the broker {broker.address} refused the console (MQTT "
                       f"{c.version()}): {outcome['reason']}",
                       reason is not None and reason == UNSUPPORTED_VERSION,
                       closed=reason is None and not c.socket_error)


def send(broker: Broker, tid: str, command: dict[str, Any],
         timeout: float) -> dict[str, Any] | None:
    """Publish `command` to `tid` and wait for its reply (None: none within `timeout`)."""
    c = client(broker, f"posterm-fleet-send-{uuid.uuid4().hex[:12]}")
    reply: dict[str, Any] = {}
    got, subscribed = threading.Event(), threading.Event()

    def on_message(cl: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("id") == command["id"]:
            reply.update(doc)
            got.set()

    refused: dict[str, str] = {}  # what the broker refused (MQTT 5 says why): its reason

    def on_subscribe(cl: mqtt.Client, userdata: Any, mid: int, codes: Any,
                     properties: Any) -> None:
        bad = [code for code in codes if getattr(code, "is_failure", False)]
        if bad:
            refused["subscription to the reply"] = mqtt5.why(bad[0], properties)
        subscribed.set()

    def on_publish(cl: mqtt.Client, userdata: Any, mid: int, reason: Any,
                   properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            refused["command"] = mqtt5.why(reason, properties)

    c.on_message = on_message
    c.on_subscribe = on_subscribe
    c.on_publish = on_publish
    connect(c, broker, timeout)
    try:
        deadline = time.monotonic() + timeout
        c.subscribe(topic(tid, "reply"), qos=1)
        if not subscribed.wait(timeout):
            raise BrokerError("the broker did not confirm the subscription to the reply")
        info = c.publish(topic(tid, "cmd"), json.dumps(command), qos=1)
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        if refused and c.protocol == mqtt.MQTTv5:  # 3.1.1 as ever: waits for the timeout
            what, because = next(iter(refused.items()))
            raise BrokerError(f"the broker {broker.address} refused the {what}: {because}")
        got.wait(max(0.0, deadline - time.monotonic()))
    finally:
        c.disconnect()
        c.loop_stop()
    return reply or None
