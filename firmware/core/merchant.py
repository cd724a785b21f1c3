"""The merchant's operator functions: supervisor PIN, refund entry, void, X/Z reports and the
batch close. Pure, like the rest of the core: its phases and their rows in the transition table
(`ROWS`, assembled in `machine.py`), and the jobs it prints (`PRINT_JOBS`).

Theory of operation
-------------------
The menu's second page (F1 in the menu) offers 5 REFUND, 6 VOID, 7 X REPORT, 8 CLOSE and
9 LAST Z (the digits work on either page). A function named in `CoreConfig.protect` asks
for the supervisor PIN first; 9 LAST Z counts as a report ("x_report"). A protected
function with no PIN configured (`CoreConfig.pin_set` False) is refused with NO PIN
CONFIGURED: a terminal never lets money move unguarded because a setting is missing.

    MENU --5..9, protected--> PIN --OK--> PIN_CHECK --PinChecked ok--> the function
    PIN_CHECK --PinChecked not ok--> MENU (its message: WRONG PIN - 2 LEFT, LOCKED ...)
    refund: AMOUNT ("REFUND") --> WAIT_CARD --> AUTHORIZING ... as a sale (sale.py)
    void:   VOID_PICK --OK--> VOID_FIND --VoidCandidate--> VOID_CONFIRM --OK--> VOIDING
            VOIDING --VoidRecorded--> VOIDED (VOID receipt) --timer/key--> IDLE
    close:  CLOSE_CONFIRM --OK--> CLOSING --CloseFinished--> CLOSED --timer/key--> IDLE
    IDLE --CloseDue--> CLOSING (the daily close, no PIN: nobody need be there)
    X report / last Z: PrintTotals, the menu says PRINTING, then PRINTED or the fault

The PIN is keyed as masked digits (4 to 8), held only until OK sends it in `CheckPin`
(whose repr hides it), and then forgotten; it never reaches a Show or a Log. A refused
PIN goes back to the menu with the runtime's message: trying again is choosing the
function again, and the runtime counts the wrong entries and locks.

Once asked, a lookup (PIN_CHECK, VOID_FIND) may be left with CANCEL: nothing has
changed yet. VOIDING takes no input: it ends only with the journal's answer
(VoidRecorded, or VoidCandidate with the problem). CLOSING cannot be cancelled and
takes no sale; it ends with CloseFinished. CloseDue in any phase but IDLE is ignored:
the runtime asks again later.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core import sale
from firmware.core.effects import (
    Beep, CheckPin, CloseBatch, Effect, FindForVoid, Log, Print, PrintTotals, Void,
)
from firmware.core.events import (
    CloseDue, CloseFinished, CloseProgress, Event, KeyPressed, PinChecked, PrintFinished,
    TimerFired, VoidCandidate, VoidRecorded,
)
from firmware.core.moves import (
    Handler, PrintHandler, blocking, go, ignored, key_digit, print_elsewhere, refresh, to_idle,
)
from firmware.core.receipt import void_receipt
from firmware.core.state import CloseFlow, MenuFlow, Now, Phase, PinFlow, State, Step, VoidFlow

# the menu's digit for each operator function
FUNCTIONS = {"5": "refund", "6": "void", "7": "x_report", "8": "close", "9": "z_report"}
# the name a function is protected (and its PIN checked) under: the last Z is a report
GUARD = {"refund": "refund", "void": "void", "close": "close", "x_report": "x_report",
         "z_report": "x_report"}
PIN_MIN, PIN_MAX = 4, 8
INVOICE_MAX = 6  # digits of field 62


def _menu(state: State, message: str = "") -> Step:
    """Back to the merchant's page of the menu, the function over."""
    return go(state, Phase.MENU, state.cfg.amount_timeout, message=message,
              flow=MenuFlow(page=1))


def open_function(state: State, key: str, now: Now) -> Step:
    """A digit 5..9 in the menu: ask the PIN first when the function is protected."""
    fn = FUNCTIONS[key]
    if fn == "refund" and blocking(state):
        st, eff = _menu(state, blocking(state))
        return st, [Log("warning", f"no refund: {blocking(state)}"), Beep(), *eff]
    if GUARD[fn] not in state.cfg.protect:
        return start(state, fn, now)
    if not state.cfg.pin_set:
        st, eff = _menu(state, "NO PIN CONFIGURED")
        return st, [Log("warning", f"{fn} refused: it needs the supervisor PIN and none is "
                                   "configured ([operator] pin_hash)"), Beep(), *eff]
    return go(state, Phase.PIN, state.cfg.amount_timeout, flow=PinFlow(fn), message="")


def start(state: State, fn: str, now: Now) -> Step:
    """An operator function, its PIN checked (or not needed)."""
    if fn == "refund":
        if blocking(state):  # a condition may have come up while the PIN was checked
            return _menu(state, blocking(state))
        return sale.begin(state, "refund")
    if fn == "void":
        return go(state, Phase.VOID_PICK, state.cfg.amount_timeout, flow=VoidFlow(),
                  message="")
    if fn == "close":
        return go(state, Phase.CLOSE_CONFIRM, state.cfg.amount_timeout, flow=CloseFlow(),
                  message="")
    kind = "X" if fn == "x_report" else "Z"
    st, eff = _menu(state, "PRINTING X REPORT" if kind == "X" else "PRINTING LAST Z")
    return st, [*eff, PrintTotals(kind)]


def close_due(state: State, event: Event, now: Now) -> Step:
    """The daily close time has come, or a close cut short is to be finished, and the
    terminal is idle: close, no PIN asked."""
    assert isinstance(event, CloseDue)
    return _closing(state, origin="resumed" if event.resumed else "daily")


def _closing(state: State, *, origin: str) -> Step:
    st, eff = go(state, Phase.CLOSING, None, message="STARTING", flow=CloseFlow(origin))
    return st, [*eff, CloseBatch(scheduled=origin == "daily")]


def _to_idle(state: State, event: Event, now: Now) -> Step:
    return to_idle(state)


def _to_menu(state: State, event: Event, now: Now) -> Step:
    """CANCEL while a lookup is asked: nothing has changed yet (a late answer finds the
    menu and is ignored there)."""
    assert isinstance(event, KeyPressed)
    if event.key == "CANCEL":
        return _menu(state)
    return ignored(state, event)  # never the key: it may be a digit of the PIN


# -- the supervisor PIN ------------------------------------------------------

def _pin_flow(state: State) -> PinFlow:
    assert isinstance(state.flow, PinFlow), f"{state.phase.value} without a PIN flow"
    return state.flow


def _pin_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    flow, key, timeout = _pin_flow(state), event.key, state.cfg.amount_timeout
    if key == "CANCEL":
        return _menu(state)
    if key.isdigit() or key == "CLEAR":
        keyed = key_digit(flow.pin, key, most=PIN_MAX)
        return go(state, Phase.PIN, timeout, flow=replace(flow, pin=keyed.digits),
                  message=keyed.refused)
    if key == "OK":
        if len(flow.pin) < PIN_MIN:
            return go(state, Phase.PIN, timeout, message=f"PIN IS {PIN_MIN}-{PIN_MAX} DIGITS")
        st, eff = go(state, Phase.PIN_CHECK, None, flow=replace(flow, pin=""), message="")
        return st, [*eff, CheckPin(flow.pin, GUARD[flow.function])]
    return ignored(state, event)


def _pin_checked(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, PinChecked)
    fn = _pin_flow(state).function
    if event.function != GUARD[fn]:
        return state, [Log("debug", f"PIN answer for {event.function} ignored: {fn} asked")]
    if event.ok:
        return start(state, fn, now)
    st, eff = _menu(state, event.message or "WRONG PIN")
    return st, [Beep(), *eff]


# -- void ------------------------------------------------------------------

def _void_flow(state: State) -> VoidFlow:
    assert isinstance(state.flow, VoidFlow), f"{state.phase.value} without a void flow"
    return state.flow


def _void_pick_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    flow, key, timeout = _void_flow(state), event.key, state.cfg.amount_timeout
    if key == "CANCEL":
        return _menu(state)
    if key.isdigit() or key == "CLEAR":
        keyed = key_digit(flow.digits, key, most=INVOICE_MAX, strip_zeros=True)
        return go(state, Phase.VOID_PICK, timeout, flow=replace(flow, digits=keyed.digits),
                  message=keyed.refused)
    if key == "OK":
        invoice = int(flow.digits) if flow.digits else None
        st, eff = go(state, Phase.VOID_FIND, None, message="")
        return st, [*eff, FindForVoid(invoice)]
    return state, [Log("debug", f"key {key} ignored in VOID_PICK")]


def _void_candidate(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, VoidCandidate)
    rec = event.record
    problem = event.problem or ("ALREADY VOIDED" if rec is not None and rec.voided
                                else "NOT FOUND" if rec is None else "")
    if problem:  # another invoice number may be keyed at once
        st, eff = go(state, Phase.VOID_PICK, state.cfg.amount_timeout,
                     flow=replace(_void_flow(state), digits=""), message=problem[:20])
        return st, [Beep(), *eff]
    return go(state, Phase.VOID_CONFIRM, state.cfg.amount_timeout,
              flow=replace(_void_flow(state), candidate=rec), message="")


def _void_confirm_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    rec = _void_flow(state).candidate
    assert rec is not None
    if event.key == "OK":
        st, eff = go(state, Phase.VOIDING, None, message="")
        return st, [*eff, Void(rec.sale_id)]
    if event.key in ("CANCEL", "CLEAR"):
        return _menu(state, "NOT VOIDED")
    return state, [Log("debug", f"key {event.key} ignored in VOID_CONFIRM")]


def _void_recorded(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, VoidRecorded)
    rec = event.record
    st, eff = go(state, Phase.VOIDED, None, flow=replace(_void_flow(state), candidate=rec),
                 message="")
    lines = tuple(void_receipt(state.cfg, rec, event.sent_to_host, voided_at=now.local))
    return st, [*eff, Print(lines, None, job="void")]


def _void_refused(state: State, event: Event, now: Now) -> Step:
    """The journal would not void it after all (VoidCandidate with the problem)."""
    assert isinstance(event, VoidCandidate)
    if event.record is not None:
        return state, [Log("debug", "void candidate ignored in VOIDING")]
    st, eff = _menu(state, (event.problem or "NOT VOIDED")[:20])
    return st, [Beep(), *eff]


def _voiding_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key == "CANCEL" and state.message != "PLEASE WAIT":
        return refresh(state, "PLEASE WAIT")  # VOIDING ends only with the journal's answer
    return state, [Log("debug", f"key {event.key} ignored in VOIDING")]


def _voided_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key in ("OK", "CANCEL", "CLEAR") and state.message:  # receipt printed (or not)
        return to_idle(state)
    return state, [Log("debug", f"key {event.key} ignored in VOIDED")]


def _void_printed(state: State, event: PrintFinished) -> Step:
    if state.phase != Phase.VOIDED or state.message:
        return print_elsewhere(state, event)
    fault = event.message or "PRINTER FAULT"
    st, eff = go(state, Phase.VOIDED, state.cfg.result_timeout,
                 message="VOID PRINTED" if event.ok else fault)
    if not event.ok:
        return st, [Log("error", f"void receipt not printed: {fault}"), Beep(), *eff]
    return st, eff


# -- batch close -------------------------------------------------------------

def _close_flow(state: State) -> CloseFlow:
    assert isinstance(state.flow, CloseFlow), f"{state.phase.value} without a close flow"
    return state.flow


def _close_confirm_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key == "OK":
        return _closing(state, origin="")
    if event.key in ("CANCEL", "CLEAR"):
        return _menu(state, "BATCH NOT CLOSED")
    return state, [Log("debug", f"key {event.key} ignored in CLOSE_CONFIRM")]


def _close_progress(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, CloseProgress)
    return refresh(state, event.text[:20])


def _close_finished(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, CloseFinished)
    effects: list[Effect] = [] if event.ok and event.balanced else [Beep()]
    st, eff = go(state, Phase.CLOSED, state.cfg.result_timeout,
                 flow=replace(_close_flow(state), done=event),
                 message="PRINTING REPORT" if event.ok else "")
    return st, [*effects, *eff]


def _closed_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key in ("OK", "CANCEL", "CLEAR"):
        return closed_to_idle(state)
    return state, [Log("debug", f"key {event.key} ignored in CLOSED")]


def _closed_timer(state: State, event: Event, now: Now) -> Step:
    return closed_to_idle(state)


def closed_to_idle(state: State) -> Step:
    """Leave the close's result. What the idle screen keeps as a notice: a close that
    did not end in balance, and any close nobody asked for at the keypad (the daily
    close, or one the terminal finished after a restart), which may have run with
    nobody watching. A close that ended replaces the notice of an earlier close: a
    BATCH NOT CLOSED never outlives the close that succeeded after it."""
    flow = _close_flow(state)
    done = flow.done
    notice = state.notice if not is_close_notice(state.notice) else ""
    if done is not None and (not done.ok or not done.balanced):
        notice = close_notice(done)  # before any other notice: the batch needs attention
    elif done is not None and flow.origin in ("daily", "resumed") and not notice:
        notice = close_notice(done)  # a restart's notice about the last sale goes first
    return to_idle(state, notice)


def close_notice(done: CloseFinished) -> str:
    """The two idle-screen lines that tell how a close ended."""
    if not done.ok:
        return f"BATCH NOT CLOSED\n{(done.message or 'TRY AGAIN LATER')[:20]}"
    return f"BATCH {done.batch} CLOSED\n" + ("IN BALANCE" if done.balanced else "OUT OF BALANCE")


def is_close_notice(notice: str) -> bool:
    return notice.startswith(("BATCH NOT CLOSED\n", "BATCH ")) and " CLOSED\n" in notice


def _report_printed(state: State, event: PrintFinished) -> Step:
    """An X or Z report has printed: said in the menu, or on the close's result."""
    fault = event.message or "PRINTER FAULT"
    if state.phase == Phase.MENU:
        name = "X REPORT" if event.job == "x-report" else "Z REPORT"
        return refresh(state, f"{name} PRINTED" if event.ok else fault)
    if event.job == "z-report" and state.phase == Phase.CLOSED:
        return refresh(state, "REPORT PRINTED" if event.ok else fault)
    return print_elsewhere(state, event)


ROWS: dict[tuple[Phase, type[Event]], Handler] = {
    (Phase.PIN, KeyPressed): _pin_key,
    (Phase.PIN, TimerFired): _to_idle,
    (Phase.PIN_CHECK, PinChecked): _pin_checked,
    (Phase.PIN_CHECK, KeyPressed): _to_menu,
    (Phase.VOID_PICK, KeyPressed): _void_pick_key,
    (Phase.VOID_PICK, TimerFired): _to_idle,
    (Phase.VOID_FIND, VoidCandidate): _void_candidate,
    (Phase.VOID_FIND, KeyPressed): _to_menu,
    (Phase.VOID_CONFIRM, KeyPressed): _void_confirm_key,
    (Phase.VOID_CONFIRM, TimerFired): _to_idle,
    (Phase.VOIDING, VoidRecorded): _void_recorded,
    (Phase.VOIDING, VoidCandidate): _void_refused,
    (Phase.VOIDING, KeyPressed): _voiding_key,
    (Phase.VOIDED, KeyPressed): _voided_key,
    (Phase.VOIDED, TimerFired): _to_idle,
    (Phase.CLOSE_CONFIRM, KeyPressed): _close_confirm_key,
    (Phase.CLOSE_CONFIRM, TimerFired): _to_idle,
    (Phase.CLOSING, CloseProgress): _close_progress,
    (Phase.CLOSING, CloseFinished): _close_finished,
    (Phase.CLOSED, KeyPressed): _closed_key,
    (Phase.CLOSED, TimerFired): _closed_timer,
}

# the merchant's prints: what the end of each does, by job
PRINT_JOBS: dict[str, PrintHandler] = {
    "void": _void_printed, "x-report": _report_printed, "z-report": _report_printed,
}
