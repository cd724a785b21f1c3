"""The 4G modem as the second path to the host, end to end through hwsim.

hwsim's primary path is a proxy that can be cut (`primary down`); its modem model
bridges its socket to the same simulated host, so the money lands in one ledger
whichever path carried it. Every test that moves money ends with the invariant
checker.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.invariants import wait_and_check
from tests.rig import Rig, _env

PAN = "4761739001010010"
MODEM = {"modem": {"poll_interval": 1.0, "failback_after": 2.0, "boot_timeout": 10.0,
                   "command_timeout": 1.0}}


def start(tmp_path: pathlib.Path, **extra: dict[str, Any]) -> Rig:
    overrides = {k: dict(v) for k, v in MODEM.items()}
    for table, keys in extra.items():
        overrides.setdefault(table, {}).update(keys)
    rig = Rig(tmp_path, overrides=overrides)
    rig.start()
    return rig


def wait_log(rig: Rig, text: str, timeout: float = 20.0, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while rig.log().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{rig.log()[-3000:]}"
        time.sleep(0.05)


def status(rig: Rig) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "firmware", "--config", str(rig.config_path),
                          "status", "--json"], capture_output=True, text=True, timeout=20,
                         env=_env())
    return dict(json.loads(out.stdout))


def result(rig: Rig, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r.rstrip() for r in rig.hw.display()]
        if rows[0].startswith(("APPROVED", "NOT COMPLETED", "DECLINED", "NO RESPONSE")):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no result: {rig.hw.display()}")


def sale(rig: Rig, digits: str, pan: str = PAN) -> list[str]:
    rig.hw.press("CANCEL")
    rig.sale(digits, pan)
    return result(rig)


def wait_path(rig: Rig, path: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = status(rig)
        if doc.get("link", {}).get("path") == path:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)


def test_primary_cut_mid_sale_reverses_then_sells_over_4g(tmp_path: pathlib.Path) -> None:
    rig = start(tmp_path)
    try:
        wait_log(rig, "4G modem ready")
        rig.wait_idle()
        assert rig.hw.display()[0].rstrip().endswith("ETH")
        assert sale(rig, "1000")[0] == "APPROVED"  # over the primary path
        rig.hw.host_fault("delay", mti="0200", seconds=3.0)
        rig.hw.press("CANCEL")
        rig.sale("2500")
        rig.hw.wait_display("AUTHORIZING")
        time.sleep(0.5)  # the 0200 is with the host
        rig.hw.primary_down("refuse")  # the connection is reset under the sale
        rows = result(rig)
        assert [rows[0], rows[2]] == ["NO RESPONSE", "NOT CHARGED"], rows
        # the reversal goes out over the modem; the next sale too
        rows = sale(rig, "3000")
        assert rows[0] == "APPROVED", rows
        rig.wait_idle()
        assert "4G" in rig.hw.display()[0], rig.hw.display()
        wait_and_check(rig)
        ledger = rig.hw.ledger()
        by_amount = {e["amount"]: e for e in ledger}
        assert by_amount[1000]["charged"] and by_amount[3000]["charged"]
        assert 2500 not in by_amount or not by_amount[2500]["charged"]
        assert rig.hw.modem_state()["bytes_sent"] > 0
        doc = status(rig)
        assert doc["link"]["path"] == "4G" and doc["modem"]["ready"] is True
    finally:
        rig.stop()


def test_advices_upload_over_4g_exactly_once_in_order(tmp_path: pathlib.Path) -> None:
    offline = {"floor_limit": 5000, "total_limit": 20000, "max_count": 5, "down_after": 1}
    rig = start(tmp_path, offline=offline, timeouts={"busy_retries": 0})
    try:
        wait_log(rig, "4G modem ready")
        rig.hw.host_down()  # the bank is away on both paths
        amounts = [1100, 1200, 1300, 1400]
        for amount in amounts:
            assert sale(rig, str(amount))[0] == "APPROVED OFFLINE"
        assert rig.hw.ledger() == []
        # each advice takes a while: the primary is cut in the middle of the upload
        rig.hw.host_fault("delay", mti="0220", count=0, seconds=0.4)
        rig.hw.host_up()
        deadline = time.monotonic() + 20
        while not [m for m in rig.hw.messages() if m["mti"] in ("0220", "0221")]:
            assert time.monotonic() < deadline, "no advice reached the host"
            time.sleep(0.02)
        rig.hw.primary_down("refuse")
        rig.hw.press("CANCEL")
        wait_and_check(rig, timeout=40)
        ledger = rig.hw.ledger()
        assert [e["amount"] for e in ledger] == amounts  # in order, each once
        assert all(e["charged"] for e in ledger)
        assert rig.hw.modem_state()["bytes_sent"] > 0
    finally:
        rig.stop()


def test_failback_to_the_primary_when_it_stays_healthy(tmp_path: pathlib.Path) -> None:
    rig = start(tmp_path)
    try:
        wait_log(rig, "4G modem ready")
        rig.hw.primary_down("refuse")
        assert sale(rig, "1500")[0] == "APPROVED"  # straight over the modem
        wait_path(rig, "4G")
        sent = rig.hw.modem_state()["bytes_sent"]
        assert sent > 0
        rig.hw.primary_up()
        wait_log(rig, "failing back")
        wait_path(rig, "ETH")
        rig.wait_idle()
        assert rig.hw.display()[0].rstrip().endswith("ETH")
        assert sale(rig, "1600")[0] == "APPROVED"
        assert rig.hw.modem_state()["bytes_sent"] == sent  # not over the modem
        wait_and_check(rig)
    finally:
        rig.stop()


def test_modem_that_stops_answering_is_power_cycled(tmp_path: pathlib.Path) -> None:
    rig = start(tmp_path)
    try:
        wait_log(rig, "4G modem ready")
        before = rig.hw.modem_state()
        rig.hw.modem(hang=True)
        wait_log(rig, "4G modem recovered", timeout=30)
        after = rig.hw.modem_state()
        assert after["power_cycles"] > before["power_cycles"] or \
            after["resets"] > before["resets"], after
        rig.hw.primary_down("refuse")
        assert sale(rig, "1700")[0] == "APPROVED"
        wait_path(rig, "4G")
        wait_and_check(rig)
    finally:
        rig.stop()


@pytest.mark.parametrize("setting,words,screen", [
    ({"sim_present": False}, "NO SIM", "4G NO SIM"),
    ({"registration": 3}, "REGISTRATION DENIED", "4G REG DENIED"),
])
def test_modem_fault_is_named_and_the_primary_still_sells(tmp_path: pathlib.Path,
                                                          setting: dict[str, Any],
                                                          words: str, screen: str) -> None:
    rig = Rig(tmp_path, overrides={k: dict(v) for k, v in MODEM.items()})
    try:
        rig.start_sim()
        rig.hw.modem(**setting)
        rig.start_fw()
        rig.hw.wait_display(screen, timeout=20)  # on the idle screen
        assert words in rig.log()
        assert sale(rig, "1800")[0] == "APPROVED"
        doc = status(rig)
        assert doc["link"]["path"] == "ETH" and doc["modem"]["ready"] is False
        assert doc["modem"]["summary"] == screen and words in doc["modem"]["last_error"]
        text = subprocess.run([sys.executable, "-m", "firmware", "--config",
                               str(rig.config_path), "status"], capture_output=True, text=True,
                              timeout=20, env=_env()).stdout
        assert f"4G modem:       NOT READY: {screen}" in text, text
        assert "via ETH" in text, text
        wait_and_check(rig)
    finally:
        rig.stop()


def test_blackholed_primary_is_found_dead_and_the_next_sale_goes_over_4g(
        tmp_path: pathlib.Path) -> None:
    rig = start(tmp_path)
    try:
        wait_log(rig, "4G modem ready")
        assert sale(rig, "1000")[0] == "APPROVED"
        rig.hw.primary_down("blackhole")  # the connection stays up; nothing flows
        rows = sale(rig, "2000")
        assert [rows[0], rows[2]] == ["NO RESPONSE", "NOT CHARGED"], rows
        wait_log(rig, "the connection is dead")
        wait_path(rig, "4G")  # it failed over at once, without waiting for a sale
        rows = sale(rig, "3000")
        assert rows[0] == "APPROVED", rows
        rig.hw.primary_up()  # what the blackhole held now reaches the host: still safe
        wait_and_check(rig, timeout=30)
        by_amount = {e["amount"]: e for e in rig.hw.ledger()}
        assert by_amount[1000]["charged"] and by_amount[3000]["charged"]
        assert 2000 not in by_amount or not by_amount[2000]["charged"]
    finally:
        rig.stop()
