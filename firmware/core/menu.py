"""The terminal at rest: the idle screen, the menu and its status pages.

    IDLE --digit--> AMOUNT (sale.py);  IDLE --F1--> MENU;  IDLE --CloseDue--> CLOSING
    MENU 1 last sale, 2 reprint, 3 STATUS (3 again: the devices page), 4 report,
         F1 the merchant's page, 5..9 the operator functions (merchant.py)

The idle screen keeps a notice (a restart's, a close's), an alert (a refused offline
sale) and the planned maintenance banner; CANCEL clears the notice, then the alert.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core import merchant, sale, screens
from firmware.core.effects import Beep, Log, Print, PrintReport
from firmware.core.events import CardSwiped, CloseDue, Event, KeyPressed, PrintFinished, TimerFired
from firmware.core.moves import (
    Handler, PrintHandler, blocking, go, print_elsewhere, refresh, to_idle,
)
from firmware.core.receipt import sale_receipt
from firmware.core.state import MenuFlow, Now, Phase, State, Step
from firmware.core.texts import RESTART_NOTICES


def _idle_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    key = event.key
    if key.isdigit() and key != "0":
        if blocking(state):
            return state, [Log("warning", f"no new sale: {blocking(state)}"), Beep(),
                           screens.show(state)]
        return sale.begin(state, "purchase", digits=key)
    if key == "F1":
        return go(state, Phase.MENU, state.cfg.amount_timeout, flow=MenuFlow(), message="",
                  notice="")
    if key in ("CANCEL", "CLEAR") and state.notice:
        return to_idle(state)  # a notice goes first; an alert behind it shows next
    if key in ("CANCEL", "CLEAR") and state.alert:
        return to_idle(replace(state, alert=""))
    return state, [Log("debug", f"key {key} ignored in IDLE")]


def _idle_card(state: State, event: Event, now: Now) -> Step:
    if state.notice.startswith(RESTART_NOTICES):  # never over a recovery notice
        return state, [Log("debug", "card swiped in IDLE: a restart notice is shown")]
    st = replace(state, notice="ENTER AMOUNT FIRST")
    return st, [screens.show(st)]


def _menu_flow(state: State) -> MenuFlow:
    assert isinstance(state.flow, MenuFlow), f"{state.phase.value} without a menu flow"
    return state.flow


def _menu_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    key, timeout, menu = event.key, state.cfg.amount_timeout, _menu_flow(state)
    if key in ("CANCEL", "CLEAR"):
        return to_idle(state)
    if key == "F1":  # the other page
        return go(state, Phase.MENU, timeout, message="", flow=replace(menu, page=1 - menu.page))
    if key in merchant.FUNCTIONS:
        return merchant.open_function(state, key, now)
    if key == "1":
        return go(state, Phase.MENU, timeout, message=screens.last_sale_line(state.last))
    if key == "2":
        if state.last is None:
            return refresh(state, "NO SALE TO REPRINT")
        lines = tuple(sale_receipt(state.cfg, state.last, copy=True))
        st, eff = go(state, Phase.MENU, timeout, message="PRINTING COPY")
        return st, [*eff, Print(lines, state.last.sale_id, job="copy")]
    if key == "3":
        return go(state, Phase.STATUS, timeout, message="",
                  flow=replace(menu, status_page=0, seen=now.local))
    if key == "4":
        st, eff = go(state, Phase.MENU, timeout, message="PRINTING REPORT")
        return st, [*eff, PrintReport()]
    return state, [Log("debug", f"key {key} ignored in MENU")]


def _status_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    menu = _menu_flow(state)
    if event.key == "3":  # 3 again: the devices page
        return go(state, Phase.STATUS, state.cfg.amount_timeout,
                  flow=replace(menu, status_page=(menu.status_page + 1) % 2))
    return go(state, Phase.MENU, state.cfg.amount_timeout, message="")


def _timed_out(state: State, event: Event, now: Now) -> Step:
    return to_idle(state)


def _menu_printed(state: State, event: PrintFinished) -> Step:
    """A copy or the report asked from the menu: the menu says how it went."""
    if state.phase != Phase.MENU:
        return print_elsewhere(state, event)
    done = {"copy": "COPY PRINTED", "report": "REPORT PRINTED"}[event.job]
    return refresh(state, done if event.ok else event.message or "PRINTER FAULT")


def _recovery_copy_printed(state: State, event: PrintFinished) -> Step:
    """The copy a restart prints of the last sale: its notice says how that went."""
    if not state.notice.endswith("\nPRINTING COPY"):
        return print_elsewhere(state, event)
    head = state.notice.rsplit("\n", 1)[0]
    st = replace(state, notice=f"{head}\n{'COPY PRINTED' if event.ok else 'REPRINT FROM MENU'}")
    return st, [screens.show(st)] if st.phase == Phase.IDLE else []


ROWS: dict[tuple[Phase, type[Event]], Handler] = {
    (Phase.IDLE, KeyPressed): _idle_key,
    (Phase.IDLE, CardSwiped): _idle_card,
    # only in IDLE: in any other phase it waits for later (the runtime asks again)
    (Phase.IDLE, CloseDue): merchant.close_due,
    (Phase.MENU, KeyPressed): _menu_key,
    (Phase.MENU, TimerFired): _timed_out,
    (Phase.STATUS, KeyPressed): _status_key,
    (Phase.STATUS, TimerFired): _timed_out,
}

PRINT_JOBS: dict[str, PrintHandler] = {
    "copy": _menu_printed, "report": _menu_printed, "recovery-last": _recovery_copy_printed,
}
