"""The fleet console (fleet/) against a real Mosquitto and fake terminals.

Each test starts its own broker (`Mosquitto`: Debian's mosquitto on a free loopback
port with a generated configuration; TLS with certificates made here with
`cryptography` where the test is about TLS) and skips when the binary is missing.
Fake terminals are paho clients that publish as docs/fleet.md says (state retained
with its last will, telemetry, events) and answer commands, checking signatures with
the fleet's public key as a terminal does. The console is the real one: `Ingest` into
a SQLite store, the page's views, and the `posterm-fleet` command line in processes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.debversion import key as version_key
from fleet.alerts import Facts, Policy, alerts
from fleet.commands import DANGEROUS, CommandError, build, canonical, verify
from fleet.ingest import Ingest
from fleet.mqtt import Broker, BrokerConfigError, BrokerError, send
from fleet.store import Store
from fleet.web import fleet_view, terminal_view

ROOT = pathlib.Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="the fleet console's tests need "
                                  "Debian's mosquitto (apt install mosquitto)")
WAIT = 20.0  # seconds a test waits for something to arrive before it fails


def utc(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll until `check()` is truthy (its value returned); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the broker -----------------------------------------------------------------------

class Mosquitto:
    """Debian's mosquitto on a free loopback port, its own configuration, no persistence.
    `tls` = (ca, cert, key) paths: TLS that requires a client certificate."""

    def __init__(self, folder: pathlib.Path, tls: tuple[pathlib.Path, ...] | None = None):
        assert MOSQUITTO is not None
        self.port = free_port()
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 "persistence false", "max_queued_messages 100000", "log_dest stderr",
                 "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read tmp_path
        if tls:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}",
                      "require_certificate true", "use_identity_as_username true"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = (folder / "mosquitto.log").open("wb")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for("mosquitto to listen", self._listening)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"mosquitto exited: {pathlib.Path(self.log.name).read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                    timeout=1):
            return True
        return False

    def broker(self) -> Broker:
        return Broker("127.0.0.1", self.port, plain=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def mosquitto(tmp_path: pathlib.Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("the fleet console's tests need Debian's mosquitto (apt install mosquitto)")
    m = Mosquitto(tmp_path)
    try:
        yield m
    finally:
        m.stop()


# -- a fake terminal ------------------------------------------------------------------

class FakeTerminal:
    """A paho client publishing as a terminal does (docs/fleet.md), answering commands:
    signatures checked with `public` (the terminal's `[fleet] command_key`)."""

    def __init__(self, port: int, tid: str, version: str = "0.2.0",
                 public: Any = None, answer: bool = True) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.tid, self.version, self.public = tid, version, public
        self.commands: list[dict[str, Any]] = []
        self.answer = answer
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=tid,
                             protocol=mqtt.MQTTv311)
        self.c.will_set(self.topic("state"), self._state("offline"), qos=1, retain=True)
        connected = threading.Event()
        self.c.on_connect = lambda *a: connected.set()
        self.c.on_message = self._on_cmd
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        assert connected.wait(WAIT), f"{tid} did not connect"
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.subscribe(self.topic("cmd"), qos=1)
        assert subscribed.wait(WAIT)
        self.pub("state", self._state("online"), retain=True)

    def topic(self, kind: str) -> str:
        return f"posterm/v1/{self.tid}/{kind}"

    def _state(self, state: str) -> str:
        return json.dumps({"tid": self.tid, "state": state, "version": self.version,
                           "since": utc(NOW)})

    def pub(self, kind: str, payload: str | dict[str, Any], qos: int = 1,
            retain: bool = False) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.c.publish(self.topic(kind), text, qos=qos, retain=retain).wait_for_publish(WAIT)

    def telemetry(self, **facts: Any) -> None:
        self.pub("telemetry", {"tid": self.tid, "t": utc(NOW), "facts": facts}, qos=0)

    def event(self, seq: int, event_kind: str = "sale", **data: Any) -> None:
        self.pub("events", {"tid": self.tid, "seq": seq, "t": utc(NOW), "kind": event_kind,
                            "data": data})

    def _on_cmd(self, c: Any, userdata: Any, msg: Any) -> None:
        command = json.loads(msg.payload)
        self.commands.append(command)
        if not self.answer:
            return
        if command["cmd"] in DANGEROUS and "sig" not in command:
            reply = {"id": command["id"], "ok": False, "error": "unsigned"}
        elif command["cmd"] in DANGEROUS and not verify(command, self.public):
            reply = {"id": command["id"], "ok": False, "error": "bad signature"}
        else:
            reply = {"id": command["id"], "ok": True,
                     "result": {"pong": self.tid} if command["cmd"] == "ping" else
                     {"done": command["cmd"], "args": command["args"]}}
        # another reply first on the same topic: the console matches by id
        c.publish(self.topic("reply"), json.dumps({"id": "not-" + command["id"], "ok": True,
                                                   "result": {}}), qos=1)
        c.publish(self.topic("reply"), json.dumps(reply), qos=1)

    def vanish(self) -> None:
        """Gone without a word (power cut, cable): the broker publishes its last will."""
        sock = self.c.socket()
        self.c.loop_stop()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def terminals(mosquitto: Mosquitto) -> Iterator[Callable[..., FakeTerminal]]:
    made: list[FakeTerminal] = []

    def make(tid: str, **kw: Any) -> FakeTerminal:
        t = FakeTerminal(mosquitto.port, tid, **kw)
        made.append(t)
        return t
    yield make
    for t in made:
        with contextlib.suppress(Exception):
            t.close()


@pytest.fixture
def console(tmp_path: pathlib.Path, mosquitto: Mosquitto) -> Iterator[Ingest]:
    ingest = Ingest(tmp_path / "fleet.db", mosquitto.broker())
    ingest.start()
    try:
        yield ingest
    finally:
        ingest.stop()


def facts(battery: int = 87, power: str = "mains", printer: str = "ready",
          offline: int = 0, oldest: str | None = None, refused: int = 0,
          balanced: bool | None = True, version: str = "0.2.0") -> dict[str, Any]:
    return {"device": {"manufacturer": "posterm", "firmware_version": version, "uptime": 5,
                       "battery_level": battery, "power_source": power},
            "connectivity": {"network_bearer": "ETH", "radio_signal_bars": 0, "link": "UP"},
            "printer": printer, "card_reader": "ready",
            "queue": {"reversals": 0, "offline_count": offline, "offline_amount": 100 * offline,
                      "offline_oldest": oldest, "refused": refused},
            "batch": {"number": 12, "purchases": 3, "purchase_amount": 4500, "refunds": 0},
            "last_close": None if balanced is None else {"batch": 11, "balanced": balanced,
                                                         "t": utc(NOW)},
            "journal_ok": True}


def read(console: Ingest) -> Store:
    return Store(console.db)


# -- what the terminals say, stored ---------------------------------------------------

@needs_broker
def test_state_telemetry_and_events_are_stored(console: Ingest, terminals: Any) -> None:
    t = terminals("T0000001", version="0.2.0")
    t.telemetry(**facts(battery=64, printer="ready"))
    for seq in (1, 2, 3):
        t.event(seq, "sale", sale_id=seq, kind="purchase", amount=100 * seq,
                status="approved", entry="chip")
    store = read(console)
    wait_for("three events", lambda: store.terminal("T0000001") is not None
             and store.terminal("T0000001")["events"] == 3)  # type: ignore[index]
    wait_for("the telemetry", lambda: store.terminal("T0000001")["facts"])  # type: ignore[index]
    row = store.terminal("T0000001")
    assert row is not None
    assert (row["state"], row["version"], row["since"], row["last_seq"]) == \
        ("online", "0.2.0", utc(NOW), 3)
    assert json.loads(row["facts"])["device"]["battery_level"] == 64
    events = store.events("T0000001")
    assert [e["seq"] for e in events] == [3, 2, 1]  # newest first
    assert events[-1]["data"] == {"sale_id": 1, "kind": "purchase", "amount": 100,
                                  "status": "approved", "entry": "chip"}
    view = terminal_view(store, "T0000001", NOW, Policy())
    assert view is not None and view["events_kept"] == 3 and view["alerts"] == []
    store.close()
    assert console.client.version() == "5"  # Mosquitto has it; the terminal speaks 3.1.1


@needs_broker
def test_the_console_speaks_5_or_3_1_1_as_told(tmp_path: pathlib.Path, mosquitto: Mosquitto,
                                               terminals: Any) -> None:
    """--mqtt auto (5 here), 5 or 3.1.1: the same console, the same contract; a persistent
    session under 5 keeps what arrives while the console is away, as under 3.1.1."""
    t = terminals("T0000030")
    for mqtt in ("auto", "5", "3.1.1"):
        broker = Broker.parse(f"127.0.0.1:{mosquitto.port}", plain=True, mqtt=mqtt)
        ingest = Ingest(tmp_path / f"{mqtt}.db", broker, client_id=f"posterm-fleet-{mqtt}")
        ingest.start()
        try:
            assert ingest.client.version() == ("5" if mqtt == "auto" else mqtt)
            t.event(1, "restart", reason="start")
            wait_for(f"the event ({mqtt})", lambda i=ingest: i.counts.events == 1)
        finally:
            ingest.stop()
        t.event(2, "restart", reason="while the console is away")
        ingest = Ingest(tmp_path / f"{mqtt}.db", broker, client_id=f"posterm-fleet-{mqtt}")
        ingest.start()
        try:
            wait_for(f"the event kept by the session ({mqtt})",
                     lambda i=ingest: i.counts.events == 1)
        finally:
            ingest.stop()
        command = build("ping", {}, None, dt.datetime.now(dt.timezone.utc))
        reply = send(broker, t.tid, command, WAIT)
        assert reply is not None and reply["result"] == {"pong": t.tid}
    pong = run_cli("send", t.tid, "ping", "--plain", "--broker", f"127.0.0.1:{mosquitto.port}",
                   "--mqtt", "3.1.1")
    assert pong.returncode == 0 and json.loads(pong.stdout)["ok"] is True, pong.stderr
    wrong = run_cli("send", t.tid, "ping", "--plain", "--broker", "127.0.0.1:1", "--mqtt", "4")
    assert wrong.returncode == 2 and "--mqtt" in wrong.stderr
    with pytest.raises(BrokerConfigError, match="--mqtt"):
        Broker.parse("127.0.0.1:1", plain=True, mqtt="3")


def test_under_mqtt_5_the_broker_says_why_it_refuses_a_command(broker: Any) -> None:
    """A command the broker's ACL refuses (sent here with a terminal's certificate, which
    writes only its own topics): under 5 `send` says so at once in the broker's words;
    under 3.1.1 the broker acknowledges it in silence and `send` waits for its timeout."""
    cert, key = broker.cert("TERM0002")
    for mqtt in ("auto", "3.1.1"):
        as_other = Broker.parse(f"127.0.0.1:{broker.port}", ca=pathlib.Path(broker.ca_cert),
                                cert=pathlib.Path(cert), cert_key=pathlib.Path(key),
                                mqtt=mqtt)
        command = build("ping", {}, None, dt.datetime.now(dt.timezone.utc))
        started = time.monotonic()
        if mqtt == "auto":
            with pytest.raises(BrokerError, match="refused the command: Not authorized"):
                send(as_other, "TERM0001", command, WAIT)
            assert time.monotonic() - started < WAIT / 2
        else:
            assert send(as_other, "TERM0001", command, 1.0) is None


@needs_broker
def test_an_event_delivered_twice_is_stored_once(tmp_path: pathlib.Path, mosquitto: Mosquitto,
                                                  terminals: Any) -> None:
    console = Ingest(tmp_path / "fleet.db", mosquitto.broker())
    console.start()
    t = terminals("T0000002")
    for seq in (1, 2, 2, 3, 1):  # resent after an outage, out of order
        t.event(seq, "fault" if seq == 2 else "sale", n=seq)
    t.pub("events", {"tid": "T0000002", "seq": 2, "t": utc(NOW), "kind": "recovery",
                     "data": {"changed": True}})  # the same seq again: the first one stays
    wait_for("six messages written", lambda: console.counts.received >= 7)  # state + 6
    assert (console.counts.events, console.counts.duplicates) == (3, 3)
    # the console goes away; the terminal goes on; the broker keeps the console's session
    console.stop()
    for seq in (3, 4, 5):
        t.event(seq, "sale", n=seq)
    again = Ingest(tmp_path / "fleet.db", mosquitto.broker())
    again.start()
    try:
        wait_for("the events sent while the console was away",
                 lambda: again.counts.events >= 2 and again.counts.duplicates >= 1)
        store = Store(tmp_path / "fleet.db")
        events = store.events("T0000002")
        assert [(e["seq"], e["kind"]) for e in events] == \
            [(5, "sale"), (4, "sale"), (3, "sale"), (2, "fault"), (1, "sale")]
        row = store.terminal("T0000002")
        assert row is not None and (row["events"], row["last_seq"]) == (5, 5)
        store.close()
    finally:
        again.stop()


@needs_broker
def test_messages_off_the_contract_are_refused_and_counted(console: Ingest,
                                                           terminals: Any) -> None:
    t = terminals("T0000003")
    t.pub("events", "not json")
    t.pub("events", {"tid": "T0000999", "seq": 1, "kind": "sale", "data": {}})  # another's
    t.pub("events", {"tid": "T0000003", "seq": 0, "kind": "sale", "data": {}})
    t.pub("events", {"tid": "T0000003", "kind": "sale"})
    t.pub("state", {"tid": "T0000003", "state": "sleeping"})
    t.pub("telemetry", {"tid": "T0000003", "facts": []})
    t.event(1)
    wait_for("the good event", lambda: console.counts.events == 1)
    assert console.counts.rejected == 6
    store = read(console)
    assert store.terminal("T0000999") is None
    assert store.terminal("T0000003")["state"] == "online"  # type: ignore[index]
    store.close()


# -- alerts ---------------------------------------------------------------------------

@needs_broker
def test_alerts_are_computed_and_listed_first(console: Ingest, terminals: Any) -> None:
    old = utc(NOW - dt.timedelta(hours=3))
    fresh = utc(NOW - dt.timedelta(minutes=5))
    fleet = {  # tid: (version, facts, [the offline counts published in turn])
        "A-OK": ("0.3.0", facts(version="0.3.0"), []),
        "B-VERSION": ("0.2.9", facts(version="0.2.9"), []),
        "C-MAINS": ("0.3.0", facts(power="battery", battery=15, version="0.3.0"), []),
        "D-PAPER": ("0.3.0", facts(printer="PAPER OUT", version="0.3.0"), []),
        "E-BALANCE": ("0.3.0", facts(balanced=False, version="0.3.0"), []),
        "F-REFUSED": ("0.3.0", facts(refused=2, version="0.3.0"), []),
        "G-OLD": ("0.3.0", facts(offline=2, oldest=old, version="0.3.0"), [3, 2]),
        "H-GROWING": ("0.3.0", facts(offline=4, oldest=fresh, version="0.3.0"), [1, 4]),
        "I-SHRINKING": ("0.3.0", facts(offline=1, oldest=fresh, version="0.3.0"), [3, 1]),
        "J-GONE": ("0.3.0", facts(version="0.3.0"), []),
    }
    made = {}
    for tid, (version, f, counts) in fleet.items():
        t = made[tid] = terminals(tid, version=version)
        for n in counts:
            t.telemetry(**{**f, "queue": {**f["queue"], "offline_count": n}})
        t.telemetry(**f)
    store = read(console)
    wait_for("every terminal's telemetry", lambda: sum(
        1 for _, r in store.facts() if r["facts"]) == len(fleet))
    made["J-GONE"].vanish()
    wait_for("J-GONE's last will", lambda: store.terminal("J-GONE")["state"] == "offline")  # type: ignore[index]
    view = fleet_view(store, NOW, Policy(old_after=3600, battery_low=20))
    got = [(t["tid"], [a["code"] for a in t["alerts"]]) for t in view["terminals"]]
    assert got == [
        ("J-GONE", ["offline"]),
        ("H-GROWING", ["offline_growing"]),
        ("G-OLD", ["offline_old"]),
        ("F-REFUSED", ["refused"]),
        ("E-BALANCE", ["out_of_balance"]),
        ("D-PAPER", ["paper_out"]),
        ("C-MAINS", ["battery_low", "mains_lost"]),
        ("B-VERSION", ["version_behind"]),
        ("A-OK", []),
        ("I-SHRINKING", []),
    ]
    assert view["newest_version"] == "0.3.0" and view["alerting"] == 8
    assert [t["tid"] for t in fleet_view(store, NOW, Policy(), only_alerts=True)[
        "terminals"]] == [tid for tid, codes in got if codes]
    texts = {t["tid"]: [a["text"] for a in t["alerts"]] for t in view["terminals"]}
    assert texts["G-OLD"] == ["2 offline sales unsent, oldest 3 h old"]
    assert texts["B-VERSION"] == ["version 0.2.9, newest 0.3.0"]
    store.close()


def test_alerts_rules_without_a_broker() -> None:
    f = Facts("T1", "online", "1.0~rc1", facts(offline=1, oldest=utc(NOW - dt.timedelta(
        seconds=100)), battery=19), "down")
    codes = [a["code"] for a in alerts(f, "1.0", NOW, Policy(old_after=60, battery_low=20))]
    assert codes == ["offline_old", "battery_low", "version_behind"]
    assert alerts(Facts("T2", None, None, {"queue": "garbage", "device": None}, ""), None,
                  NOW, Policy()) == []
    ordered = ["1:0.1", "0.10", "0.9.1", "0.9", "0.9~rc2", "0.9~rc1", "0.9~", "0.8-2", "0.8-1"]
    assert sorted(ordered, key=version_key, reverse=True) == ordered
    assert version_key("1.0") == version_key("1.0")


# -- commands -------------------------------------------------------------------------

@needs_broker
def test_commands_are_signed_and_their_replies_matched(console: Ingest, terminals: Any) -> None:
    key = Ed25519PrivateKey.generate()
    t = terminals("T0000004", public=key.public_key())
    results = {}
    for cmd, args in (("ping", {}), ("restart", {}), ("logs", {"lines": 20}),
                      ("params", {"version": "7", "set": {"offline": {"max_count": 10}}}),
                      ("update", {"url": "https://updates.example/p.bundle",
                                  "sha256": "ab" * 32})):
        command = build(cmd, args, key, dt.datetime.now(dt.timezone.utc))
        console.expect(command["id"])
        console.publish("T0000004", command)
        results[cmd] = (command, console.wait_reply(command["id"], WAIT))
    for cmd, (command, reply) in results.items():
        assert reply is not None, cmd
        assert reply["id"] == command["id"] and reply["ok"] is True, (cmd, reply)
    assert results["ping"][1]["result"] == {"pong": "T0000004"}  # type: ignore[index]
    # what arrived at the terminal: signed exactly where docs/fleet.md says, verifiable
    sent = {c["cmd"]: c for c in t.commands}
    assert {c for c, v in sent.items() if "sig" in v} == {"restart", "params", "update"}
    for c in ("restart", "params", "update"):
        sig = base64.b64decode(sent[c]["sig"])
        key.public_key().verify(sig, json.dumps({k: v for k, v in sent[c].items() if k != "sig"},
                                                sort_keys=True, separators=(",", ":")).encode())
    assert sent["logs"]["args"] == {"lines": 20}
    assert set(sent["ping"]) == {"id", "cmd", "args", "t"}
    assert dt.datetime.strptime(sent["ping"]["t"], "%Y-%m-%dT%H:%M:%SZ")
    # the store keeps each command with its reply, by id; the decoy replies match nothing
    store = read(console)
    wait_for("the replies stored", lambda: all(
        c["reply"] for c in store.commands("T0000004")))
    kept = {c["cmd"]: c for c in store.commands("T0000004")}
    assert set(kept) == {"ping", "restart", "logs", "params", "update"}
    assert kept["restart"]["signed"] and not kept["ping"]["signed"]
    assert kept["ping"]["reply"] == results["ping"][1]
    assert console.counts.unmatched == 5  # the replies to "not-<id>"
    store.close()


@needs_broker
def test_a_signature_by_another_key_is_refused_by_the_terminal(console: Ingest,
                                                               terminals: Any) -> None:
    terminals("T0000005", public=Ed25519PrivateKey.generate().public_key())
    command = build("restart", {}, Ed25519PrivateKey.generate(), NOW)
    console.expect(command["id"])
    console.publish("T0000005", command)
    assert console.wait_reply(command["id"], WAIT) == {
        "id": command["id"], "ok": False, "error": "bad signature"}


def test_commands_are_checked_before_sending() -> None:
    key = Ed25519PrivateKey.generate()
    for cmd in sorted(DANGEROUS):
        with pytest.raises(CommandError, match="must be signed"):
            build(cmd, {"url": "https://x/y", "sha256": "0" * 64} if cmd == "update" else
                  {"version": "1", "set": {"a": {"b": 1}}} if cmd == "params" else {}, None, NOW)
    for cmd, args, words in (("reboot", {}, "unknown command"),
                             ("ping", {"x": 1}, "takes no x"),
                             ("logs", {"lines": 0}, "lines must be"),
                             ("update", {"url": "ftp://x", "sha256": "0" * 64}, "invalid URI"),
                             ("update", {"url": "http://x/y", "sha256": "0" * 64}, "https"),
                             ("update", {"url": "https://x", "sha256": "XYZ"}, "sha256"),
                             ("params", {"version": "1", "set": {}}, "set must be")):
        with pytest.raises(CommandError, match=words):
            build(cmd, args, key, NOW)
    signed = build("restart", {}, key, NOW, command_id="c1")
    assert canonical(signed) == b'{"args":{},"cmd":"restart","id":"c1","t":"' \
        + utc(NOW).encode() + b'"}'
    assert verify(signed, key.public_key())
    assert not verify({**signed, "t": utc(NOW + dt.timedelta(seconds=1))}, key.public_key())


# -- the command line -----------------------------------------------------------------

def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def serving(db: pathlib.Path, port: int, *extra: str) -> Iterator[str]:
    """`posterm-fleet serve` in a process; yields the page's URL."""
    proc = subprocess.Popen([sys.executable, "-m", "fleet", "serve", "--plain", "--broker",
                             f"127.0.0.1:{port}", "--db", str(db), "--web", "127.0.0.1:0",
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "page http" not in line:
            proc.kill()
            pytest.fail(f"serve did not start: {line}{proc.communicate()[1]}")
        yield line.split("page ", 1)[1].split(",", 1)[0]
    finally:
        proc.terminate()
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


@needs_broker
def test_the_command_line_serves_lists_and_sends(tmp_path: pathlib.Path, mosquitto: Mosquitto,
                                                 terminals: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    keys = run_cli("keygen", str(tmp_path / "keys"))
    assert keys.returncode == 0, keys.stderr
    assert oct((tmp_path / "keys" / "fleet-key.pem").stat().st_mode & 0o777) == "0o600"
    public = serialization.load_pem_public_key((tmp_path / "keys" / "fleet-key.pub").read_bytes())
    db = tmp_path / "fleet.db"
    with serving(db, mosquitto.port):
        ok = terminals("T0000010", version="0.3.0", public=public)
        ok.telemetry(**facts(version="0.3.0"))
        paper = terminals("T0000011", version="0.3.0", public=public)
        paper.telemetry(**facts(printer="PAPER OUT", version="0.3.0"))
        paper.event(1, "fault", device="printer")

        def listed() -> Any:
            out = run_cli("list", "--db", str(db), "--json")
            return out.returncode == 0 and json.loads(out.stdout)

        view = wait_for("both terminals listed with their telemetry", lambda: (
            v := listed()) and v["count"] == 2 and v["alerting"] == 1 and v)
        assert [t["tid"] for t in view["terminals"]] == ["T0000011", "T0000010"]
        text = run_cli("list", "--db", str(db), "--alerts")
        assert text.returncode == 0
        assert text.stdout.splitlines() == [
            "2 terminals, 1 with alerts; newest version 0.3.0",
            "T0000011  online   0.3.0       paper out"]
        broker = ["--plain", "--broker", f"127.0.0.1:{mosquitto.port}"]
        pong = run_cli("send", "T0000011", "ping", *broker)
        assert pong.returncode == 0, pong.stderr
        assert json.loads(pong.stdout)["result"] == {"pong": "T0000011"}
        logs = run_cli("send", "T0000011", "logs", "lines=5", *broker)
        assert json.loads(logs.stdout)["result"] == {"done": "logs", "args": {"lines": 5}}
        unsigned = run_cli("send", "T0000011", "restart", *broker)
        assert unsigned.returncode == 2 and "must be signed" in unsigned.stderr
        assert not [c for c in paper.commands if c["cmd"] == "restart"]  # nothing was sent
        restart = run_cli("send", "T0000011", "restart", "--key",
                          str(tmp_path / "keys" / "fleet-key.pem"), *broker)
        assert restart.returncode == 0 and json.loads(restart.stdout)["ok"] is True
        params = run_cli("send", "T0000011", "params", "--args",
                         '{"version": "8", "set": {"offline": {"max_count": 5}}}', "--key",
                         str(tmp_path / "keys" / "fleet-key.pem"), *broker)
        assert json.loads(params.stdout)["result"]["args"]["version"] == "8"
        # the serving console saw the commands on the broker, and their replies
        store = Store(db)
        wait_for("the commands and replies in the console's store", lambda: len(
            [c for c in store.commands("T0000011") if c["reply"]]) == 4)
        store.close()
        silent = terminals("T0000012", answer=False)
        quiet = run_cli("send", silent.tid, "ping", "--timeout", "1", *broker)
        assert quiet.returncode == 3 and "no reply" in quiet.stdout
    bad = run_cli("send", "T1", "ping", "--broker", "127.0.0.1:1")
    assert bad.returncode == 2 and "--ca" in bad.stderr
    gone = run_cli("send", "T1", "ping", "--plain", "--broker", f"127.0.0.1:{free_port()}")
    assert gone.returncode == 4 and "cannot reach the broker" in gone.stderr
    missing = run_cli("list", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and "no fleet database" in missing.stderr


def test_the_console_is_lint_and_type_clean() -> None:
    """fleet/ keeps the firmware's conventions: ruff, and mypy --strict."""
    for args in (["ruff", "check", "fleet", "tests/test_fleet_console.py",
                  "tests/test_fleet_browser.py", "bench/fleet_console.py"],
                 ["mypy", "--strict", "fleet"]):
        out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr


def test_the_console_imports_nothing_from_the_firmware_but_what_it_shares() -> None:
    """Version order and the update's checks only (tests/test_architecture.py names them):
    nothing that speaks for the terminal."""
    import ast
    found = set()
    for path in (ROOT / "fleet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.update(f"{node.module}.{a.name}" if node.module == "firmware" else
                             node.module for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    assert {n for n in found if n.split(".")[0] in {"firmware", "drivers", "hwsim"}} <= {
        "firmware.debversion", "firmware.updateargs", "firmware.mqtt5"}
    assert all(len(p.read_text().splitlines()) < 400 for p in (ROOT / "fleet").rglob("*.py"))


# -- TLS with the console's own certificate --------------------------------------------

def make_pki(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """A test CA, the broker's certificate for 127.0.0.1, the console's client certificate
    and one from another CA; made here, never committed."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def issue(cn: str, issuer: tuple[x509.Certificate, Any] | None, ca: bool = False,
              san: x509.GeneralName | None = None) -> tuple[x509.Certificate, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        b = (x509.CertificateBuilder().subject_name(name(cn))
             .issuer_name(issuer[0].subject if issuer else name(cn))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        return b.sign(issuer[1] if issuer else key, hashes.SHA256()), key

    folder.mkdir()
    ca = issue("fleet test CA", None, ca=True)
    other = issue("another CA", None, ca=True)
    write("ca", *ca)
    write("broker", *issue("broker", ca, san=x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    write("console", *issue("posterm-fleet", ca))
    write("stranger", *issue("posterm-fleet", other))
    return {stem: folder / stem for stem in ("ca", "broker", "console", "stranger")}


@needs_broker
def test_the_console_connects_with_tls_and_its_own_certificate(tmp_path: pathlib.Path) -> None:
    from fleet.mqtt import BrokerConfigError, BrokerError, client, connect

    pki = make_pki(tmp_path / "pki")
    pem = {k: v.with_suffix(".pem") for k, v in pki.items()}
    tls = Mosquitto(tmp_path, tls=(pem["ca"], pem["broker"], pki["broker"].with_suffix(".key")))
    try:
        broker = Broker.parse(f"127.0.0.1:{tls.port}", ca=pem["ca"], cert=pem["console"],
                              cert_key=pki["console"].with_suffix(".key"))
        ingest = Ingest(tmp_path / "fleet.db", broker)
        ingest.start()
        try:
            # a terminal over TLS too (the console's certificate will do for the test)
            t = client(broker, "T0000020")
            connect(t, broker, WAIT)
            t.publish("posterm/v1/T0000020/events", json.dumps(
                {"tid": "T0000020", "seq": 1, "t": utc(NOW), "kind": "restart",
                 "data": {"reason": "power"}}), qos=1).wait_for_publish(WAIT)
            t.disconnect()
            t.loop_stop()
            wait_for("the event over TLS", lambda: ingest.counts.events == 1)
        finally:
            ingest.stop()
        # a certificate of another CA is refused by the broker; no certificate as well:
        # what TLS said is told, and not taken for a broker without MQTT 5 (no 3.1.1 try)
        for cert in ("stranger", None):
            other = Broker.parse(f"127.0.0.1:{tls.port}", ca=pem["ca"],
                                 cert=pem[cert] if cert else None,
                                 cert_key=pki[cert].with_suffix(".key") if cert else None)
            with pytest.raises(BrokerError, match=r"\(MQTT 5\): the connection was closed "
                                                  r"\(.+: a certificate refused\?\)"):
                connect(client(other, "posterm-fleet-x"), other, 5)
        with pytest.raises(BrokerConfigError, match="--ca"):
            Broker.parse("127.0.0.1:8883")
    finally:
        tls.stop()
