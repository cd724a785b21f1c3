"""The INSTALLED package under systemd, checked as a field engineer would.

Each test installs the package (dpkg -i, apt-get install -f) into a bookworm root that has
its dependencies already (the first install into a clean root is tests/test_package.py's),
boots it with systemd-nspawn (tests/test_package.py's helpers) with hwsim running outside
the root, and drives the terminal through hwsim's keypad, card reader and host:

1. the watchdog: a main loop stuck for good (POSTERM_RAISE=main_loop_key:1:stall) is
   noticed by systemd (WatchdogSec=3), which restarts the service by itself; a sale after
   that is approved;
2. `systemctl restart posterm` while a sale waits for a slow bank: the clean stop finishes
   the sale (APPROVED, one charge, one receipt) and the service comes back;
3. `posterm update` with real signed bundles, real dpkg and systemctl: a good update to a
   newer package, then a package whose /usr/bin/posterm cannot start, which is rolled back
   to the previous version with the journal intact;
4. the fleet's `update` as a packaged terminal takes it: a signed command over a Mosquitto
   on loopback outside the root (tests/fleetrig.py), the bundle over HTTPS from loopback;
   the service (user posterm, no privileges) hands it over with its request file
   ([fleet] update_handoff = "systemd"), and root's posterm-fleet-update.path and .service
   install it. First a refusal (dpkg-repack, which the rollback needs, not installed yet):
   result.json, result 8 with root's line, the old version still running; then the newer
   package, result 1 said by the new version, the journal intact.

Each ends with the money invariant (tests/invariants.py) once the queues have drained. They
skip, saying why, where this machine cannot install or boot a root.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from firmware import bundle
from tests import invariants
from tests.fleetrig import Broker, Client, CommandKey, command
from tests.test_fleet_channel import TID, T, events, wait_state
from tests.test_fleet_params import _sha, files, wait_update  # noqa: F401  (files: a fixture)
from tests.rig import Rig, wait_until
from tests.test_package import (
    PAN,
    Container,
    _fresh_root,
    _need_root_tools,
    _overrides,
    _posterm_ids,
    _remove_root,
    _root_run,
    _run,
    _say,
    _share_with_posterm,
    build_deb,
)

# one worker for this file (`signed` builds its packages once), beside tests/test_package.py's
pytestmark = pytest.mark.xdist_group("debian-systemd")

CONF = "/etc/posterm/posterm.toml"
JOURNAL = "var/lib/posterm/journal.sqlite3"  # under the root: the host side of the journal
DROPIN = "etc/systemd/system/posterm.service.d/test.conf"
GOOD, BROKEN = "+test2", "+test3"  # the update bundles' version suffixes
PROPS = ("ActiveState", "SubState", "MainPID", "NRestarts", "Result", "StatusText",
         "ExecMainStatus")


# -- packages -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An update key pair (firmware.bundle.keygen); the package built with its public key
    (the one installed), a newer one (GOOD), and one whose launcher exits 1 at once
    (BROKEN, repacked with dpkg-deb -R / -b), each newer one also as a signed bundle."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed: not a Debian machine")
    tmp = tmp_path_factory.mktemp("signed")
    private, public = bundle.keygen(tmp / "keys")
    upstream = build_deb.project_version()

    def build(suffix: str) -> pathlib.Path:
        return build_deb.build(version=upstream + suffix, out=tmp / "dist",
                               build_dir=tmp / "build", update_key=public).path

    installed, good = build(""), build(GOOD)
    tree = tmp / "broken-tree"
    _run(["dpkg-deb", "-R", str(build(BROKEN)), str(tree)])
    launcher = tree / "usr/bin/posterm"
    launcher.write_text("#!/bin/sh\n# a broken build: the terminal cannot start\nexit 1\n")
    launcher.chmod(0o755)
    broken = tmp / "broken" / f"posterm_{build_deb.debian_version(upstream + BROKEN)}_all.deb"
    broken.parent.mkdir()
    _run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(broken)])
    bundles = {}
    for suffix, deb in ((GOOD, good), (BROKEN, broken)):
        bundles[suffix] = bundle.make(deb, upstream + suffix, private,
                                      tmp / f"posterm-{upstream}{suffix}.bundle")
    return {"deb": installed, "version": upstream, "bundles": bundles, "private": private}


# -- a booted terminal ----------------------------------------------------------------------
@dataclass
class Terminal:
    root: pathlib.Path
    rig: Rig
    box: Container

    @property
    def journal(self) -> pathlib.Path:
        return self.root / JOURNAL

    def show(self, *props: str) -> dict[str, str]:
        return self.box.show("posterm.service", *(props or PROPS))

    def log(self) -> str:
        return self.box.run("journalctl", "-u", "posterm", "--no-pager", "-o", "cat",
                            check=False).stdout

    def status(self) -> dict[str, Any]:
        out = self.box.run("posterm", "--config", CONF, "status", "--json", check=False)
        assert out.stdout.startswith("{"), (out.stdout, out.stderr)
        return dict(json.loads(out.stdout))

    def wait_active(self, timeout: float = 60, *, other_than: str = "") -> dict[str, str]:
        """Until the service is active (READY) with a main process other than `other_than`."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.show()
            if shown.get("ActiveState") == "active" and shown.get("MainPID") not in \
                    ("0", other_than):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"posterm.service not active within {timeout} s: "
                                     f"{shown}\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def sale(self, digits: str) -> tuple[str, dict[str, Any]]:
        """A sale keyed and swiped as a cashier would; the receipt and the ledger entry."""
        hw = self.rig.hw
        receipts, charged = len(hw.receipts()), len(hw.ledger())
        hw.wait_display("ENTER AMOUNT", timeout=20)
        hw.press(digits)
        hw.press("OK")
        hw.wait_display("SWIPE CARD")
        hw.swipe(PAN)
        hw.wait_display("APPROVED", timeout=20)
        receipt = self.rig.wait_receipts(receipts + 1, timeout=20)[-1]
        ledger = hw.ledger()
        assert len(ledger) == charged + 1, ledger
        entry = ledger[-1]
        assert entry["charged"] and entry["amount"] == int(digits), entry
        assert "APPROVED" in receipt and entry["approval"] in receipt, receipt
        assert "476173******0010" in receipt and PAN not in receipt, receipt
        return receipt, entry

    def money_invariant(self, timeout: float = 30) -> None:
        """tests/invariants.py on the journal as the root holds it, once drained."""
        deadline = time.monotonic() + timeout
        while invariants.pending(self.journal) and time.monotonic() < deadline:
            time.sleep(0.1)
        problems = invariants.check(self.journal, self.rig.hw.ledger(), "TERM0001")
        assert problems == [], "\n".join(problems) + "\n--- journalctl -u posterm:\n" + \
            self.log()[-3000:]


def _need_nspawn() -> None:
    _need_root_tools()
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install systemd-container "
                        "util-linux; .ci/run does): the service cannot be booted")


@contextmanager
def _terminal(tmp: pathlib.Path, deb: pathlib.Path, *, dropin: str = "",
              prepare: tuple[str, ...] = (),
              site: Callable[[pathlib.Path], None] | None = None,
              **tables: dict[str, Any]) -> Iterator[Terminal]:
    """A root with `deb` installed (its dependencies there already), `prepare` run in
    it (chroot), `site` given the root (the site's files), the site's configuration for
    hwsim (plain TCP; `tables` on top of tests.rig.FAST), `dropin` as posterm.service's
    drop-in, booted; yields once posterm.service is active."""
    _need_nspawn()
    root, _took = _fresh_root(tmp, deb, deps_installed=True)
    rig = Rig(tmp)
    box: Container | None = None
    try:
        if prepare:
            _root_run(root, *prepare)
        if site is not None:
            site(root)
        rig.start_sim()
        _share_with_posterm(root, rig)
        from hwsim.fwconfig import render_config

        # as in test_package.test_service_under_systemd: /srv (the unit has PrivateTmp=),
        # and the card reader's pty at the reference device path DeviceAllow= lists
        inside = dict(rig.info, control_socket="/srv/hwsim/control.sock",
                      card_reader="/dev/ttyUSB0")
        tables.setdefault("maintenance", {"restart_window": ""})
        (root / CONF.lstrip("/")).write_text(render_config(
            inside, state_dir="/var/lib/posterm", overrides=_overrides(**tables)))
        if dropin:
            (root / DROPIN).parent.mkdir(parents=True, exist_ok=True)
            (root / DROPIN).write_text(dropin)
        box = Container(root, tmp / "nspawn.log", [f"{rig.sim_dir}:/srv/hwsim",
                                                   f"{rig.info['card_reader']}:/dev/ttyUSB0"])
        why = box.wait_booted()
        if why:
            pytest.skip(f"systemd-nspawn cannot boot a container here: {why}")
        term = Terminal(root, rig, box)
        shown = term.wait_active()
        assert shown["NRestarts"] == "0" and "ready" in shown["StatusText"], shown
        rig.hw.wait_display("ENTER AMOUNT", timeout=20)
        yield term
    finally:
        if box is not None:
            box.stop()
        rig.stop()
        if box is None or box.proc.poll() is not None:
            _remove_root(root)


class Screens:
    """Every distinct screen hwsim's display shows while running (its own client)."""

    def __init__(self, rig: Rig) -> None:
        from hwsim.client import HwsimClient

        self.hw = HwsimClient.from_dir(str(rig.sim_dir))
        self.seen: list[tuple[str, ...]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _look(self) -> None:
        try:
            rows = tuple(row.strip() for row in self.hw.display())
        except Exception:  # hwsim busy for a moment: the next look sees it
            return
        if not self.seen or self.seen[-1] != rows:
            self.seen.append(rows)

    def _poll(self) -> None:
        while not self._done.is_set():
            self._look()
            time.sleep(0.02)

    def stop(self) -> list[tuple[str, ...]]:
        self._done.set()
        self._thread.join(timeout=5)
        self._look()  # what it shows now
        return self.seen

    def first(self, text: str) -> int:
        """The index of the first screen with `text` in a row, or -1."""
        return next((i for i, rows in enumerate(self.seen) if any(text in r for r in rows)), -1)


# -- 1. the watchdog ------------------------------------------------------------------------
def test_watchdog_restarts_a_stuck_main_loop(signed: dict[str, Any], tmp_path: pathlib.Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    stall = "[Service]\nWatchdogSec=3\nEnvironment=POSTERM_RAISE=main_loop_key:1:stall\n"
    with _terminal(tmp_path, signed["deb"], dropin=stall) as term:
        box = term.box
        shown = term.show("WatchdogUSec", "Environment", "MainPID")
        assert shown["WatchdogUSec"] == "3s", shown
        assert "POSTERM_RAISE=main_loop_key:1:stall" in shown["Environment"], shown
        stuck_pid = shown["MainPID"]
        # it pings: a few periods of 3 s pass without a restart while idle
        time.sleep(4)
        assert term.show()["NRestarts"] == "0", term.log()[-2000:]

        term.rig.hw.press("1")  # the main loop blocks for good on this key
        pressed = time.monotonic()
        deadline = pressed + 20
        while True:
            shown = term.show()
            if shown["Result"] == "watchdog" or shown["SubState"] == "auto-restart":
                break
            assert time.monotonic() < deadline, f"no watchdog action: {shown}\n{term.log()}"
            time.sleep(0.1)
        noticed = time.monotonic() - pressed
        # RestartSec=5 leaves the time to take the fault out before systemd starts it again
        # (the next process would stall on its own first key otherwise)
        (term.root / DROPIN).write_text("[Service]\nWatchdogSec=3\n")
        box.run("systemctl", "daemon-reload")
        shown = term.wait_active(other_than=stuck_pid)
        back = time.monotonic() - pressed
        assert shown["NRestarts"] == "1", shown
        log = term.log()
        assert "Watchdog timeout (limit 3s)!" in log, log[-3000:]
        assert "Failed with result 'watchdog'" in log, log[-3000:]
        environ = box.run("cat", f"/proc/{shown['MainPID']}/environ").stdout.split("\0")
        assert not [v for v in environ if v.startswith("POSTERM_RAISE")], environ
        assert term.show("WatchdogUSec")["WatchdogUSec"] == "3s"
        _say(capsys, f"watchdog: stuck main loop noticed {noticed:.1f} s after the key "
                     f"(WatchdogSec=3), active again {back:.1f} s after (RestartSec=5), "
                     f"NRestarts {shown['NRestarts']}")

        # the key that stuck started no sale; a sale now goes through
        term.sale("1250")
        assert [e["amount"] for e in term.rig.hw.ledger() if e["charged"]] == [1250]
        time.sleep(4)  # still pinging with the 3 s limit after the restart
        assert term.show()["NRestarts"] == "1", term.log()[-2000:]
        term.money_invariant()
        status = term.status()
        assert status["last_sale"]["outcome"] == "APPROVED", status


# -- 2. systemctl restart mid-sale ----------------------------------------------------------
def test_restart_during_a_sale_finishes_it(signed: dict[str, Any], tmp_path: pathlib.Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # the bank answers after 3 s, within a response timeout of 10 s
    with _terminal(tmp_path, signed["deb"], host={"response_timeout": 10.0}) as term:
        hw, box = term.rig.hw, term.box
        before = term.show()
        hw.host_fault("delay", seconds=3)
        hw.press("1250")
        hw.press("OK")
        hw.wait_display("SWIPE CARD")
        hw.swipe(PAN)
        hw.wait_display("AUTHORIZING", timeout=10)
        screens = Screens(term.rig)
        try:
            started = time.monotonic()
            box.run("systemctl", "restart", "posterm", timeout=120)
            took = time.monotonic() - started
            shown = term.wait_active(other_than=before["MainPID"])
            hw.wait_display("ENTER AMOUNT", timeout=20)
        finally:
            seen = screens.stop()
        shown_log = "\n".join(" / ".join(rows) for rows in seen)
        _say(capsys, f"systemctl restart mid-sale: {took:.1f} s (the bank took 3 s); the "
                     "display showed:\n    " + shown_log.replace("\n", "\n    "))
        assert shown["NRestarts"] == "0", shown  # a restart asked for is no failure
        # the sale ended APPROVED before the terminal said STOPPING, and the new process
        # has nothing to tell about it (no LAST SALE ... notice, nothing reversed)
        approved, stopping = screens.first("APPROVED"), screens.first("STOPPING")
        assert 0 <= approved < stopping, shown_log
        assert not any("NOT CHARGED" in r or "LAST SALE" in r or "REVERSED" in r
                       for rows in seen for r in rows), shown_log
        final = hw.display()
        assert "ENTER AMOUNT" in " ".join(final), final
        log = term.log()
        assert "stopping: finishing the sale in progress first" in log, log[-3000:]
        assert "stopping with a sale in flight" not in log, log[-3000:]
        # one receipt, one charge, and they agree
        receipts = hw.receipts()
        ledger = hw.ledger()
        assert len(receipts) == 1 and "APPROVED" in receipts[0], receipts
        assert [(e["charged"], e["amount"]) for e in ledger] == [(True, 1250)], ledger
        assert ledger[0]["approval"] in receipts[0], (ledger, receipts)
        entries = [json.loads(line) for line in box.run(
            "journalctl", "-u", "posterm", "-o", "json", "--no-pager").stdout.splitlines()]
        outcomes = [(e.get("SALE_ID"), e.get("OUTCOME")) for e in entries if e.get("OUTCOME")]
        assert outcomes == [("1", "APPROVED")], outcomes
        status = term.status()
        assert status["last_sale"]["outcome"] == "APPROVED" and \
            status["last_sale"]["amount"] == 1250, status
        term.money_invariant()


# -- 3. a signed update, then one that is rolled back ---------------------------------------
def test_signed_update_and_rollback(signed: dict[str, Any], tmp_path: pathlib.Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    version = signed["version"]
    bundles: dict[str, pathlib.Path] = signed["bundles"]
    # dpkg-repack is a Recommends (apt installs it with the package on a terminal); the
    # clean root has it in its apt cache (test_package.ROOT_RECOMMENDS)
    repack = ("apt-get", "install", "-y", "-q", "--no-download", "--no-install-recommends",
              "dpkg-repack")
    with _terminal(tmp_path, signed["deb"], prepare=repack,
                   update={"ready_timeout": 10.0, "idle_wait": 30.0}) as term:
        box = term.box
        assert term.status()["version"] == version
        term.sale("1250")
        term.rig.hw.wait_display("ENTER AMOUNT", timeout=20)
        for path in bundles.values():
            shutil.copy(path, term.root / "root" / path.name)
        update = ("posterm", "--config", CONF, "update")

        # a good update: exit 0, the new version runs
        started = time.monotonic()
        done = box.run(*update, f"/root/{bundles[GOOD].name}", check=False, timeout=300)
        took_good = time.monotonic() - started
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{term.log()[-3000:]}"
        assert f"posterm {version}{GOOD} is READY and signed on" in done.stdout, done.stdout
        status = term.status()
        assert status["running"] and status["version"] == version + GOOD, status
        assert box.run("dpkg-query", "-W", "-f", "${Version}", "posterm").stdout == \
            build_deb.debian_version(version + GOOD)
        # kept for rollbacks: the running one rebuilt by dpkg-repack, and the new one
        kept = {p.name for p in (term.root / "var/lib/posterm-update").glob("*.deb")}
        assert kept == {f"posterm_{version}_all.deb", f"posterm_{version}{GOOD}_all.deb"}, kept
        last = status["last_sale"]
        assert (last["id"], last["outcome"], last["amount"]) == (1, "APPROVED", 1250), last

        # a version that never becomes READY: rolled back (exit 3) to the previous one
        started = time.monotonic()
        done = box.run(*update, f"/root/{bundles[BROKEN].name}", check=False, timeout=300)
        took_bad = time.monotonic() - started
        said = f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert done.returncode == 3, f"{said}\n{term.log()[-3000:]}"
        assert f"rolled back; posterm {version}{GOOD} is READY" in done.stdout, said
        assert "journal restored from the snapshot" in done.stdout, said
        shown = term.wait_active()
        status = term.status()
        assert status["running"] and status["version"] == version + GOOD, status
        assert box.run("dpkg-query", "-W", "-f", "${Version}", "posterm").stdout == \
            build_deb.debian_version(version + GOOD)
        assert status["journal"]["integrity"] == "ok", status
        last = status["last_sale"]
        assert (last["id"], last["outcome"], last["amount"]) == (1, "APPROVED", 1250), last
        _say(capsys, f"posterm update: {version} -> {version}{GOOD} (dpkg-repack, dpkg -i, "
                     f"restart, READY) {took_good:.1f} s; {version}{BROKEN} (cannot start) "
                     f"rolled back, exit 3, in {took_bad:.1f} s (ready_timeout 10 s); "
                     f"{shown['ActiveState']} again, NRestarts {shown['NRestarts']}")

        _sells_again(term)


def _sells_again(term: Terminal) -> None:
    """After an update: the idle screen, a second sale approved, the money invariant."""
    term.rig.hw.wait_display("ENTER AMOUNT", timeout=20)
    term.sale("2000")
    assert term.status()["last_sale"]["id"] == 2
    term.money_invariant()


# -- 4. the fleet's update, handed to root ---------------------------------------------------
FLEET_FILES = "/etc/posterm/fleet"  # inside the root: the terminal's certificate, the keys


def test_fleet_update_is_installed_by_roots_path_unit(
        signed: dict[str, Any], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
        broker: Broker, console: Client, files: tuple[pathlib.Path, str]) -> None:  # noqa: F811
    version = signed["version"]
    good: pathlib.Path = signed["bundles"][GOOD]
    folder, base = files
    (folder / good.name).write_bytes(good.read_bytes())
    key = CommandKey(tmp_path / "fleet-key")
    cert, cert_key = broker.cert(TID)
    sources = {"ca.pem": broker.ca_cert, "client.pem": cert, "client.key": cert_key,
               "fleet-key.pub": str(key.public)}

    def site(root: pathlib.Path) -> None:
        """The terminal's fleet identity, readable by the service user only."""
        uid, gid = _posterm_ids(root)
        where = root / FLEET_FILES.lstrip("/")
        where.mkdir(mode=0o750)
        os.chown(where, 0, gid)
        for name, source in sources.items():
            shutil.copy(source, where / name)
            os.chown(where / name, uid, gid)
            (where / name).chmod(0o600)

    fleet = {"brokers": [f"127.0.0.1:{broker.port}"], "ca_file": f"{FLEET_FILES}/ca.pem",
             "client_cert": f"{FLEET_FILES}/client.pem",
             "client_key": f"{FLEET_FILES}/client.key",
             "command_key": f"{FLEET_FILES}/fleet-key.pub", "reconnect_base": 0.2,
             "keepalive": 5, "update_handoff": "systemd", "update_handoff_timeout": 30.0}
    # no dpkg-repack yet (a Recommends): root cannot keep the running version to roll
    # back to, so it refuses the first time, after taking the request
    with _terminal(tmp_path, signed["deb"], site=site, fleet=fleet,
                   update={"ready_timeout": 20.0, "idle_wait": 30.0}) as term:
        box = term.box
        assert box.show("posterm-fleet-update.path", "ActiveState", "UnitFileState") == \
            {"ActiveState": "active", "UnitFileState": "enabled"}
        wait_state(console, "online", timeout=30)
        term.sale("1250")
        term.rig.hw.wait_display("ENTER AMOUNT", timeout=20)
        pid = term.show("MainPID")["MainPID"]

        def update() -> dict[str, Any]:
            cmd = key.sign(command("update", {"url": f"{base}/{good.name}",
                                              "sha256": _sha(good)}))
            console.send(TID, cmd)
            return console.reply(TID, cmd["id"], timeout=30)

        # 1. refused by root: its result.json read by the firmware, result 8 with its line
        started = time.monotonic()
        assert update()["result"] == {"update": "downloading"}
        seen = wait_update(console, 0, (0, 8), timeout=120)
        took_refused = time.monotonic() - started
        assert [(e["state"], e["result"]) for e in seen] == [(1, 0), (2, 0), (3, 0), (0, 8)]
        error = seen[-1]["error"]
        assert error.startswith("posterm-fleet-update: exit 1: posterm update: refused: the "
                                "running version's package cannot be kept"), error
        root_side = box.show("posterm-fleet-update.service", "Result", "ExecMainStatus",
                             "ActiveState")
        assert root_side == {"Result": "exit-code", "ExecMainStatus": "1",
                             "ActiveState": "failed"}, root_side
        root_log = box.run("journalctl", "-u", "posterm-fleet-update", "--no-pager", "-o",
                           "cat", check=False).stdout
        assert "bundle verified: posterm " + version + GOOD in root_log, root_log
        state_dir = term.root / "var/lib/posterm/fleet-update"
        assert not (state_dir / "request.json").exists()  # taken by root
        assert not (state_dir / "result.json").exists()  # read by the firmware
        assert term.show("MainPID")["MainPID"] == pid  # never stopped
        assert term.status()["version"] == version

        # 2. with dpkg-repack there (apt's cache has it): installed, restarted, result 1
        box.run("apt-get", "install", "-y", "-q", "--no-download", "--no-install-recommends",
                "dpkg-repack", timeout=120)
        box.run("systemctl", "reset-failed", "posterm-fleet-update.service")
        n = len(events(console, "update"))
        started = time.monotonic()
        assert update()["result"] == {"update": "downloading"}
        seen = wait_update(console, n, (0, 1), timeout=180)
        took_good = time.monotonic() - started
        assert [(e["state"], e["result"]) for e in seen] == [(1, 0), (2, 0), (3, 0), (0, 1)]
        assert all(e["version"] == version + GOOD for e in seen[1:]), seen
        shown = term.wait_active(other_than=pid)
        assert shown["NRestarts"] == "0", shown
        root_side = box.show("posterm-fleet-update.service", "Result", "ExecMainStatus")
        assert root_side == {"Result": "success", "ExecMainStatus": "0"}, root_side
        assert box.run("dpkg-query", "-W", "-f", "${Version}", "posterm").stdout == \
            build_deb.debian_version(version + GOOD)
        status = term.status()
        assert status["running"] and status["version"] == version + GOOD, status
        assert status["journal"]["integrity"] == "ok", status
        last = status["last_sale"]
        assert (last["id"], last["outcome"], last["amount"]) == (1, "APPROVED", 1250), last
        wait_until(lambda: any(m["state"] == "online" and m["version"] == version + GOOD
                               for m in console.payloads(f"{T}/state")), 30,
                   "the console does not see the terminal online as the new version")
        _say(capsys, f"fleet update handed to root: refused (no dpkg-repack) in "
                     f"{took_refused:.1f} s, result 8; {version} -> {version}{GOOD} "
                     f"(download, request, posterm-fleet-update: repack, dpkg -i, restart, "
                     f"READY; result 1 from the new version) in {took_good:.1f} s")
        _sells_again(term)
