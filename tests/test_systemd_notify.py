"""systemd readiness, status, watchdog and clean stop, against a socket the test owns.

This machine has no booted systemd (PID 1 is not systemd, and systemd-nspawn is
not installed), so these tests play the service manager's part themselves: they
own the NOTIFY_SOCKET datagram socket, read what posterm sends there, and act as
`WatchdogSec=` would (kill the process when the pings stop, start it again).
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator

import pytest

from firmware.runtime.sdnotify import Notifier
from tests.invariants import wait_and_check
from tests.rig import Rig, wait_until

PAN = "4761739001010010"


class NotifySocket:
    """The service manager's end of sd_notify: collects every datagram."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def pump(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, value: str | None = None, timeout: float = 20.0,
                 after: float = 0.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            for t, fields in self.messages:
                if t >= after and key in fields and (value is None or fields[key] == value):
                    return fields
            if time.monotonic() > deadline:
                raise AssertionError(f"no {key}={value} from posterm: {self.messages}")
            time.sleep(0.02)

    def pings_since(self, t0: float) -> int:
        self.pump()
        return sum(1 for t, f in self.messages if t >= t0 and f.get("WATCHDOG") == "1")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: pathlib.Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def _env(ns: NotifySocket, watchdog: float | None = None) -> dict[str, str]:
    env = {"NOTIFY_SOCKET": str(ns.path)}
    if watchdog:
        env["WATCHDOG_USEC"] = str(int(watchdog * 1_000_000))
    return env


# -- the protocol -----------------------------------------------------------------

def test_notifier_speaks_the_datagram_protocol(notify: NotifySocket) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "3000000"})
    assert n.enabled and n.watchdog_seconds == 3.0
    assert n.ready("ready, bank online\nsecond line")
    assert n.watchdog() and n.stopping("stopping")
    n.close()
    notify.pump()
    sent = [f for _, f in notify.messages]
    assert sent == [{"READY": "1", "STATUS": "ready, bank online second line"},
                    {"WATCHDOG": "1"}, {"STOPPING": "1", "STATUS": "stopping"}]


def test_abstract_socket_and_no_systemd(tmp_path: pathlib.Path) -> None:
    name = f"posterm-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("ok")
        assert server.recv(100) == b"READY=1\nSTATUS=ok"
    finally:
        server.close()
    outside = Notifier({})
    assert not outside.enabled and not outside.ready("x") and outside.watchdog_seconds is None
    other = Notifier({"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_USEC": "1000000",
                      "WATCHDOG_PID": "1"})
    assert other.watchdog_seconds is None  # the watchdog is some other process's


# -- the firmware ------------------------------------------------------------------

def test_ready_only_after_recovery_then_status_and_pings(tmp_path: pathlib.Path,
                                                         notify: NotifySocket) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.start_fw(failpoint="after_send")  # leaves a sale sent without an answer
        rig.sale("2100", PAN)
        assert rig.wait_fw_exit() == -9
        rig.start_fw(env=_env(notify, watchdog=1.5), wait=False)
        ready = notify.wait_for("READY", "1")
        assert ready["STATUS"].startswith("ready")
        # READY came after recovery: the journal already held the reversal
        db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
        assert db.execute("SELECT count(*) FROM reversals").fetchone()[0] == 1
        db.close()
        statuses = [f["STATUS"] for _, f in notify.messages if "STATUS" in f]
        assert statuses[0].startswith("recovering")
        t0 = time.monotonic()
        # every WatchdogSec/3 from the main loop: three pings within 2 s
        wait_until(lambda: notify.pings_since(t0) >= 3, 2.0, lambda: str(notify.messages))
        rig.hw.host_down()
        rig.sale("100", PAN)  # finds the bank gone: the status line says so
        wait_deadline = time.monotonic() + 20
        while not any("OFFLINE" in f.get("STATUS", "") or "slow" in f.get("STATUS", "")
                      for _, f in notify.messages):
            assert time.monotonic() < wait_deadline, notify.messages
            notify.pump()
            time.sleep(0.05)
        rig.hw.host_up()
        wait_and_check(rig)


def test_a_stuck_main_loop_stops_the_pings_and_a_restart_recovers(
        tmp_path: pathlib.Path, notify: NotifySocket) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.hw.host_fault("delay", seconds=1.0)
        # the 6th key press blocks the main loop for good (keys 2,1,0,0,OK make the sale)
        rig.start_fw(env=_env(notify, watchdog=1.0), raise_at="main_loop_key:6:stall")
        notify.wait_for("READY", "1")
        rig.sale("2100", PAN)
        rig.hw.wait_display("AUTHORIZING")
        rig.hw.press("5")  # stuck now, with the sale's answer on its way
        stuck_at = time.monotonic()
        # what WatchdogSec=1 does: no ping for a whole period -> abort, then restart
        def pings_stopped() -> bool:
            notify.pump()  # the pings up to now, each stamped when it came
            last = max((t for t, f in notify.messages if f.get("WATCHDOG") == "1"), default=0)
            return time.monotonic() - max(last, stuck_at) > 1.0

        wait_until(pings_stopped, 10, "the watchdog pings went on with the main loop stuck")
        assert rig.fw is not None and rig.fw.poll() is None  # alive, but stuck
        rig.kill_fw(signal.SIGABRT)
        rig.start_fw(env=_env(notify, watchdog=1.0))
        rig.hw.wait_display("LAST SALE REVERSED")  # the answer was never journaled
        wait_and_check(rig)


def test_sigterm_mid_sale_finishes_the_sale_then_stops_cleanly(
        tmp_path: pathlib.Path, notify: NotifySocket) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.hw.host_fault("delay", seconds=1.5)
        rig.start_fw(env=_env(notify))
        rig.sale("2200", PAN)
        rig.hw.wait_display("AUTHORIZING")
        assert rig.fw is not None
        rig.fw.send_signal(signal.SIGTERM)
        rig.hw.press("3")  # no new sale, no menu while stopping
        assert rig.wait_fw_exit(timeout=30) == 0, rig.log()
        assert rig.hw.wait_display("STOPPING")
        receipts = rig.hw.receipts()
        assert receipts and "APPROVED" in receipts[-1] and "*** COPY ***" not in receipts[-1]
        notify.wait_for("STOPPING", "1")
        wal = rig.state_dir / "journal.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size == 0  # checkpointed
        rig.start_fw()
        rows = rig.wait_idle()
        assert not any("LAST SALE" in r for r in rows), rows  # nothing left to tell
        wait_and_check(rig)
        assert [e["amount"] for e in rig.hw.ledger() if e["charged"]] == [2200]


def test_second_sigterm_stops_at_once_and_the_next_start_recovers(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.hw.host_fault("delay", seconds=5.0)
        rig.start_fw()
        rig.sale("2300", PAN)
        rig.hw.wait_display("AUTHORIZING")
        time.sleep(0.3)
        assert rig.fw is not None
        rig.fw.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        rig.fw.send_signal(signal.SIGTERM)
        assert rig.wait_fw_exit(timeout=10) == 0, rig.log()
        rig.hw.host_clear()
        rig.start_fw()
        rig.hw.wait_display("LAST SALE REVERSED")
        wait_and_check(rig)
