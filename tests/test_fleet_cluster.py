"""The fleet channel over a clustered broker: no event lost, none doubled after dedup,
when the node the terminals are on dies mid-stream (issue 21, item 3).

The broker is three nats-server nodes (tests/natscluster.py: JetStream, MQTT over
TLS with client certificates, MQTT's session and message streams and consumers
replicated on every node). The terminals here are stand-ins that follow docs/fleet.md
and the channel's rule for events: a durable outbox, sent in order, each event resent
until the broker acknowledges it (PUBACK), after any reconnect, and reconnecting to the
next broker of their list when the connection is lost. The console is a stand-in too:
a persistent session (clean_session False) subscribed at QoS 1.

The stand-in terminals load the cluster with many events at once; the last test runs
the real firmware instead (tests/rig.py against hwsim, [fleet] brokers = the three
nodes' MQTT endpoints, TLS with the cluster's CA and a client certificate for the
terminal id): it sells while the node it is connected to is killed, and the console
ends with every event of the terminal, each seq once after dedup, none missing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.config_fleet import FleetTable
from firmware.runtime.fleet_mqtt import Connection
from fleet.ingest import Ingest
from fleet.mqtt import Broker, BrokerError, send
from hwsim.fwconfig import TERMINAL_ID, FleetLink
from tests.natscluster import NatsCluster, nats_server
from tests.rig import Rig

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")

pytestmark = pytest.mark.skipif(
    nats_server() is None,
    reason="nats-server is not installed (Debian: apt-get install nats-server); "
           "the clustered broker test needs it")

TERMINALS = 5
EVENTS = 120  # per terminal
INTERVAL = 0.02  # a terminal's events happen this far apart (2.4 s of events each)
WINDOW = 10  # events in flight (published, not yet acknowledged) per terminal
CONNECT_WAIT = 5.0
DEADLINE = 30.0  # the whole exchange, far above what it needs: a hung client fails, not hangs


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _client(client_id: str, cluster: NatsCluster, *, clean: bool) -> Any:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=clean, protocol=mqtt.MQTTv311)
    cert, key = cluster.client_cert(client_id)
    c.tls_set(ca_certs=cluster.ca_cert, certfile=cert, keyfile=key)
    return c


class StandInTerminal(threading.Thread):
    """One terminal's channel, as docs/fleet.md has it: client id = the terminal id,
    `state` retained and as last will, events QoS 1 from an outbox, in order, resent
    until acknowledged; on a lost connection, the next broker of its list."""

    def __init__(self, tid: str, brokers: list[tuple[str, int]], cluster: NatsCluster) -> None:
        super().__init__(name=f"terminal-{tid}", daemon=True)
        self.tid, self.brokers, self.cluster = tid, brokers, cluster
        self.outbox = {seq: self._event(seq) for seq in range(1, EVENTS + 1)}
        self.acked: set[int] = set()
        self.sent = 0  # PUBLISH packets, resends included
        self.nodes_used: list[int] = []  # index into `brokers` of each session
        self.errors: list[str] = []
        self.started = 0.0
        self.stop = threading.Event()

    def _event(self, seq: int) -> bytes:
        kind = "sale" if seq % 3 else "fault"
        data = ({"sale_id": seq, "kind": "purchase", "amount": 100 + seq, "status": "approved",
                 "entry": "chip"} if kind == "sale" else {"device": "printer", "what": "PAPER OUT"})
        return json.dumps({"tid": self.tid, "seq": seq, "t": _now(), "kind": kind,
                           "data": data}).encode()

    def _state(self, state: str) -> bytes:
        return json.dumps({"tid": self.tid, "state": state, "version": "0.1.0",
                           "since": _now()}).encode()

    def done(self) -> bool:
        return len(self.acked) == EVENTS

    def run(self) -> None:
        self.started = time.monotonic()
        attempt = 0
        while not self.stop.is_set() and not self.done():
            index = attempt % len(self.brokers)
            attempt += 1
            try:
                self._session(index)
            except Exception as exc:  # a broker refusing or gone: the next one
                self.errors.append(f"{time.monotonic() - self.started:.2f} node {index}: {exc!r}")
                time.sleep(0.2)

    def _session(self, index: int) -> None:
        host, port = self.brokers[index]
        client = _client(self.tid, self.cluster, clean=False)
        client.will_set(f"posterm/v1/{self.tid}/state", self._state("offline"), qos=1,
                        retain=True)
        up, down = threading.Event(), threading.Event()
        refused: list[str] = []

        def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
            if rc.is_failure:
                refused.append(str(rc))
                down.set()
            else:
                up.set()

        client.on_connect = on_connect
        client.on_disconnect = lambda c, u, flags, rc, props: down.set()
        client.connect(host, port, keepalive=5)
        client.loop_start()
        try:
            if not up.wait(CONNECT_WAIT) or down.is_set():
                raise ConnectionError(f"no CONNACK ({refused or 'timeout'})")
            self.nodes_used.append(index)
            client.subscribe(f"posterm/v1/{self.tid}/cmd", qos=1)
            client.publish(f"posterm/v1/{self.tid}/state", self._state("online"), qos=1,
                           retain=True)
            # after a reconnect, everything not acknowledged goes again, oldest first
            pending = [seq for seq in sorted(self.outbox) if seq not in self.acked]
            inflight: list[tuple[int, Any]] = []
            while not down.is_set() and not self.stop.is_set():
                for seq, _info in [x for x in inflight if x[1].is_published()]:
                    self.acked.add(seq)
                inflight = [x for x in inflight if x[0] not in self.acked]
                happened = min(EVENTS, int((time.monotonic() - self.started) / INTERVAL) + 1)
                while pending and len(inflight) < WINDOW and pending[0] <= happened:
                    seq = pending.pop(0)
                    info = client.publish(f"posterm/v1/{self.tid}/events", self.outbox[seq],
                                          qos=1)
                    self.sent += 1
                    inflight.append((seq, info))
                if self.done():
                    return
                time.sleep(0.005)
            raise ConnectionError("connection lost")
        finally:
            client.disconnect()
            client.loop_stop()


class Console:
    """The fleet console's side: a persistent session, events and states at QoS 1."""

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster
        self.events: list[tuple[str, int]] = []
        self.kinds: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}  # (kind, data)
        self.bad: list[str] = []
        self.states: dict[str, str] = {}
        self.lock = threading.Lock()
        self.client: Any = None

    def connect(self, brokers: list[tuple[str, int]]) -> None:
        """The first broker of the list that takes the session and acknowledges the
        subscription within CONNECT_WAIT, trying them in turn until DEADLINE."""
        deadline = time.monotonic() + DEADLINE
        for attempt in range(1000):
            client = _client("console", self.cluster, clean=False)
            subscribed = threading.Event()
            client.on_message = self._on_message
            client.on_connect = lambda c, u, flags, rc, props: c.subscribe(
                [("posterm/v1/+/events", 1), ("posterm/v1/+/state", 1)])
            client.on_subscribe = lambda c, u, mid, rcs, props, ev=subscribed: ev.set()
            try:
                client.connect(*brokers[attempt % len(brokers)], keepalive=5)
            except OSError:
                continue
            client.loop_start()
            if subscribed.wait(CONNECT_WAIT):
                self.client = client
                return
            client.disconnect()
            client.loop_stop()
            assert time.monotonic() < deadline, "no broker took the console's subscription"

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
            tid = msg.topic.split("/")[2]
            if msg.topic.endswith("/state"):
                with self.lock:
                    self.states[tid] = doc["state"]
                return
            assert doc["tid"] == tid and set(doc) == {"tid", "seq", "t", "kind", "data"}
            with self.lock:
                self.events.append((tid, int(doc["seq"])))
                self.kinds[(tid, int(doc["seq"]))] = (doc["kind"], doc["data"])
        except Exception as exc:
            self.bad.append(f"{msg.topic}: {msg.payload!r}: {exc!r}")

    def distinct(self) -> set[tuple[str, int]]:
        with self.lock:
            return set(self.events)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path).start()
    try:
        yield c
    finally:
        c.stop()


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def _terminals(cluster: NatsCluster) -> list[StandInTerminal]:
    a, b, c = cluster.mqtt_endpoints()
    # every terminal starts on node A; half fail over to B first, half to C
    return [StandInTerminal(f"T{i:07d}", [a, b, c] if i % 2 else [a, c, b], cluster)
            for i in range(1, TERMINALS + 1)]


def _expected() -> set[tuple[str, int]]:
    return {(f"T{i:07d}", seq) for i in range(1, TERMINALS + 1) for seq in range(1, EVENTS + 1)}


def _report(terminals: list[StandInTerminal], console: Console) -> str:
    counts = Counter(console.events)
    return (f"sent {sum(t.sent for t in terminals)} PUBLISH for {TERMINALS * EVENTS} events, "
            f"console got {len(console.events)} ({sum(n - 1 for n in counts.values())} "
            f"duplicates); sessions per terminal: {[t.nodes_used for t in terminals]}")


def test_killing_the_terminals_node_mid_stream_loses_no_event(cluster: NatsCluster) -> None:
    a, b, c = cluster.mqtt_endpoints()
    console = Console(cluster)
    console.connect([b, c])
    terminals = _terminals(cluster)
    for t in terminals:
        t.start()
    try:
        # mid-stream: every terminal has had a third of its events acknowledged on A
        assert _wait(lambda: all(len(t.acked) >= EVENTS // 3 for t in terminals), DEADLINE), \
            [len(t.acked) for t in terminals]
        assert not any(t.done() for t in terminals), "the stream ended before the kill"
        cluster.kill(0)
        assert _wait(lambda: all(t.done() for t in terminals), DEADLINE), \
            ([len(t.acked) for t in terminals], [t.errors[-3:] for t in terminals])
        assert _wait(lambda: console.distinct() >= _expected(), 10), _report(terminals, console)
    finally:
        for t in terminals:
            t.stop.set()
            t.join(10)
        console.disconnect()
    print(_report(terminals, console))
    for t in terminals:
        print(t.tid, t.errors)
    assert console.bad == []
    assert console.distinct() == _expected()  # every (tid, seq) once after dedup, none missing
    for t in terminals:  # each went on from A to the next node of its own list
        assert t.nodes_used[0] == 0 and len(t.nodes_used) >= 2 and 0 not in t.nodes_used[1:], \
            t.nodes_used
    assert all(console.states.get(t.tid) == "online" for t in terminals), console.states


def test_the_consoles_queued_events_outlive_the_node_it_was_on(cluster: NatsCluster) -> None:
    """The console's session and its QoS 1 queue are replicated: it leaves, its node
    dies, the terminals go on; back on another node it gets everything it missed."""
    a, b, c = cluster.mqtt_endpoints()
    console = Console(cluster)
    console.connect([b])
    console.disconnect()
    cluster.kill(1)
    k0 = time.monotonic()
    cluster.wait_ready([cluster.nodes[0], cluster.nodes[2]])  # the survivors settled
    print(f"survivors healthy {time.monotonic() - k0:.1f} s after the kill")
    terminals = [StandInTerminal(f"T{i:07d}", [a, c], cluster) for i in range(1, TERMINALS + 1)]
    for t in terminals:
        t.start()
    t0 = time.monotonic()
    try:
        assert _wait(lambda: all(t.done() for t in terminals), DEADLINE), \
            ([len(t.acked) for t in terminals], [t.errors[-3:] for t in terminals])
        t1 = time.monotonic()
        console.connect([c, a])
        assert _wait(lambda: console.distinct() >= _expected(), 10), _report(terminals, console)
        t2 = time.monotonic()
        cluster.restart(1)
        print(f"terminals done {t1 - t0:.1f} s, console caught up {t2 - t1:.1f} s, "
              f"node b back {time.monotonic() - t2:.1f} s")
        for t in terminals:
            print(t.tid, t.errors)  # the dead node comes back into the cluster
    finally:
        for t in terminals:
            t.stop.set()
            t.join(10)
        console.disconnect()
    print(_report(terminals, console))
    assert console.bad == []
    assert console.distinct() == _expected()


SALES = 4  # the real terminal's: one before the kill, one in flight at the kill, two after


def test_a_real_terminal_sells_while_its_node_is_killed(cluster: NatsCluster,
                                                        tmp_path: Path) -> None:
    """The firmware's own channel (firmware/runtime/fleet*.py) over the cluster: a sale
    before the kill, one whose answer comes while its node dies, two while JetStream
    elects new leaders; the terminal moves to the next node of its list and the console
    gets every event, each (tid, seq) once after dedup."""
    a, b, c = cluster.mqtt_endpoints()
    console = Console(cluster)
    console.connect([b, c])
    cert, key = cluster.client_cert(TERMINAL_ID)
    fleet = {**FleetLink([a, b, c], cluster.ca_cert, cert, key).table(),
             "reconnect_base": 0.2, "reconnect_cap": 10.0, "keepalive": 5}
    where = tmp_path / "terminal"
    where.mkdir()
    mine = lambda: {seq for tid, seq in console.distinct() if tid == TERMINAL_ID}  # noqa: E731
    try:
        with Rig(where, overrides={"fleet": fleet}) as rig:
            rig.start()
            assert _wait(lambda: console.states.get(TERMINAL_ID) == "online" and 1 in mine(),
                         DEADLINE), (console.states, mine(), rig.log()[-2000:])
            assert f"fleet channel up: {a[0]}:{a[1]}" in rig.log()
            for n in range(1, SALES + 1):
                rig.sale(f"{n}00")
                if n == 2:  # the sale's request is out: its node dies before its end
                    cluster.kill(0)
                rig.hw.wait_display("APPROVED")
                rig.wait_idle()
            k0 = time.monotonic()
            assert _wait(lambda: mine() >= set(range(1, SALES + 2)), DEADLINE), \
                (sorted(mine()), rig.log()[-3000:])
            print(f"every event at the console {time.monotonic() - k0:.1f} s after the last "
                  f"sale; {len(console.events)} received for {len(mine())} events")
            assert _wait(lambda: console.states.get(TERMINAL_ID) == "online", 10)
            log = rig.log()
    finally:
        console.disconnect()
    assert console.bad == []
    assert mine() == set(range(1, SALES + 2))  # the restart and the sales, each seq once
    kinds = {seq: console.kinds[(TERMINAL_ID, seq)] for seq in mine()}
    assert kinds[1] == ("restart", {"reason": "start"})
    sales = [data for kind, data in (kinds[s] for s in sorted(kinds)) if kind == "sale"]
    assert [(d["sale_id"], d["amount"], d["status"]) for d in sales] == \
        [(n, n * 100, "APPROVED") for n in range(1, SALES + 1)]
    # it went on from node A to the next of its list, B (or C if B was not ready)
    moved = [line for line in log.splitlines() if "fleet channel up: " in line]
    print("\n".join(line for line in log.splitlines() if "fleet" in line))
    assert len(moved) >= 2 and f":{a[1]}" not in moved[-1], moved
    # NATS speaks 3.1.1 only: asked for 5 (auto), each node refused it once, and each
    # connection after that was 3.1.1, asked for at once
    assert all(line.endswith("(MQTT 3.1.1)") for line in moved), moved
    assert f"fleet broker {a[0]}:{a[1]} does not take MQTT 5 (refused it)" in log
    assert refusals_of_5(cluster)[0] == 1 and max(refusals_of_5(cluster)) == 1, \
        refusals_of_5(cluster)


def refusals_of_5(cluster: NatsCluster) -> list[int]:
    """How many MQTT 5 CONNECTs each node refused ("unacceptable protocol version of 5")."""
    return [node.log.read_text(errors="replace").count("unacceptable protocol version of 5")
            for node in cluster.nodes]


def test_terminal_and_console_fall_back_to_3_1_1_once_per_broker(cluster: NatsCluster) -> None:
    """What NATS answers a v5 CONNECT: a 3.1.1 CONNACK, return code 1 (unacceptable
    protocol version), then it closes. The terminal's channel (`[fleet] mqtt = "auto"`)
    and the console (`--mqtt auto`) each ask a node for 5 once, then speak 3.1.1 to it,
    and a reconnection, a new client of the console, asks for 3.1.1 straight away. The
    terminal's event reaches the console; forced 5, the console is refused in NATS's
    words; forced 3.1.1, it never asks for 5."""
    a, b, _ = cluster.mqtt_endpoints()
    # the raw answer to a v5 CONNECT (clean start, no properties, client id "x"), over TLS
    ctx = ssl.create_default_context(cafile=cluster.ca_cert)
    ctx.load_cert_chain(*cluster.client_cert("probe"))
    with socket.create_connection(a, 5) as raw, ctx.wrap_socket(raw, server_hostname=a[0]) as s:
        body = struct.pack("!H4sBBH", 4, b"MQTT", 5, 0x02, 30) + b"\x00" + b"\x00\x01x"
        s.sendall(bytes([0x10, len(body)]) + body)
        s.settimeout(5)
        assert s.recv(16) == bytes([0x20, 0x02, 0x00, 0x01])  # CONNACK, rc 1
        assert s.recv(16) == b""  # and closed
    assert refusals_of_5(cluster) == [1, 0, 0]

    cert, key = cluster.client_cert(TERMINAL_ID)
    cfg = FleetTable(brokers=(a,), ca_file=cluster.ca_cert, client_cert=cert, client_key=key,
                     reconnect_base=0.2, keepalive=5)
    ups: list[str] = []
    acked: list[int] = []
    conn = Connection(cfg, TERMINAL_ID, will=lambda: (f"posterm/v1/{TERMINAL_ID}/state",
                                                     b'{"state": "offline"}'),
                      on_up=ups.append, on_down=lambda: None, on_message=lambda t, p: None,
                      on_published=acked.append)
    ccert, ckey = cluster.client_cert("console")
    console = Broker(a[0], a[1], ca=Path(cluster.ca_cert), cert=Path(ccert),
                     cert_key=Path(ckey))
    ingest = Ingest(Path(cluster.root) / "fleet.db", console, client_id="posterm-fleet")
    conn.start()
    try:
        assert _wait(lambda: len(ups) == 1, DEADLINE), ups
        assert conn.protocol == mqtt.MQTTv311 and refusals_of_5(cluster) == [2, 0, 0]
        # the connection lost: the channel connects again, in 3.1.1 at once
        sock = conn.client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        assert _wait(lambda: len(ups) == 2, DEADLINE), ups
        assert refusals_of_5(cluster) == [2, 0, 0]

        ingest.start()
        assert ingest.client.protocol == mqtt.MQTTv311 and refusals_of_5(cluster) == [3, 0, 0]
        event = json.dumps({"tid": TERMINAL_ID, "seq": 1, "t": _now(), "kind": "restart",
                            "data": {"reason": "start"}}).encode()
        mid = conn.publish(f"posterm/v1/{TERMINAL_ID}/events", event, qos=1)
        assert _wait(lambda: mid in acked and ingest.counts.events == 1, DEADLINE), \
            (acked, ingest.counts)
        # `send` makes a client per command: the broker's answer is remembered
        assert send(console, TERMINAL_ID, {"id": "c1", "cmd": "ping", "args": {},
                                           "t": _now()}, 1) is None  # nobody answers
        assert refusals_of_5(cluster) == [3, 0, 0]
        with pytest.raises(BrokerError, match=r"refused the console \(MQTT 5\): "
                                              r"Unsupported protocol version"):
            send(dataclasses.replace(console, mqtt="5"), TERMINAL_ID, {}, 5)
        assert refusals_of_5(cluster) == [4, 0, 0]
        on_b = Broker(b[0], b[1], ca=Path(cluster.ca_cert), cert=Path(ccert),
                      cert_key=Path(ckey), mqtt="3.1.1")
        assert send(on_b, TERMINAL_ID, {"id": "c2", "cmd": "ping", "args": {},
                                        "t": _now()}, 1) is None
        assert refusals_of_5(cluster) == [4, 0, 0]
    finally:
        conn.stop(None)
        ingest.stop()
