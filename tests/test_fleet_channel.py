"""The fleet channel (docs/fleet.md) of the real firmware, against a real Mosquitto.

Each test starts its own broker (tests/fleetrig.py: TLS with a test CA, client
certificates, the fleet's ACL, a free loopback port) and, but for the ACL's, the real
firmware against hwsim (tests/rig.py) with [fleet] pointing at it. The console is a paho
client with the console's certificate. Every payload the console received in a test is
scanned for card data and key material when the test ends.
"""

from __future__ import annotations

import json
import pathlib
import re
import signal
import socket
import threading
from typing import Any

import pytest

from tests.fleetrig import Broker, Client, CommandKey, command
from tests.rig import Rig, wait_until

TID = "TERM0001"
T = f"posterm/v1/{TID}"
def fleet_rig(tmp_path: pathlib.Path, broker: Broker, **fleet: Any) -> Rig:
    return Rig(tmp_path, overrides={"fleet": broker.fleet_table(TID, **fleet)})


def states(console: Client) -> list[str]:
    return [m["state"] for m in console.payloads(f"{T}/state")]


def events(console: Client, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in console.payloads(f"{T}/events") if kind is None or e["kind"] == kind]


def wait_state(console: Client, state: str, after: int = 0, timeout: float = 20) -> None:
    wait_until(lambda: state in states(console)[after:], timeout,
               lambda: f"no state {state!r} after {after}: {states(console)}")


def approved_sale(rig: Rig, digits: str, pan: str = "4761739001010010") -> None:
    rig.sale(digits, pan)
    rig.hw.wait_display("APPROVED")
    rig.wait_idle()


def test_state_is_retained_online_and_the_last_will_says_offline(
        tmp_path: pathlib.Path, broker: Broker, console: Client) -> None:
    with fleet_rig(tmp_path, broker, telemetry_interval=5) as rig:
        rig.start()
        wait_state(console, "online")
        # periodic telemetry: nothing changes, and it comes again after the interval
        wait_until(lambda: any(m["facts"]["device"]["uptime"] >= 5
                               for m in console.payloads(f"{T}/telemetry")), 15,
                   lambda: f"no periodic telemetry: {console.payloads(f'{T}/telemetry')}")
        online = console.payloads(f"{T}/state")[-1]
        assert online["tid"] == TID and online["version"] and online["since"].endswith("Z")
        # retained: subscribing again gets it from the broker, flagged retained
        console.client.unsubscribe(f"{T}/state")
        seen = len(console.everything())
        console.watch(f"{T}/state")
        wait_until(lambda: any(t == f"{T}/state" and r for t, _, r in
                               console.everything()[seen:]), 10, "no retained state")
        n = len(states(console))
        rig.kill_fw(signal.SIGKILL)  # no goodbye: the broker says the last will
        wait_state(console, "offline", after=n)  # keepalive 5 s: within 7.5 s
        console.client.unsubscribe(f"{T}/state")
        seen = len(console.everything())
        console.watch(f"{T}/state")
        wait_until(lambda: [json.loads(p)["state"] for t, p, r in console.everything()[seen:]
                            if t == f"{T}/state" and r] == ["offline"], 10,
                   "the retained state is not offline")
        # back, then a clean stop says offline itself
        n = len(states(console))
        rig.start_fw()
        wait_state(console, "online", after=n)
        n = len(states(console))
        assert rig.kill_fw(signal.SIGTERM) == 0
        wait_state(console, "offline", after=n, timeout=5)


def test_telemetry_events_and_faults(tmp_path: pathlib.Path, broker: Broker,
                                     console: Client) -> None:
    with fleet_rig(tmp_path, broker, telemetry_interval=600) as rig:
        rig.start()
        wait_state(console, "online")
        first = wait_until(lambda: console.payloads(f"{T}/telemetry"), 15, "no telemetry")[0]
        facts = first["facts"]
        assert first["tid"] == TID and first["t"].endswith("Z")
        assert set(facts) >= {"device", "connectivity", "printer", "card_reader", "queue",
                              "batch", "last_close", "journal_ok"}
        assert facts["device"]["manufacturer"] == "posterm"
        assert facts["journal_ok"] is True and facts["printer"] == "ready"
        assert facts["batch"]["purchases"] == 0
        restart = wait_until(lambda: events(console, "restart"), 15, "no restart event")
        assert restart[0]["data"] == {"reason": "start"} and restart[0]["seq"] == 1

        approved_sale(rig, "1250")
        sale = wait_until(lambda: events(console, "sale"), 15, "no sale event")[0]
        assert sale["data"] == {"sale_id": 1, "kind": "purchase", "amount": 1250,
                                "status": "APPROVED", "entry": "SWIPE"}
        assert sale["seq"] == 2 and sale["tid"] == TID
        # telemetry on change (the interval is 10 minutes): the purchase is counted
        wait_until(lambda: any(m["facts"]["batch"]["purchases"] == 1 and
                               m["facts"]["batch"]["purchase_amount"] == 1250
                               for m in console.payloads(f"{T}/telemetry")), 15,
                   "no telemetry after the sale")

        # a device fault and its recovery are events, and the telemetry says it
        rig.hw.printer_fault(paper_out=True)
        approved_sale(rig, "300")
        fault = wait_until(lambda: events(console, "fault"), 20, "no fault event")[0]
        assert fault["data"] == {"source": "printer", "text": "PAPER OUT"}
        wait_until(lambda: any(m["facts"]["printer"] == "PAPER OUT"
                               for m in console.payloads(f"{T}/telemetry")), 15,
                   "no telemetry with the printer's fault")
        rig.hw.printer_load_paper()
        recovery = wait_until(lambda: events(console, "recovery"), 40, "no recovery event")
        assert recovery[0]["data"]["source"] == "printer"
        seqs = [e["seq"] for e in events(console)]
        assert seqs == list(range(1, len(seqs) + 1)), seqs


def test_events_arrive_in_order_once_after_a_broker_outage(
        tmp_path: pathlib.Path, broker: Broker, console: Client) -> None:
    with fleet_rig(tmp_path, broker) as rig:
        rig.start()
        wait_state(console, "online")
        approved_sale(rig, "100")
        wait_until(lambda: len(events(console, "sale")) == 1, 15, "no first sale event")
        broker.stop()
        # the broker is down: sales go on as ever, each completes normally
        for amount in ("201", "202", "203"):
            approved_sale(rig, amount)
        assert len(rig.wait_receipts(4)) == 4
        broker.start()
        wait_until(lambda: len(events(console, "sale")) == 4, 30,
                   lambda: f"sale events after the outage: {events(console, 'sale')}")
        sales = events(console, "sale")
        assert [e["data"]["amount"] for e in sales] == [100, 201, 202, 203]
        seqs = [e["seq"] for e in events(console)]
        assert seqs == list(range(1, len(seqs) + 1)), f"not in order, or not once: {seqs}"
        # across a restart of the firmware too: the seq goes on from the journal
        rig.restart_fw()
        approved_sale(rig, "300")
        wait_until(lambda: len(events(console, "sale")) == 5, 20, "no sale after restart")
        seqs = [e["seq"] for e in events(console)]
        assert seqs == list(range(1, len(seqs) + 1)), seqs


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_terminal_reads_and_writes_only_its_own_topics(broker: Broker, console: Client,
                                                         protocol: str) -> None:
    """Under MQTT 5 as under 3.1.1; 5 also tells the impostor "Not authorized"."""
    mine = broker.client(TID, protocol=protocol)
    mine.watch(f"{T}/#")

    def delivered(marker: bytes) -> None:
        """The terminal publishes `marker` on its own topic and it is delivered: what was
        sent before it had its chance."""
        mine.publish(f"{T}/telemetry", marker)
        wait_until(lambda: any(p == marker for _, p, _ in console.everything()), 10,
                   f"{marker!r} not delivered to the console")
        wait_until(lambda: any(p == marker for _, p, _ in mine.everything()), 10,
                   f"{marker!r} not delivered to the terminal")

    for cn, client_id in (("TERM0002", None), ("TERM0002", TID)):  # another, an impostor
        other = broker.client(cn, client_id=client_id, protocol=protocol)
        other.watch(f"{T}/#")
        console.send(TID, command("ping"))
        other.publish(f"{T}/state", b'{"state":"forged"}')
        other.publish(f"{T}/events", b'{"forged":true}')
        other.send(TID, command("restart", cid="forged"))  # a command to another
        delivered(f"{cn}/{client_id}".encode())
        assert other.everything() == [], f"{cn} as {client_id} read another's topics"
        # 5: each PUBACK says why the message went nowhere; 3.1.1 acknowledges in silence
        # (the subscription is granted, and nothing of another's is ever delivered to it)
        assert other.refusals == (["Not authorized"] * 3 if protocol == "5" else []), \
            other.refusals
        other.close()
    assert broker.connected("TERM0002") == [protocol] * 2
    got = [p for t, p, _ in console.everything() + mine.everything() if t.startswith(T)]
    assert not any(b"forged" in p for p in got)
    assert sum(t == f"{T}/cmd" for t, _, _ in mine.everything()) == 2  # the console's


def test_mqtt_5_with_mosquitto_and_3_1_1_when_told(tmp_path: pathlib.Path,
                                                  broker: Broker) -> None:
    """`[fleet] mqtt = "auto"` (the default) speaks 5 with Mosquitto: its telemetry carries
    a message expiry, its commands and replies go as ever. "3.1.1" speaks 3.1.1 to the
    same broker, with the same contract. The console here speaks 5 to both."""
    console = broker.client("console", protocol="5")
    console.watch("posterm/v1/#")
    for mqtt, interval in (("auto", 20), ("3.1.1", 30)):
        folder = tmp_path / mqtt
        folder.mkdir()
        n = len(states(console))
        with Rig(folder, overrides={"fleet": broker.fleet_table(
                TID, telemetry_interval=interval,
                **({} if mqtt == "auto" else {"mqtt": mqtt}))}) as rig:
            rig.start()
            wait_state(console, "online", after=n)
            version = "5" if mqtt == "auto" else "3.1.1"
            assert broker.connected(TID)[-1] == version, broker.log()[-2000:]
            assert re.search(rf"fleet channel up: 127\.0\.0\.1:{broker.port} \(MQTT "
                             rf"{re.escape(version)}\)", rig.log()), rig.log()[-2000:]
            ping = command("ping")
            console.send(TID, ping)
            assert console.reply(TID, ping["id"])["ok"] is True
            seen = len(console.expiries)
            approved_sale(rig, "700")  # telemetry on change
            wait_until(lambda after=seen: any(t == f"{T}/telemetry"
                                              for t, _ in console.expiries[after:]),
                       15, "no telemetry after the sale")
            expiries = {e for t, e in console.expiries[seen:] if t == f"{T}/telemetry"}
            # 5: a broker keeps it no longer than the interval; 3.1.1 cannot say so
            if version == "5":
                assert expiries and all(e is not None and 0 < e <= interval
                                        for e in expiries), expiries
            else:
                assert expiries == {None}
            assert rig.kill_fw(signal.SIGTERM) == 0
    assert broker.connected(TID) == ["5", "3.1.1"]
    assert "does not take MQTT 5" not in broker.log()


def test_a_refused_certificate_is_said_and_not_taken_for_an_old_broker(
        tmp_path: pathlib.Path, broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """A certificate of another CA: Mosquitto ends the connection with a TLS alert before
    any CONNACK. The channel logs the alert, and does not take it for a broker without
    MQTT 5 (no 3.1.1 attempt after it, nothing remembered)."""
    from firmware.config_fleet import FleetTable
    from firmware.runtime import fleet_mqtt
    from hwsim.testca import make_ca
    from tests.fleetrig import client_cert

    other = tmp_path / "other-ca"
    other.mkdir()
    cert, key = client_cert(other, *make_ca(other), TID)
    cfg = FleetTable(brokers=(("127.0.0.1", broker.port),), ca_file=broker.ca_cert,
                     client_cert=cert, client_key=key, reconnect_base=0.2, keepalive=5)
    conn = fleet_mqtt.Connection(cfg, TID, will=lambda: (f"{T}/state", b"{}"),
                                 on_up=print, on_down=print, on_message=print,
                                 on_published=print)
    caplog.set_level("INFO", logger="posterm.fleet")
    conn.start()
    try:
        wait_until(lambda: sum("ended the connection" in r.message
                               for r in caplog.records) >= 2, 20, lambda: caplog.text)
    finally:
        conn.stop(None)
    said = [r.message for r in caplog.records if "ended the connection" in r.message]
    assert "alert" in said[0] and "certificate refused?" in said[0], said
    assert "does not take MQTT 5" not in caplog.text and not conn.connected
    assert f"127.0.0.1:{broker.port}" not in fleet_mqtt._ONLY_311
    assert broker.log().count("certificate verify failed") == len(said)  # one try a round


def test_commands_ping_status_logs_close_and_restart(tmp_path: pathlib.Path, broker: Broker,
                                                     console: Client) -> None:
    key = CommandKey(tmp_path)
    with fleet_rig(tmp_path, broker, command_key=str(key.public)) as rig:
        rig.start()
        wait_state(console, "online")
        ping = command("ping")
        console.send(TID, ping)
        reply = console.reply(TID, ping["id"])
        assert reply["ok"] is True and reply["result"]["pong"].endswith("Z")

        approved_sale(rig, "4200", "5413330089010012")
        status = command("status")
        console.send(TID, status)
        facts = console.reply(TID, status["id"])["result"]
        assert facts["batch"]["purchases"] == 1 and facts["batch"]["purchase_amount"] == 4200

        logs = command("logs", {"lines": 40})
        console.send(TID, logs)
        lines = console.reply(TID, logs["id"])["result"]["lines"]
        assert 0 < len(lines) <= 40
        assert any("541333******0012" in line for line in lines), lines  # masked

        close = command("close")
        console.send(TID, close)
        assert console.reply(TID, close["id"])["result"] == {"close": "now"}
        closed = wait_until(lambda: events(console, "close"), 30, "no close event")[0]
        assert closed["data"]["ok"] is True and closed["data"]["batch"] == 1
        rig.wait_idle()

        n = len(states(console))
        restart = key.sign(command("restart"))
        console.send(TID, restart)
        assert console.reply(TID, restart["id"])["result"] == {"restart": "now"}
        wait_state(console, "offline", after=n)
        wait_state(console, "online", after=n)
        rig.wait_ready()
        wait_until(lambda: any(e["data"] == {"reason": "fleet command"}
                               for e in events(console, "restart")), 20,
                   "no restart event from the fleet command")


def test_signed_unsigned_stale_and_replayed_commands(tmp_path: pathlib.Path, broker: Broker,
                                                     console: Client) -> None:
    key, forger = CommandKey(tmp_path), CommandKey(tmp_path / "forger")
    with fleet_rig(tmp_path, broker, command_key=str(key.public)) as rig:
        rig.start()
        wait_state(console, "online")

        def answer(cmd: dict[str, Any]) -> dict[str, Any]:
            console.send(TID, cmd)
            return console.reply(TID, cmd["id"])

        unsigned = command("restart")
        assert answer(unsigned) == {"id": unsigned["id"], "ok": False, "error": "unsigned"}
        assert answer(forger.sign(command("restart")))["error"] == "bad signature"
        tampered = key.sign(command("restart"))
        tampered["args"] = {"now": True}
        assert answer(tampered)["error"] == "bad signature"
        assert answer(key.sign(command("restart", age=400)))["error"] == "stale"
        assert answer(key.sign(command("ping", age=-400)))["error"] == "stale"
        ping = command("ping")
        assert answer(ping)["ok"] is True
        console.send(TID, ping)
        wait_until(lambda: [r for r in console.payloads(f"{T}/reply")
                            if r["id"] == ping["id"]][1:], 15, "no reply to the replay")
        again = [r for r in console.payloads(f"{T}/reply") if r["id"] == ping["id"]][1]
        assert again == {"id": ping["id"], "ok": False, "error": "replayed"}
        # params passes the checks, then its set is refused by the configuration's own
        # (tests/test_fleet_params.py for the rest)
        params = key.sign(command("params", {"version": 2, "set": {"log": {"level": "LOUD"}}}))
        got = answer(params)
        assert got["ok"] is False and got["error"].startswith("params: [log] level"), got
        assert answer(command("update", {"url": "x", "sha256": "ab" * 32}))["error"] == \
            "unsigned"
        # nothing of that restarted the terminal
        assert states(console).count("offline") == 0
        assert rig.fw is not None and rig.fw.poll() is None


def test_a_broker_that_never_answers_changes_nothing_at_the_counter(
        tmp_path: pathlib.Path, broker: Broker, console: Client) -> None:
    """The first broker of the list takes the connection and says nothing (no TLS, no
    CONNACK): sales go on, and the channel gets to the next broker in turn."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    table = broker.fleet_table(TID)
    table["brokers"] = [f"127.0.0.1:{silent.getsockname()[1]}", *table["brokers"]]
    try:
        with Rig(tmp_path, overrides={"fleet": table}) as rig:
            rig.start()
            wait_until(lambda: held, 10, "the terminal did not try the silent broker")
            assert "online" not in states(console)
            approved_sale(rig, "700")  # while the channel waits on the silent broker
            assert len(rig.wait_receipts(1)) == 1
            wait_state(console, "online", timeout=30)  # the next broker, in turn
            wait_until(lambda: any(e["data"].get("amount") == 700
                                   for e in events(console, "sale")), 15, "no sale event")
    finally:
        stop.set()
        holder.join(5)
        for s in held + [silent]:
            s.close()


# -- without a broker: the outbox's bound, the scrubbing, the checks, the configuration --
def test_the_events_outbox_is_bounded_and_says_what_it_dropped(tmp_path: pathlib.Path) -> None:
    from firmware.runtime.journal import Journal
    from firmware.runtime.vault import Vault

    journal = Journal(tmp_path / "j.sqlite3", Vault.open(tmp_path / "k", create=True))
    for i in range(1, 16):
        assert journal.fleet_add("sale", {"n": i}, "2026-01-01T00:00:00Z", bound=10) == i
    waiting, last, dropped = journal.fleet_counts()
    assert (waiting, last, dropped) == (10, 15, 6)
    first = journal.fleet_next()
    # the six oldest became one event, with the seq of the newest of them: seqs increase
    assert first is not None and (first.seq, first.kind, first.data) == (6, "dropped",
                                                                          {"count": 6})
    journal.fleet_sent(first.seq, first.kind)
    nxt = journal.fleet_next()
    assert nxt is not None and (nxt.seq, nxt.data) == (7, {"n": 7})
    # an acknowledgement of an event since folded into `dropped` leaves that one waiting
    for i in range(16, 30):
        journal.fleet_add("sale", {"n": i}, "2026-01-01T00:00:00Z", bound=10)
    journal.fleet_sent(7, "sale")
    head = journal.fleet_next()
    assert head is not None and head.kind == "dropped" and head.seq >= 7
    journal.close()
    # the seq survives a reopening of the journal
    again = Journal(tmp_path / "j.sqlite3", Vault.open(tmp_path / "k", create=False))
    assert again.fleet_add("restart", {"reason": "start"}, "2026-01-01T00:00:00Z",
                           bound=10) == 30


def test_scrub_masks_card_numbers_and_track_data() -> None:
    from firmware.runtime.fleet_words import scrub

    line = "swipe ;4761739001010010=25121010000000000000? pan 5413330089010012 stan 000123"
    out = scrub(line)
    assert "4761739001010010" not in out and "5413330089010012" not in out
    assert "541333******0012" in out and "=2512" not in out and "000123" in out
    assert not re.search(r"\d{16,}", scrub("x" + "1" * 40))


def test_command_checks_in_order(tmp_path: pathlib.Path) -> None:
    import datetime

    from firmware.runtime.fleet_words import Refused, check

    key = CommandKey(tmp_path)
    public = key.key.public_key()
    now = datetime.datetime.now(datetime.timezone.utc)

    def refused(cmd: Any, seen: dict[str, str] | None = None) -> str:
        raw = cmd if isinstance(cmd, bytes) else json.dumps(cmd).encode()
        with pytest.raises(Refused) as err:
            check(raw, now=now, seen=seen or {}, key=public)
        return str(err.value)

    assert refused(b"not json") == "not JSON"
    assert refused(command("reboot")).startswith("unknown command")
    assert refused({**command("ping"), "t": "yesterday"}) == "bad t"
    assert refused(key.sign(command("restart", age=301))) == "stale"
    ping = command("ping")
    assert refused(ping, {ping["id"]: "x"}) == "replayed"
    assert refused(command("params", {"set": {}})) == "unsigned"
    assert refused({**key.sign(command("restart")), "sig": "!!"}) == "bad signature"
    signed = key.sign(command("update", {"url": "https://x", "sha256": "ab" * 32}))
    assert check(json.dumps(signed).encode(), now=now, seen={}, key=public)["cmd"] == "update"
    with pytest.raises(Refused, match="bad signature"):  # no key configured: none verifies
        check(json.dumps(signed).encode(), now=now, seen={}, key=None)


def test_fleet_configuration_is_checked(tmp_path: pathlib.Path) -> None:
    from firmware import config
    from firmware.errors import ConfigError
    from tests.test_config_declared_once import MINIMAL

    def parse(**fleet: Any) -> Any:
        return config.parse({**MINIMAL, "fleet": fleet}).fleet

    assert parse().enabled is False and config.parse(MINIMAL).fleet.brokers == ()
    got = parse(brokers=["mqtt.example.net:8883", "[::1]:8884"], tls=False)
    assert got.brokers == (("mqtt.example.net", 8883), ("::1", 8884))
    with pytest.raises(ConfigError, match=r"\[fleet\] brokers"):
        parse(brokers=["mqtt.example.net"])
    with pytest.raises(ConfigError, match=r"\[fleet\] ca_file: required"):
        parse(brokers=["mqtt.example.net:8883"])
    with pytest.raises(ConfigError, match=r"\[fleet\] reconnect_cap"):
        parse(reconnect_cap=5)
    assert parse().mqtt == "auto" and parse(mqtt="3.1.1").mqtt == "3.1.1"
    for wrong in ("4", "3.1", "v5", 5, ""):
        with pytest.raises(ConfigError, match=r'\[fleet\] mqtt: must be "auto", "5" or '
                                              r'"3\.1\.1"'):
            parse(mqtt=wrong)
    (tmp_path / "not-a-key.pem").write_text("hello")
    with pytest.raises(ConfigError, match=r"\[fleet\] command_key"):
        parse(command_key=str(tmp_path / "not-a-key.pem"))
    assert parse(command_key=str(CommandKey(tmp_path).public)).command_key
