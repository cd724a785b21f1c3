"""Standing conditions (device faults, battery, mains power) and the host path, in the core."""

from __future__ import annotations

from firmware.core.events import (
    BatteryRead, CardSwiped, ConditionChanged, KeyPressed, LinkChanged, PathChanged,
)
from firmware.core.effects import Authorize, Beep, Show
from firmware.core.machine import Phase, initial

from tests.test_core_sale import CARD, CFG, keys, run, shown


def screen(effects: list[object]) -> tuple[str, ...]:
    rows = [e.rows for e in effects if isinstance(e, Show)]
    assert rows, "nothing was shown"
    return tuple(rows[-1])


def test_blocking_condition_refuses_a_new_sale_and_says_why() -> None:
    st, _ = initial(CFG)
    st, eff = run(st, ConditionChanged("power", "MAINS POWER LOST", blocks_sales=True))
    assert screen(eff)[1:3] == ("MAINS POWER LOST", "NO NEW SALES")
    st, eff = run(st, KeyPressed("5"))
    assert st.phase == Phase.IDLE and any(isinstance(e, Beep) for e in eff)
    assert screen(eff)[1] == "MAINS POWER LOST"
    st, eff = run(st, KeyPressed("F1"))  # the menu stays open to the operator
    assert st.phase == Phase.MENU
    st, _ = run(st, KeyPressed("CANCEL"), ConditionChanged("power", ""))
    st, eff = run(st, *keys("1250", "OK"))
    assert st.phase == Phase.WAIT_CARD


def test_sale_in_flight_finishes_when_a_blocking_condition_arrives() -> None:
    st, _ = initial(CFG)
    st, _ = run(st, *keys("1250", "OK"))
    st, eff = run(st, ConditionChanged("battery", "BATTERY LOW", blocks_sales=True))
    assert st.phase == Phase.WAIT_CARD and not any(isinstance(e, Show) for e in eff)
    st, eff = run(st, CardSwiped(CARD))
    assert st.phase == Phase.AUTHORIZING and any(isinstance(e, Authorize) for e in eff)


def test_blocking_conditions_come_first_and_clear_by_source() -> None:
    st, _ = initial(CFG)
    st, eff = run(st, ConditionChanged("printer", "PAPER LOW"))
    assert screen(eff)[1] == "PAPER LOW" and screen(eff)[2] == "ENTER AMOUNT"
    st, eff = run(st, ConditionChanged("battery", "BATTERY LOW", blocks_sales=True))
    assert screen(eff)[1:3] == ("BATTERY LOW", "NO NEW SALES")
    st, eff = run(st, ConditionChanged("battery", ""))
    assert screen(eff)[1] == "PAPER LOW"
    st, eff = run(st, ConditionChanged("printer", ""))
    assert screen(eff)[1] == "" and st.conditions == ()
    st, eff = run(st, ConditionChanged("printer", ""))
    assert eff == []  # nothing changed, nothing redrawn


def test_card_reader_fault_shows_while_waiting_for_the_card() -> None:
    st, _ = initial(CFG)
    st, _ = run(st, *keys("1250", "OK"))
    st, eff = run(st, ConditionChanged("card_reader", "CARD READER FAULT"))
    assert screen(eff)[:3] == ("CARD READER FAULT", "SALE       EUR 12.50", "SWIPE CARD")
    st, eff = run(st, ConditionChanged("card_reader", ""))
    assert screen(eff)[0] == "POSTERM"


def test_battery_and_path_on_the_idle_screen() -> None:
    st, _ = initial(CFG)
    st, eff = run(st, BatteryRead(85))
    assert screen(eff)[3] == "F1 MENU" + " " * 6 + "BAT 85%"
    st, eff = run(st, BatteryRead(85, charging=True))
    assert screen(eff)[3].endswith("CHG 85%")
    st, eff = run(st, PathChanged("ETH"))
    assert screen(eff)[0] == "POSTERM" + " " * 10 + "ETH"
    st, eff = run(st, PathChanged("4G", bars=3, detail="4G REGISTERED CSQ 20"))
    assert screen(eff)[0] == "POSTERM" + " " * 7 + "4G|||."
    st, eff = run(st, LinkChanged("DEGRADED"))
    assert screen(eff)[0] == "POSTERM 4G BANK SLOW"  # the bars give way to the flag
    for ev in (PathChanged("4G", bars=3, detail="4G REGISTERED CSQ 20"), BatteryRead(85, True)):
        st, eff = run(st, ev)
        assert eff == []


def test_status_second_page_names_path_modem_battery_and_faults() -> None:
    st, _ = initial(CFG)
    st, _ = run(st, PathChanged("4G", bars=2, detail="4G ROAMING CSQ 12"), BatteryRead(40),
                ConditionChanged("printer", "PAPER OUT"), KeyPressed("F1"), KeyPressed("3"))
    st, eff = run(st, KeyPressed("3"))
    assert st.phase == Phase.STATUS
    assert shown(eff) == "PATH 4G MODEM | 4G ROAMING CSQ 12 | BATTERY 40% | PAPER OUT"
    st, eff = run(st, KeyPressed("3"))
    assert shown(eff).startswith("BANK ")
    st, _ = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.MENU
