"""Peripheral faults end to end: the card reader unplugged and plugged back, and a display
whose I2C transfers fail, with hwsim and posterm as real processes.

The card reader is hwsim's pseudo-terminal behind the stable path DIR/card-reader, which
the firmware's configuration names; `reader unplug` closes the pseudo-terminal (the port
the firmware holds hangs up) and removes the path, as pulling a USB reader does. The
display's faults make every I2C transfer to 0x27 fail as an unanswered address does
(EREMOTEIO); with power_loss the module also forgets its text and mode, so only a full
initialisation brings it back.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest

from hwsim.client import HwsimError
from tests.invariants import wait_and_check
from tests.rig import ROOT, Rig, _env

PAN = "4761739001010010"
BLANK = [" " * 20] * 4
FAULT = "CARD READER FAULT"


def ctl(rig: Rig, *args: str) -> str:
    """`hwsim ctl` as a person types it."""
    out = subprocess.run([sys.executable, "-m", "hwsim", "ctl", "--dir", str(rig.sim_dir),
                          *args], capture_output=True, text=True, timeout=30, env=_env())
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def status(rig: Rig) -> tuple[int, dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "firmware", "--config", str(rig.config_path),
                          "status", "--json"], capture_output=True, text=True, timeout=30,
                         env=_env(), cwd=ROOT)
    return out.returncode, json.loads(out.stdout)


def wait_phase(rig: Rig, phase: str, timeout: float = 10.0) -> None:
    """Wait for the terminal's phase, as `posterm status` tells it (the display is no help
    while it fails)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = status(rig)[1].get("phase")
        if seen == phase:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"terminal phase is {seen!r}, not {phase!r}")
        time.sleep(0.1)


def wait_gone(rig: Rig, text: str, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = rig.hw.display()
        if not any(text in r for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"display still shows {text!r}: {rows}")
        time.sleep(0.05)


def log_lines(rig: Rig, text: str) -> list[str]:
    return [line for line in rig.log().splitlines() if text in line]


def receipts_with(rig: Rig, text: str, count: int = 1) -> list[str]:
    deadline = time.monotonic() + 15
    while True:
        found = [r for r in rig.hw.receipts() if text in r]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no receipt with {text!r}: {rig.hw.receipts()}")
        time.sleep(0.1)


# -- the card reader ------------------------------------------------------------------


def test_reader_unplugged_and_plugged_back(rig: Rig) -> None:
    link = str(rig.sim_dir / "card-reader")
    assert rig.info["card_reader"] == link  # the firmware opens the stable path
    rig.wait_idle()
    assert "card reader unplugged" in ctl(rig, "reader", "unplug")
    assert not pathlib.Path(link).exists()
    rows = rig.hw.wait_display(FAULT, timeout=10)
    assert rows[1] == FAULT.ljust(20) and "ENTER AMOUNT" in rows[2], rows
    # nothing to swipe on, but a sale can be keyed: the card screen says why no card reads
    rig.key_amount("1250")
    rows = rig.hw.wait_display(FAULT)
    assert rows[2] == "SWIPE CARD".ljust(20) and rows[0] == FAULT.ljust(20), rows
    with pytest.raises(HwsimError, match="unplugged"):
        rig.hw.swipe(PAN)
    time.sleep(3.0)  # the firmware keeps trying to reopen it, quietly
    lost = log_lines(rig, f"card reader: lost {link}:")
    assert len(lost) == 1, rig.log()
    assert "hung up" in lost[0] or "Input/output error (EIO)" in lost[0], lost
    assert "reopening it" in lost[0]

    state = rig.hw.reader_plug()
    assert state["plugged"] and state["path"] == link
    assert pathlib.Path(link).resolve() == pathlib.Path(state["pty"])
    rows = wait_gone(rig, FAULT)  # within the reopen backoff's cap (8 s)
    assert rows[2] == "SWIPE CARD".ljust(20) and rows[0].startswith("POSTERM"), rows
    assert len(log_lines(rig, f"card reader: {link} works again")) == 1
    # a bad read keeps its own message after the outage, then the card goes through
    rig.hw.swipe(bad="partial")
    rig.hw.wait_display("INCOMPLETE SWIPE")
    rig.hw.swipe(PAN)
    rig.hw.wait_display("APPROVED", timeout=10)
    receipt = receipts_with(rig, "12.50")[-1]
    assert "APPROVED" in receipt and PAN not in receipt
    wait_and_check(rig)
    charged = [e for e in rig.hw.ledger() if e["charged"]]
    assert len(charged) == 1 and charged[0]["amount"] == 1250
    assert len(log_lines(rig, f"card reader: lost {link}:")) == 1  # still one line
    assert "Traceback" not in rig.log()
    assert PAN not in rig.log()


def test_reader_missing_at_start_starts_in_the_fault_state(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.hw.reader_unplug()  # unplugged while the terminal was off
        rig.start_fw()  # still starts: READY, the idle screen says what is wrong
        rows = rig.hw.wait_display(FAULT, timeout=10)
        assert rows[0].startswith("POSTERM") and "ENTER AMOUNT" in rows[2], rows
        link = rig.info["card_reader"]
        opened = log_lines(rig, f"card reader: cannot open {link}:")
        assert len(opened) == 1, rig.log()
        assert "No such file or directory (ENOENT); starting without it" in opened[0]
        code, doc = status(rig)
        assert doc["running"] and doc["phase"] == "IDLE"
        ctl(rig, "reader", "plug")
        wait_gone(rig, FAULT)
        rig.sale("990", PAN)
        rig.hw.wait_display("APPROVED", timeout=10)
        wait_and_check(rig)
        assert [e["amount"] for e in rig.hw.ledger() if e["charged"]] == [990]
        assert len(log_lines(rig, f"card reader: cannot open {link}:")) == 1


# -- the display ----------------------------------------------------------------------


def test_sale_goes_on_while_the_display_fails_and_it_is_redrawn(rig: Rig) -> None:
    rig.wait_idle()
    time.sleep(0.5)  # the link settles: the idle screen is drawn for good
    assert "display fault set" in ctl(rig, "display-fault", "--power-loss")
    assert rig.hw.display() == BLANK  # the module lost power: nothing on the glass

    # a whole sale, typed and swiped blind: keys, card and the host's answer go on
    rig.hw.press("1250")
    rig.hw.press("OK")
    wait_phase(rig, "WAIT_CARD")
    rig.hw.swipe(PAN)
    receipt = receipts_with(rig, "12.50")[-1]
    assert "APPROVED" in receipt, receipt
    wait_and_check(rig)
    charged = [e for e in rig.hw.ledger() if e["charged"]]
    assert len(charged) == 1 and charged[0]["amount"] == 1250
    wait_phase(rig, "IDLE")
    assert rig.hw.display() == BLANK  # nothing was written while it failed

    code, doc = status(rig)
    assert code == 1 and "Errno 121" in doc["display_fault"], doc
    assert "display fault" in doc["status"]
    refused = rig.hw.display_fault_state()["refused"]
    assert refused >= 1
    failed = log_lines(rig, "display: I2C write to 0x27 failed")
    assert len(failed) == 1, rig.log()  # logged once, not per write or retry
    assert "retries it" in failed[0]

    assert "display answers again" in ctl(rig, "display-clear")
    rows = rig.hw.wait_display("ENTER AMOUNT", timeout=12)  # within the retry cap (8 s)
    assert rows[0].startswith("POSTERM") and rows[2] == "ENTER AMOUNT".ljust(20), rows
    assert rows[3].startswith("F1 MENU"), rows
    assert len(log_lines(rig, "display works again")) == 1
    code, doc = status(rig)
    assert doc["display_fault"] == "", doc

    # a short glitch (a few refused transfers) in the middle of the next sale: the
    # display comes back by itself, with the screen the sale is at now
    rig.hw.display_fault(count=3)
    rig.hw.press("2000")
    rig.hw.press("OK")
    rows = rig.hw.wait_display("SWIPE CARD", timeout=12)
    assert rows[1].strip() == "SALE       EUR 20.00" and rows[3].startswith("CANCEL=STOP"), rows
    rig.hw.swipe(PAN)
    rig.hw.wait_display("APPROVED", timeout=10)
    wait_and_check(rig)
    assert sorted(e["amount"] for e in rig.hw.ledger() if e["charged"]) == [1250, 2000]
    assert len(log_lines(rig, "display works again")) == 2
    assert "Traceback" not in rig.log()


# -- the simulator's side alone ---------------------------------------------------------


def test_hwsim_reader_and_display_fault_controls(tmp_path: pathlib.Path) -> None:
    import errno

    import serial

    from drivers.remote import RemoteSMBus

    with Rig(tmp_path) as rig:
        rig.start_sim()
        hw, link = rig.hw, rig.info["card_reader"]
        assert "plugged in at" in ctl(rig, "reader", "state")
        port = serial.Serial(link, 9600, timeout=1)
        try:
            hw.reader_unplug()
            with pytest.raises(serial.SerialException):  # the open port hangs up
                port.read(1)
        finally:
            port.close()
        with pytest.raises(HwsimError, match="already unplugged"):
            hw.reader_unplug()
        with pytest.raises(HwsimError, match="swipe: the card reader is unplugged"):
            hw.swipe(PAN)
        assert hw.reader_state() == {"plugged": False, "path": link, "pty": ""}
        first = hw.reader_plug()["pty"]
        with pytest.raises(HwsimError, match="already plugged in"):
            hw.reader_plug()
        with serial.Serial(link, 9600, timeout=3) as port:
            hw.swipe(PAN)
            assert port.read_until(b"\r").endswith(b"?\r")
        assert pathlib.Path(link).resolve() == pathlib.Path(first)

        bus = RemoteSMBus(rig.info["control_socket"])
        try:
            bus.write_byte(0x27, 0x08)
            hw.display_fault(count=2)
            for _ in range(2):
                with pytest.raises(OSError) as info:
                    bus.write_byte(0x27, 0x08)
                assert info.value.errno == errno.EREMOTEIO
                assert "no ACK from 0x27" in str(info.value)
            bus.write_byte(0x27, 0x08)  # answers again by itself
            hw.display_fault()
            with pytest.raises(OSError):
                bus.read_i2c_block_data(0x27, 0, 1)
            assert hw.display_fault_state() == {"active": True, "refused": 1}
            assert hw.display_clear() == 1
            bus.write_byte(0x27, 0x08)
        finally:
            bus.close()
        with pytest.raises(HwsimError, match="count must be 0 or more"):
            hw.display_fault(count=-1)
        with pytest.raises(HwsimError, match="unknown colour"):
            hw.request("display_fault", colour="red")
    assert not pathlib.Path(link).exists()  # hwsim stopped: the reader's path is gone
