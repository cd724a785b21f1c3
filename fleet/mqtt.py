"""The console's MQTT connection: paho-mqtt 2.x, TLS with its own client certificate.

`Broker` is where and how to connect: TLS verified against `ca` with the console's
certificate (`cert`, `cert_key`), or plain TCP only when `plain` is set (tests, a
broker on loopback). MQTT 3.1.1, as every broker in docs/fleet.md has it.

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
from paho.mqtt.enums import CallbackAPIVersion

from fleet import TOPIC_ROOT

log = logging.getLogger("posterm.fleet.mqtt")

DEFAULT_PORT_TLS, DEFAULT_PORT_PLAIN = 8883, 1883
KEEPALIVE = 30


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

    @classmethod
    def parse(cls, text: str, plain: bool = False, ca: Path | None = None,
              cert: Path | None = None, cert_key: Path | None = None) -> Broker:
        """`HOST[:PORT]` (HOST may be [v6]); the port defaults to 8883 (1883 plain)."""
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
        return cls(host, int(port) if port else default, plain, ca, cert, cert_key)


def topic(tid: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{tid}/{kind}"


def client(broker: Broker, client_id: str, clean: bool = True,
           manual_ack: bool = False) -> mqtt.Client:
    """A paho client for `broker`, not yet connected."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=clean, protocol=mqtt.MQTTv311, manual_ack=manual_ack)
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


def connect(c: mqtt.Client, broker: Broker, timeout: float) -> None:
    """Connect and start the network thread; BrokerError if not connected in `timeout`."""
    ready, outcome = threading.Event(), {}

    def on_connect(cl: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        outcome["reason"] = reason
        ready.set()

    def on_gone(cl: mqtt.Client, userdata: Any, *rest: Any) -> None:
        outcome.setdefault("reason", "the connection was closed (a certificate refused?)")
        ready.set()

    c.on_connect = on_connect
    c.on_disconnect = on_gone
    c.on_connect_fail = on_gone
    try:
        c.connect(broker.host, broker.port, keepalive=KEEPALIVE)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot reach the broker {broker.host}:{broker.port}: "
                          f"{exc}") from None
    c.loop_start()
    if not ready.wait(timeout):
        c.loop_stop()
        raise BrokerError(f"the broker {broker.host}:{broker.port} did not answer in "
                          f"{timeout:g} s")
    c.on_disconnect = c.on_connect_fail = None
    reason = outcome["reason"]
    if isinstance(reason, str) or getattr(reason, "is_failure", False):
        c.loop_stop()
        raise BrokerError(f"the broker {broker.host}:{broker.port} refused the console: "
                          f"{reason}")


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

    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    connect(c, broker, timeout)
    try:
        deadline = time.monotonic() + timeout
        c.subscribe(topic(tid, "reply"), qos=1)
        if not subscribed.wait(timeout):
            raise BrokerError("the broker did not confirm the subscription to the reply")
        info = c.publish(topic(tid, "cmd"), json.dumps(command), qos=1)
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        got.wait(max(0.0, deadline - time.monotonic()))
    finally:
        c.disconnect()
        c.loop_stop()
    return reply or None
