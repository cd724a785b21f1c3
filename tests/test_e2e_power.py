"""Battery and mains power, end to end: hwsim's gauge and power-fail line, the real firmware.

What a merchant sees (the idle screen, a refused sale) and what the host charged
(the money invariant) when the battery runs low and when mains power goes while
a sale is being authorized.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import subprocess
import sys
import time
from typing import Any

from drivers.gauge import Max17048
from drivers.gpio import Pins
from drivers.remote import RemoteGPIO, RemoteSMBus
from tests.invariants import pending, wait_and_check
from tests.rig import Rig, wait_until

PAN = "4761739001010010"
BATTERY = {"interval": 0.5, "low_percent": 10}


def status(rig: Rig) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "firmware", "--config", str(rig.config_path),
                          "status", "--json"], capture_output=True, text=True, timeout=30)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def wait_gone(rig: Rig, text: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = rig.hw.display()
        if not any(text in row for row in rows):
            return rows
        assert time.monotonic() < deadline, f"display still shows {text!r}: {rows}"
        time.sleep(0.05)


def refused(rig: Rig, why: str) -> None:
    """A digit at the idle screen starts no sale: the screen keeps saying why."""
    before = rig.log().count(f"no new sale: {why}")
    rig.hw.press("5")
    deadline = time.monotonic() + 5
    while rig.log().count(f"no new sale: {why}") == before:
        assert time.monotonic() < deadline, "the refused key was never logged:\n" + rig.log()
        time.sleep(0.05)
    rows = rig.hw.display()
    assert any(why in row for row in rows), rows
    assert "SALE" not in rows[0] and not any("5.00" in row for row in rows), rows


def gauge_nacks(rig: Rig) -> int:
    """The gauge's refused I2C transactions so far (each failed reading has one)."""
    return sum(d["nacks"] for d in rig.hw.i2c_stats() if d["addr"] == 0x36)


def charged(rig: Rig) -> list[int]:
    return [int(e["amount"]) for e in rig.hw.ledger() if e["charged"]]


def test_hwsim_battery_and_power_through_the_cli_and_the_stand_ins(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        ctl = [sys.executable, "-m", "hwsim", "ctl", "--dir", str(rig.sim_dir)]

        def cli(*args: str) -> str:
            out = subprocess.run([*ctl, *args], capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        assert cli("battery") == ("battery 87.5 %, 4.067 V, +0 %/h (steady); gauge answering "
                                  "(0 reads)")
        assert cli("battery", "--percent", "12", "--rate", "-3.5").startswith(
            "battery 12 %, 3.664 V, -3.5 %/h (discharging)")
        gauge = Max17048(RemoteSMBus(str(rig.sim_dir / "control.sock")))
        reading = gauge.read()
        assert (reading.percent, reading.voltage, reading.rate) == (12.0, 3.664, -3.536)
        bad = subprocess.run([*ctl, "battery", "--percent", "120"], capture_output=True,
                             text=True, timeout=30)
        assert bad.returncode == 1 and "percent must be 0 to 100, not 120" in bad.stderr
        assert "NOT ANSWERING" in cli("battery", "--fail")
        assert cli("battery", "--answer", "--voltage", "3.9").startswith("battery 12 %, 3.900 V")
        gauge.close()

        gpio = RemoteGPIO(str(rig.sim_dir / "control.sock"))
        pins = Pins(gpio)
        assert pins.power_ok() and cli("power") == "mains present (pin 25 high)"
        assert cli("power", "fail") == "mains LOST (pin 25 low)"
        assert not pins.power_ok() and "mains LOST" in cli("gpio")
        assert not rig.hw.mains()
        rig.hw.power_restore()
        assert pins.power_ok() and rig.hw.mains()
        pins.close()
        gpio.close()


def test_low_battery_lets_the_sale_in_flight_finish_then_blocks_new_sales(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"battery": BATTERY}) as rig:
        rig.start()
        rig.hw.wait_display("BAT 87%")
        doc = status(rig)
        assert doc["power"]["battery"]["percent"] == 87.5
        assert doc["power"]["battery"]["voltage"] == 4.067
        assert doc["power"]["mains"]["ok"] is True and doc["health"] == 0

        rig.hw.host_fault("delay", seconds=1.2)
        rig.sale("2500", PAN)
        rig.hw.wait_display("AUTHORIZING")
        rig.hw.battery(percent=8, rate=-3.5)  # runs low while the bank answers
        rig.hw.wait_display("APPROVED", timeout=10)
        rows = rig.hw.wait_display("BATTERY LOW", timeout=10)
        assert "BAT 8%" in rows[3], rows
        refused(rig, "BATTERY LOW")
        doc = status(rig)
        assert doc["health"] == 1
        assert "battery low (8 %, below 10 %): no new sale" in doc["reasons"]

        read = rig.hw.battery(percent=11)["reads"]  # above the threshold, not 3 points above
        wait_until(lambda: rig.hw.battery()["reads"] >= read + 3, 10, "three gauge readings")
        refused(rig, "BATTERY LOW")
        rig.hw.battery(percent=14)
        wait_gone(rig, "BATTERY LOW")
        rig.hw.wait_display("BAT 14%")
        rig.wait_idle()
        rig.sale("1300", PAN)
        rig.hw.wait_display("APPROVED")
        assert charged(rig) == [2500, 1300]
        log = rig.log()
        assert "battery low: 8 % (below 10 %) and not charging" in log
        assert "battery no longer low: 14 %: sales allowed again" in log
        wait_and_check(rig)


def test_a_gauge_that_stops_answering_never_blocks_sales(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"battery": BATTERY}) as rig:
        rig.start()
        rig.hw.wait_display("BAT 87%")
        rig.hw.battery(failing=True)
        rig.hw.wait_display("BATTERY GAUGE FAULT")
        failed = gauge_nacks(rig)
        wait_until(lambda: gauge_nacks(rig) >= failed + 3, 10, "three failed gauge readings")
        rig.hw.wait_display("ENTER AMOUNT")
        rig.sale("900", PAN)
        rig.hw.wait_display("APPROVED")
        assert "battery gauge" in " ".join(status(rig)["reasons"])
        rig.hw.battery(failing=False, percent=64)
        rig.hw.wait_display("BAT 64%", timeout=10)
        wait_gone(rig, "BATTERY GAUGE FAULT")
        log = rig.log()
        assert log.count("no I2C device answers at 0x36") == 1, log
        assert "battery gauge answers again: 64 %" in log
        wait_and_check(rig)


def test_power_fail_mid_sale_then_mains_back_within_the_grace(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"battery": BATTERY, "power": {"grace": 30}}) as rig:
        rig.start()
        rig.hw.host_fault("delay", seconds=1.2)
        rig.sale("4200", PAN)
        rig.hw.wait_display("AUTHORIZING")
        rig.hw.power_fail()
        rig.hw.wait_display("APPROVED", timeout=10)  # the sale in flight completes
        rig.wait_receipts(1)
        rig.hw.wait_display("MAINS POWER LOST", timeout=10)
        refused(rig, "MAINS POWER LOST")
        doc = status(rig)
        mains = doc["power"]["mains"]
        assert mains["ok"] is False and 0 < mains["shutdown_in"] <= 30
        assert any(r.startswith("mains power lost: on battery; shutdown in") for r in
                   doc["reasons"])

        rig.hw.power_restore()
        wait_gone(rig, "MAINS POWER LOST")
        rig.wait_idle()
        rig.sale("1100", PAN)
        rig.hw.wait_display("APPROVED")
        assert rig.fw is not None and rig.fw.poll() is None  # the shutdown was cancelled
        assert charged(rig) == [4200, 1100]
        log = rig.log()
        assert "mains power lost: running on battery; no new sale" in log
        assert "shutdown cancelled, sales allowed again" in log
        wait_and_check(rig)


def test_grace_over_mid_sale_finishes_it_stops_cleanly_and_restart_recovers_nothing(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"battery": BATTERY, "power": {"grace": 0.5}}) as rig:
        rig.start()
        rig.hw.host_fault("delay", seconds=1.8)
        rig.sale("3100", PAN)
        rig.hw.wait_display("AUTHORIZING")
        rig.hw.power_fail()  # the grace runs out while the bank is still answering
        assert rig.wait_fw_exit(timeout=30) == 0
        log = rig.log()
        assert "mains power lost for 0.5 s: stopping posterm cleanly" in log
        assert "stopping: finishing the sale in progress first" in log
        assert "no shutdown_command is configured" in log and "posterm stopped" in log
        assert rig.hw.display()[:2] == ["MAINS POWER LOST".ljust(20), "POSTERM STOPPED".ljust(20)]
        receipts = rig.wait_receipts(1)
        assert "APPROVED" in receipts[0] and "31.00" in receipts[0]
        assert charged(rig) == [3100]

        # the journal is clean: one file, nothing unfinished, the result was on the screen
        wal = rig.journal_path.with_name(rig.journal_path.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        assert pending(rig.journal_path) == 0
        db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
        try:
            assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            row = db.execute("SELECT status, receipt_printed, result_shown FROM sales").fetchall()
        finally:
            db.close()
        assert row == [("APPROVED", 1, 1)]
        doc = status(rig)
        assert doc["running"] is False and doc["last_sale"]["outcome"] == "APPROVED"

        rig.hw.power_restore()
        start = len(rig.log())
        rig.start_fw()
        rows = rig.wait_idle()
        assert not any("LAST SALE" in row for row in rows), rows
        assert "recovery:" not in rig.log()[start:]
        rig.sale("700", PAN)
        rig.hw.wait_display("APPROVED")
        assert charged(rig) == [3100, 700]
        wait_and_check(rig)


def test_shutdown_command_runs_after_the_stop_and_a_failing_one_is_an_error(
        tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "powered off"
    with Rig(tmp_path, overrides={"power": {"grace": 0.3}}) as rig:
        rig.start_sim()
        rig.write_config(power={"shutdown_command": f"touch '{marker}'"})
        rig.start_fw()
        rig.hw.power_fail()
        assert rig.wait_fw_exit(timeout=20) == 0
        assert marker.exists()
        assert rig.hw.display()[:2] == ["MAINS POWER LOST".ljust(20), "SHUTTING DOWN".ljust(20)]
        assert f"running the shutdown command: touch {marker}" in rig.log()

        rig.write_config(power={"shutdown_command": "false"})
        rig.start_fw()  # still on battery: the grace starts again at once
        assert rig.wait_fw_exit(timeout=20) == 1
        last = rig.log().strip().splitlines()[-1]
        assert last.startswith("posterm: error: mains power lost and the shutdown command "
                               "failed (exit status 1)"), last
        assert pending(rig.journal_path) == 0
