"""Offline mode end to end: floor-limit approvals, store-and-forward, reconnect.

The host is taken down through hwsim; the firmware notices on its first failed
sale (down_after = 1 here), approves what its rules allow, keeps the advices
sealed, and forwards them exactly once, in order, when the host is back.
"""

from __future__ import annotations

import pathlib
import random
import signal
import time
from typing import Any

import pytest

from tests.invariants import wait_and_check
from tests.rig import Rig

PAN = "4761739001010010"
OFFLINE = {"offline": {"floor_limit": 5000, "total_limit": 10000, "max_count": 3,
                       "down_after": 1, "blocked_bins": ["541333"]},
           "timeouts": {"busy_retries": 0}}


@pytest.fixture
def rig(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    r = Rig(tmp_path, overrides=OFFLINE)
    try:
        yield r.start()
    finally:
        r.stop()


def offline_sale(rig: Rig, digits: str, pan: str = PAN, **swipe: Any) -> list[str]:
    rig.hw.press("CANCEL")  # leave any result screen
    rig.sale(digits, pan, **swipe)
    return _result(rig)


def _result(rig: Rig) -> list[str]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = [r.rstrip() for r in rig.hw.display()]
        if rows[0].startswith(("APPROVED", "NOT COMPLETED", "DECLINED", "NO RESPONSE")):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no result: {rig.hw.display()}")


def go_offline(rig: Rig) -> None:
    rig.hw.host_down()
    rows = offline_sale(rig, "2000")  # the first sale finds the host gone
    assert rows[0] == "APPROVED OFFLINE" and rows[2].startswith("AUTH Y3"), rows
    rig.wait_led(False)


def test_limits_card_rules_then_upload_exactly_once_in_order(rig: Rig) -> None:
    rig.wait_led(True)
    go_offline(rig)
    rig.hw.press("CANCEL")
    rig.hw.wait_display("OFFLINE")  # the idle screen's indicator
    refusals = {
        ("6000", PAN): "OVER FLOOR LIMIT",
        ("1000", "4111111111111111"): "CHIP CARD",
        ("1000", "4005550000000019"): "CARD NEEDS ONLINE",
        ("1000", "6011000990139424"): "PIN REQUIRED",
        ("1000", "5413330089010012"): "CARD NOT ACCEPTED",
    }
    for (digits, pan), reason in refusals.items():
        rows = offline_sale(rig, digits, pan)
        # the bank is why it could not go online; the rule is why not offline
        assert [r.rstrip() for r in rows[:3]] == ["NOT COMPLETED", "HOST OFFLINE", reason], \
            (reason, rows)
        rows = rig.hw.wait_display("NOT CHARGED")  # once the slip is out
        assert rows[2].rstrip() == reason and rows[3].startswith("NOT CHARGED"), (reason, rows)
    offline_sale(rig, "1000", PAN, expiry="2001")
    assert "CARD EXPIRED" in rig.hw.wait_display("CARD EXPIRED")[2]
    assert offline_sale(rig, "1000")[0] == "APPROVED OFFLINE"
    assert offline_sale(rig, "4000")[0] == "APPROVED OFFLINE"  # 7000 in all, 3 sales
    # the rule under the cause
    offline_sale(rig, "3500")
    assert rig.hw.wait_display("OFFLINE TOTAL FULL")[2].startswith("OFFLINE TOTAL FULL")
    offline_sale(rig, "100")  # 10500 > 10000 above; now 3 unsent already
    assert rig.hw.wait_display("OFFLINE COUNT FULL")[2].startswith("OFFLINE COUNT FULL")
    deadline = time.monotonic() + 5
    while len(slips := [r for r in rig.hw.receipts() if "NOT COMPLETED" in r]) < 8:
        assert time.monotonic() < deadline, slips
        time.sleep(0.05)
    assert all("CUSTOMER NOT CHARGED" in r for r in slips)
    receipts = [r for r in rig.hw.receipts() if "APPROVED OFFLINE" in r]
    assert len(receipts) == 3 and all("OFFLINE" in r and "Y3" in r for r in receipts)
    assert rig.hw.ledger() == []

    rig.hw.host_up()
    rig.hw.press("CANCEL")
    rig.wait_online()
    wait_and_check(rig)
    ledger = rig.hw.ledger()
    assert [e["amount"] for e in ledger] == [2000, 1000, 4000]  # in order
    assert all(e["charged"] and e["offline_approval"].startswith("Y3") for e in ledger)
    advices = [m for m in rig.hw.messages() if m["mti"] in ("0220", "0221")]
    assert len(advices) == 3
    rig.wait_led(True)


def test_host_refusing_an_advice_is_reported_not_retried(rig: Rig) -> None:
    go_offline(rig)
    rig.hw.host_default("0220", "05")
    rig.hw.host_up()
    rig.hw.press("CANCEL")
    rig.wait_online()
    wait_and_check(rig)  # the refused sale is unpaid, and the terminal says so
    rows = rig.hw.wait_display("OFFLINE SALE REFUSED")  # on the idle screen, unasked
    assert rows[2].startswith("SALE #1 UNPAID"), rows
    slip = rig.wait_receipts(2)[-1]
    assert "OFFLINE SALE REFUSED" in slip and "IT IS NOT PAID" in slip
    assert "476173******0010" in slip and PAN not in slip
    rig.hw.press("F1")
    rig.hw.press("3")
    rows = rig.hw.wait_display("REFUSED 1 UNPAID")
    assert "UNSENT SALES 0" in rows[1]
    rig.hw.press("OK")
    rig.hw.press("4")
    rig.hw.wait_display("REPORT PRINTED")
    report = rig.wait_receipts(3)[-1]
    assert "OFFLINE REPORT" in report and "REFUSED BY HOST" in report and "CODE 05" in report
    assert "476173******0010" in report and PAN not in report
    time.sleep(1.5)  # several backoff periods: a refused advice is never sent again
    assert [m["mti"] for m in rig.hw.messages()].count("0220") == 1
    assert [m["mti"] for m in rig.hw.messages()].count("0221") == 0


def test_no_full_pan_in_storage_or_logs_while_queued(rig: Rig) -> None:
    go_offline(rig)
    offline_sale(rig, "3000", PAN)
    rig.kill_fw()
    for path in rig.state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PAN.encode() not in data, path
            assert b"=3012" not in data and b"^CARDHOLDER" not in data, path
    assert PAN not in rig.log()
    assert (rig.state_dir / "card.key").stat().st_mode & 0o077 == 0


def test_wrong_key_refuses_to_start_and_the_queue_survives(rig: Rig) -> None:
    go_offline(rig)
    rig.kill_fw()
    key = rig.state_dir / "card.key"
    good = key.read_bytes()
    key.write_bytes(bytes(32))
    rig.start_fw(wait=False)
    assert rig.wait_fw_exit() == 4
    assert "does not match the journal" in rig.log() and "Traceback" not in rig.log()
    key.unlink()
    rig.start_fw(wait=False)
    assert rig.wait_fw_exit() == 4
    assert "is missing but the journal holds encrypted card data" in rig.log()
    key.write_bytes(good)
    key.chmod(0o600)
    rig.hw.host_up()
    rig.start_fw(wait=False)
    rig.wait_ready()
    wait_and_check(rig)
    assert [e["amount"] for e in rig.hw.ledger() if e["charged"]] == [2000]


def test_crash_during_upload_still_exactly_once(tmp_path: pathlib.Path) -> None:
    rng = random.Random(4)
    with Rig(tmp_path, overrides={**OFFLINE, "offline": {**OFFLINE["offline"],
                                                         "max_count": 50,
                                                         "total_limit": 1000000}}) as rig:
        rig.start()
        go_offline(rig)
        for n in range(7):
            assert offline_sale(rig, str(1000 + 10 * n))[0] == "APPROVED OFFLINE"
        rig.hw.press("CANCEL")
        rig.kill_fw()
        rig.hw.host_up()
        points = ["after_advice_identity", "after_advice_sent", None, None]
        for _ in range(8):
            point = rng.choice(points)
            rig.hw.host_fault("delay", count=3, mti="0220", seconds=round(rng.uniform(0, .2), 3))
            rig.start_fw(failpoint=f"{point}:{rng.randint(1, 2)}" if point else None, wait=False)
            if point is None:
                time.sleep(rng.uniform(0.3, 1.2))
                if rig.fw is not None and rig.fw.poll() is None:
                    rig.kill_fw(signal.SIGKILL)
            else:
                try:
                    rig.wait_fw_exit(timeout=10)
                except Exception:
                    rig.kill_fw()
            rig.hw.host_clear()
        rig.start_fw(wait=False)
        wait_and_check(rig, timeout=40)
        charged = [e for e in rig.hw.ledger() if e["charged"]]
        assert [e["amount"] for e in charged] == [2000] + [1000 + 10 * n for n in range(7)]


def test_black_holed_host_means_offline_then_upload(rig: Rig) -> None:
    rig.hw.host_fault("blackhole", count=0)  # accepts connections, never answers
    rig.restart_fw()  # the sign-on at start gets no answer: OFFLINE before any sale
    rig.hw.wait_display("OFFLINE", timeout=10)
    rows = offline_sale(rig, "2500")
    assert rows[0] == "APPROVED OFFLINE", rows
    rig.hw.host_clear()
    rig.hw.press("CANCEL")
    rig.wait_online()
    wait_and_check(rig)
    assert [(e["amount"], e["charged"]) for e in rig.hw.ledger()] == [(2500, True)]


def test_idle_link_sends_echo_tests(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"host": {"echo_interval": 10.0}}) as rig:  # the minimum
        rig.start()
        rig.sale("100", PAN)
        rig.hw.wait_display("APPROVED")
        sale_done = time.monotonic()
        echoes = [m for m in rig.hw.messages() if m["mti"] == "0800"]
        deadline = sale_done + 15
        while len([m for m in rig.hw.messages() if m["mti"] == "0800"]) == len(echoes):
            assert time.monotonic() < deadline, "no echo test after 10 s of idle"
            time.sleep(0.1)
        assert time.monotonic() - sale_done >= 9.0  # not before the interval
        assert "-> DOWN" not in rig.log()


def test_live_sale_does_not_wait_behind_the_upload(rig: Rig) -> None:
    go_offline(rig)
    for digits in ("1100", "1200"):
        assert offline_sale(rig, digits)[0] == "APPROVED OFFLINE"
    rig.hw.host_fault("delay", count=0, mti="0220", seconds=1.5)  # a slow advice upload
    rig.hw.host_up()
    rig.hw.press("CANCEL")
    rig.wait_online()
    deadline = time.monotonic() + 10
    while not any(m["mti"] == "0220" for m in rig.hw.messages()):
        assert time.monotonic() < deadline, "the upload did not start"
        time.sleep(0.02)
    rig.sale("9100", PAN)  # online: over the floor limit
    rig.hw.wait_display("APPROVED", timeout=5)
    advice = next(m for m in rig.hw.messages() if m["mti"] == "0220")
    assert advice["code"] is None, advice  # approved while the advice's answer was pending
    rig.hw.host_clear()
    wait_and_check(rig)
    charged = [e["amount"] for e in rig.hw.ledger() if e["charged"]]
    assert sorted(charged) == [1100, 1200, 2000, 9100]
