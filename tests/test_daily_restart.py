"""The daily restart: announced on the idle screen, never during a sale or in the menu,
back READY in the same process with nothing lost, once a day."""

from __future__ import annotations

import pathlib
import sqlite3
import time
from datetime import date, datetime, timedelta

from firmware.config import parse_window
from firmware.runtime.maintenance import notice_text, window_day
from tests.invariants import wait_and_check
from tests.rig import Rig

PAN = "4761739001010010"


def test_window_day() -> None:
    day = datetime(2026, 11, 23, 3, 30)
    assert window_day(day, (180, 300)) == date(2026, 11, 23)
    assert window_day(day.replace(hour=5), (180, 300)) is None
    late = (23 * 60 + 30, 30)  # runs past midnight
    assert window_day(datetime(2026, 11, 23, 23, 45), late) == date(2026, 11, 23)
    assert window_day(datetime(2026, 11, 24, 0, 10), late) == date(2026, 11, 23)
    assert window_day(datetime(2026, 11, 24, 0, 40), late) is None
    assert notice_text(60) == "DAILY RESTART\nIN 60 SECONDS"
    assert notice_text(300) == "DAILY RESTART\nIN 5 MIN"


def _window_around_now() -> str:
    now = datetime.now()
    start, end = now - timedelta(minutes=2), now + timedelta(minutes=5)
    return f"{start:%H:%M}-{end:%H:%M}"


def _restarts(rig: Rig) -> int:
    return rig.log().count("posterm restarting (daily restart)")


def _last_day(rig: Rig) -> str:
    db = sqlite3.connect(f"file:{rig.journal_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='note:last_daily_restart'"
                         ).fetchone()
    finally:
        db.close()
    return row[0] if row else ""


def test_restarts_once_when_idle_and_comes_back(tmp_path: pathlib.Path) -> None:
    overrides: dict[str, dict[str, object]] = {
        "maintenance": {"restart_window": _window_around_now(), "restart_notice": 2}}
    with Rig(tmp_path, overrides=overrides) as rig:  # type: ignore[arg-type]
        rig.start()
        assert rig.fw is not None
        pid = rig.fw.pid
        rig.hw.wait_display("DAILY RESTART", timeout=10)
        rig.wait_ready()  # the second "posterm ready": the same process, started afresh
        assert rig.fw.pid == pid and rig.fw.poll() is None
        window = parse_window(overrides["maintenance"]["restart_window"])
        assert window is not None
        day = window_day(datetime.now(), window)  # a window past midnight: the day it began
        assert _restarts(rig) == 1 and day is not None and _last_day(rig) == day.isoformat()
        rig.wait_idle()
        rig.sale("2500", PAN)
        rig.hw.wait_display("APPROVED")
        time.sleep(3)  # well past another notice: once a day only
        assert _restarts(rig) == 1
        wait_and_check(rig)


def test_never_during_a_sale(tmp_path: pathlib.Path) -> None:
    overrides = {"maintenance": {"restart_window": _window_around_now(), "restart_notice": 2}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start()
        rig.hw.wait_display("DAILY RESTART", timeout=10)
        rig.hw.host_fault("delay", seconds=1.8)
        rig.sale("2600", PAN)  # starts within the notice; the answer takes 1.8 s
        rig.hw.wait_display("AUTHORIZING")
        time.sleep(1.5)
        assert _restarts(rig) == 0  # put off: a sale is in progress
        rig.hw.wait_display("APPROVED", timeout=10)
        assert _restarts(rig) == 0
        rig.wait_ready()  # once the result screen has gone back to idle
        assert _restarts(rig) == 1
        wait_and_check(rig)
        assert [e["amount"] for e in rig.hw.ledger() if e["charged"]] == [2600]


def test_never_while_the_operator_is_in_the_menu(tmp_path: pathlib.Path) -> None:
    overrides = {"maintenance": {"restart_window": _window_around_now(), "restart_notice": 2}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start()
        rig.hw.wait_display("DAILY RESTART", timeout=10)
        rig.hw.press("F1")
        rig.hw.wait_display("1 LAST")
        time.sleep(3.0)
        assert _restarts(rig) == 0
        rig.hw.press("CANCEL")
        rig.wait_ready()
        assert _restarts(rig) == 1
