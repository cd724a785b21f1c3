"""Fleet channel connect storm: a whole fleet reconnecting to the MQTT broker after a restart.

A local Mosquitto (started here: its own config on a free loopback port, no limit on
connections, its open-files limit raised to the hard limit) takes N channel clients;
the broker is restarted (SIGTERM, `--outage` seconds down, started again on the same
port); every client notices the closed connection and reconnects:

(a) all at once: at once, and again every second while refused;
(b) the channel's own: before attempt k (from 0 at the disconnect) wait
    firmware/runtime/fleet_mqtt.py's `reconnect_delay(tid, k, base, cap, draw)`: the
    terminal's offset over [0, OFFSET_SPREAD * base) plus full_jitter(k, base, cap), with
    [fleet]'s defaults reconnect_base and reconnect_cap (`--base`, `--cap`);
(h) for comparison, the host probe's spread (firmware/core/link.py, what the channel did
    before): terminal_offset(tid, base) + full_jitter(k, base, cap), same base and cap.

Figures: the most connections accepted (CONNACK, then the `state` PUBACK) in any one
second after the restart, the most attempts (TCP connects) in any one second, and the
time from the restart to the last client connected.

The clients are asyncio stand-ins, not paho-mqtt: 10,000 paho clients are 10,000
network threads (or 10,000 sockets driven by hand through paho's external-loop calls),
which on two shared cores would measure the clients, not the broker. Each stand-in does
on the wire what the channel does on connecting (docs/fleet.md): MQTT 3.1.1 CONNECT with
client id = the terminal id and the `state` last will (QoS 1, retained), then PUBLISH
`state` "online" QoS 1 retained and wait for its PUBACK, then hold the connection. What
it does not do: TLS (each handshake would add its CPU on both sides: the storm is only
worse with it), subscriptions, telemetry, events.

    python bench/fleet_storm.py [--clients N] [--outage S] [--base S] [--cap S]
                                [--only a|b|h] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.config_fleet import FleetTable  # noqa: E402
from firmware.core.backoff import full_jitter  # noqa: E402
from firmware.core.link import terminal_offset  # noqa: E402
from firmware.runtime.fleet_mqtt import OFFSET_SPREAD, reconnect_delay  # noqa: E402

HOST = "127.0.0.1"
KEEPALIVE = 600  # seconds; the run is shorter, so no PINGREQ is needed
ATTEMPT_TIMEOUT = 15.0  # a connect that hangs (SYN dropped and retried) counts as failed after it
FIXED_RETRY = 1.0  # (a): every refused client tries again this often
RAMP = 400  # initial connects in flight: the fleet's first connection is not the storm


# -- MQTT 3.1.1, the few packets the channel sends on connecting ---------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def _state(tid: str, state: str) -> bytes:
    return json.dumps({"tid": tid, "state": state, "version": "0.1.0",
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()


def connect_packet(tid: str) -> bytes:
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retained
    body = (_str("MQTT") + bytes([4, flags]) + KEEPALIVE.to_bytes(2, "big") + _str(tid)
            + _str(f"posterm/v1/{tid}/state") + _str(_state(tid, "offline")))
    return b"\x10" + _varint(len(body)) + body


def publish_packet(tid: str, packet_id: int) -> bytes:
    body = (_str(f"posterm/v1/{tid}/state") + packet_id.to_bytes(2, "big")
            + _state(tid, "online"))
    return b"\x33" + _varint(len(body)) + body  # PUBLISH, QoS 1, retained


# -- the fleet ----------------------------------------------------------------------
@dataclass
class Record:
    attempts: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    connected: set[str] = field(default_factory=set)


class Client:
    def __init__(self, tid: str, port: int, record: Record, mode: str, base: float,
                 cap: float) -> None:
        self.tid, self.port, self.record, self.mode = tid, port, record, mode
        self.base, self.cap = base, cap
        self.rng = random.Random(tid)
        self.writer: asyncio.StreamWriter | None = None

    async def _once(self) -> asyncio.StreamReader | None:
        self.record.attempts.append(time.monotonic())
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port), ATTEMPT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            writer.write(connect_packet(self.tid))
            connack = await asyncio.wait_for(reader.readexactly(4), ATTEMPT_TIMEOUT)
            if connack[0] != 0x20 or connack[3] != 0:
                raise ConnectionError(f"CONNACK {connack.hex()}")
            writer.write(publish_packet(self.tid, 1))
            puback = await asyncio.wait_for(reader.readexactly(4), ATTEMPT_TIMEOUT)
            if puback[0] != 0x40:
                raise ConnectionError(f"PUBACK {puback.hex()}")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            writer.close()
            return None
        self.writer = writer
        self.record.accepted.append(time.monotonic())
        self.record.connected.add(self.tid)
        return reader

    def _delay(self, attempt: int) -> float:
        if self.mode == "a":
            return 0.0 if attempt == 0 else FIXED_RETRY
        if self.mode == "b":
            return reconnect_delay(self.tid, attempt, self.base, self.cap, self.rng.random())
        return (terminal_offset(self.tid, self.base)
                + full_jitter(attempt, self.base, self.cap, self.rng.random()))

    async def run(self, first: asyncio.Semaphore) -> None:
        """Connect (ramped), hold; on losing the connection, reconnect by the mode."""
        while True:
            async with first:
                reader = await self._once()
            if reader is not None:
                break
            await asyncio.sleep(0.5)
        while True:
            await reader.read()  # b"" at the broker's close: nothing else comes
            self.record.connected.discard(self.tid)
            if self.writer is not None:
                self.writer.close()
            attempt = 0
            while True:
                await asyncio.sleep(self._delay(attempt))
                got = await self._once()
                if got is not None:
                    reader = got
                    break
                attempt += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- the broker ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Broker:
    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.port = binary, _free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\nmax_connections -1\n"
            f"persistence false\nconnection_messages false\nlog_type error\nlog_type warning\n"
            f"log_dest stderr\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:  # a file Mosquitto need not open: as root it
            self.proc = subprocess.Popen(  # drops to its own user
                [self.binary, "-c", str(self.conf)], preexec_fn=_raise_nofile,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.01)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _peak(times: list[float], since: float) -> tuple[int, float]:
    """The most events in any one-second window (10 ms steps) after `since`, and when."""
    times = sorted(t for t in times if t >= since)
    best, at, j = 0, 0.0, 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, t - since
    return best, at


async def storm(binary: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp:
        broker = Broker(binary, Path(tmp))
        broker.start()
        record = Record()
        clients = [Client(f"T{i:07d}", broker.port, record, mode, args.base, args.cap)
                   for i in range(1, args.clients + 1)]
        first = asyncio.Semaphore(RAMP)
        tasks = [asyncio.create_task(c.run(first)) for c in clients]
        t0 = time.monotonic()
        while len(record.connected) < args.clients:
            await asyncio.sleep(0.1)
        setup = time.monotonic() - t0
        await asyncio.sleep(1.0)
        restart = time.monotonic()
        broker.stop()
        await asyncio.sleep(args.outage)
        broker.start()
        back = time.monotonic()
        # until every client is connected again, and for a second more: nothing comes late
        while len(record.connected) < args.clients or record.accepted[-1] < restart:
            await asyncio.sleep(0.05)
        done = max(record.accepted) - restart
        peak, peak_at = _peak(record.accepted, restart)
        tries, _ = _peak(record.attempts, restart)
        attempts = sum(1 for t in record.attempts if t >= restart)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            c.close()
        broker.stop()
        return {"setup": setup, "peak": peak, "peak_at": peak_at, "tries": tries,
                "attempts": attempts, "done": done, "back": back - restart}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--outage", type=float, default=2.0, help="seconds the broker is down")
    ap.add_argument("--base", type=float, default=FleetTable().reconnect_base)
    ap.add_argument("--cap", type=float, default=FleetTable().reconnect_cap)
    ap.add_argument("--only", choices=("a", "b", "h"))
    ap.add_argument("--quick", action="store_true", help="1,000 clients (./run bench --quick)")
    args = ap.parse_args()
    if args.quick:
        args.clients = min(args.clients, 1_000)
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                           if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if binary is None:
        print("mosquitto is not installed (Debian: apt-get install mosquitto)")
        return 1
    _raise_nofile()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 200:
        print(f"open-files limit {soft}: at most {soft - 200} clients; use --clients")
        return 1
    print(f"{args.clients} channel clients, Mosquitto restarted ({args.outage} s down); "
          f"base {args.base:g} s, cap {args.cap:g} s; the channel's offset over "
          f"[0, {OFFSET_SPREAD * args.base:g} s), the host probe's over [0, {args.base:g} s)")
    results = {}
    names = {"a": "all at once", "b": "the channel", "h": "host probe's"}
    for mode in ("a", "b", "h"):
        if args.only not in (None, mode):
            continue
        r = asyncio.run(storm(binary, mode, args))
        results[mode] = r
        print(f"({mode}) {names[mode]:12}: most accepted in 1 s {r['peak']:6.0f} "
              f"({r['peak_at']:.1f} s after the restart), most attempts in 1 s "
              f"{r['tries']:6.0f}, attempts {r['attempts']:6.0f}, "
              f"all connected {r['done']:6.1f} s after the restart "
              f"(broker listening again {r['back']:.1f} s after; first connection of all: "
              f"{r['setup']:.1f} s)")
    for mode in ("b", "h"):
        if "a" in results and mode in results:
            ratio = results["a"]["peak"] / max(1.0, results[mode]["peak"])
            print(f"peak ratio all at once / {names[mode]}: {ratio:.1f}x"
                  + (" (goal >= 10x)" if mode == "b" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
