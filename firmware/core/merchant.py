"""The merchant's operator functions: supervisor PIN, refund entry, void, X/Z reports and the
batch close. Pure, like the rest of the core; `sale.step` routes the phases here.

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

from firmware.core.effects import (
    Beep, CheckPin, CloseBatch, Effect, FindForVoid, Log, Print, PrintTotals, Void,
)
from firmware.core.events import (
    CloseDue, CloseFinished, CloseProgress, Event, KeyPressed, PinChecked, PrintFinished,
    VoidCandidate, VoidRecorded,
)
from firmware.core.receipt import void_receipt
from firmware.core.state import Now, Phase, State, Step, blocking, go, refresh, to_idle

# the menu's digit for each operator function
FUNCTIONS = {"5": "refund", "6": "void", "7": "x_report", "8": "close", "9": "z_report"}
# the name a function is protected (and its PIN checked) under: the last Z is a report
GUARD = {"refund": "refund", "void": "void", "close": "close", "x_report": "x_report",
         "z_report": "x_report"}
PIN_MIN, PIN_MAX = 4, 8
INVOICE_MAX = 6  # digits of field 62


def _menu(state: State, message: str = "") -> Step:
    """Back to the merchant's page of the menu, the function over."""
    return go(state, Phase.MENU, state.cfg.amount_timeout, message=message, menu_page=1,
              function="", pin="", candidate=None, digits="")


def open_function(state: State, key: str, now: Now) -> Step:
    """A digit 5..9 in the menu: ask the PIN first when the function is protected."""
    fn = FUNCTIONS[key]
    if fn == "refund" and blocking(state):
        st, eff = _menu(state, blocking(state))
        return st, [Log("warning", f"no refund: {blocking(state)}"), Beep(), *eff]
    if GUARD[fn] not in state.cfg.protect:
        return start(replace(state, function=fn), now)
    if not state.cfg.pin_set:
        st, eff = _menu(state, "NO PIN CONFIGURED")
        return st, [Log("warning", f"{fn} refused: it needs the supervisor PIN and none is "
                                   "configured ([operator] pin_hash)"), Beep(), *eff]
    return go(state, Phase.PIN, state.cfg.amount_timeout, function=fn, pin="", message="")


def start(state: State, now: Now) -> Step:
    """The function in `state.function`, its PIN checked (or not needed)."""
    fn = state.function
    if fn == "refund":
        if blocking(state):  # a condition may have come up while the PIN was checked
            return _menu(state, blocking(state))
        return go(state, Phase.AMOUNT, state.cfg.amount_timeout, digits="", message="",
                  notice="", pin="")
    if fn == "void":
        return go(state, Phase.VOID_PICK, state.cfg.amount_timeout, digits="", message="",
                  pin="")
    if fn == "close":
        return go(state, Phase.CLOSE_CONFIRM, state.cfg.amount_timeout, message="", pin="")
    kind = "X" if fn == "x_report" else "Z"
    st, eff = _menu(state, "PRINTING X REPORT" if kind == "X" else "PRINTING LAST Z")
    return st, [*eff, PrintTotals(kind)]


def close_due(state: State, event: CloseDue) -> Step:
    """The daily close time has come, or a close cut short is to be finished, and the
    terminal is idle: close, no PIN asked."""
    return _closing(state, origin="resumed" if event.resumed else "daily")


def _closing(state: State, *, origin: str) -> Step:
    st, eff = go(state, Phase.CLOSING, None, message="STARTING", function="close",
                 close_origin=origin, close=None, digits="", pin="")
    return st, [*eff, CloseBatch(scheduled=origin == "daily")]


# -- phases ----------------------------------------------------------------

def _in_pin(state: State, event: Event, now: Now) -> Step:
    if not isinstance(event, KeyPressed):
        return state, []
    key, timeout = event.key, state.cfg.amount_timeout
    if key == "CANCEL":
        return _menu(state)
    if key == "CLEAR":
        return go(state, Phase.PIN, timeout, pin=state.pin[:-1], message="")
    if key.isdigit():
        if len(state.pin) >= PIN_MAX:
            return go(state, Phase.PIN, timeout, message=f"AT MOST {PIN_MAX} DIGITS")
        return go(state, Phase.PIN, timeout, pin=state.pin + key, message="")
    if key == "OK":
        if len(state.pin) < PIN_MIN:
            return go(state, Phase.PIN, timeout, message=f"PIN IS {PIN_MIN}-{PIN_MAX} DIGITS")
        pin = state.pin
        st, eff = go(state, Phase.PIN_CHECK, None, pin="", message="")
        return st, [*eff, CheckPin(pin, GUARD[state.function])]
    return state, []


def _in_pin_check(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, PinChecked) and event.function == GUARD.get(state.function):
        if event.ok:
            return start(state, now)
        st, eff = _menu(state, event.message or "WRONG PIN")
        return st, [Beep(), *eff]
    if isinstance(event, KeyPressed) and event.key == "CANCEL":
        return _menu(state)  # a late answer finds the menu and is ignored there
    return state, []


def _in_void_pick(state: State, event: Event, now: Now) -> Step:
    if not isinstance(event, KeyPressed):
        return state, []
    key, timeout = event.key, state.cfg.amount_timeout
    if key == "CANCEL":
        return _menu(state)
    if key == "CLEAR":
        return go(state, Phase.VOID_PICK, timeout, digits=state.digits[:-1], message="")
    if key.isdigit():
        digits = (state.digits + key).lstrip("0")
        if len(digits) > INVOICE_MAX:
            return go(state, Phase.VOID_PICK, timeout, message=f"AT MOST {INVOICE_MAX} DIGITS")
        return go(state, Phase.VOID_PICK, timeout, digits=digits, message="")
    if key == "OK":
        invoice = int(state.digits) if state.digits else None
        st, eff = go(state, Phase.VOID_FIND, None, message="")
        return st, [*eff, FindForVoid(invoice)]
    return state, []


def _in_void_find(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, VoidCandidate):
        rec = event.record
        problem = event.problem or ("ALREADY VOIDED" if rec is not None and rec.voided
                                    else "NOT FOUND" if rec is None else "")
        if problem:  # another invoice number may be keyed at once
            st, eff = go(state, Phase.VOID_PICK, state.cfg.amount_timeout, digits="",
                         message=problem[:20])
            return st, [Beep(), *eff]
        return go(state, Phase.VOID_CONFIRM, state.cfg.amount_timeout, candidate=rec,
                  message="")
    if isinstance(event, KeyPressed) and event.key == "CANCEL":
        return _menu(state)
    return state, []


def _in_void_confirm(state: State, event: Event, now: Now) -> Step:
    rec = state.candidate
    if not isinstance(event, KeyPressed) or rec is None:
        return state, []
    if event.key == "OK":
        st, eff = go(state, Phase.VOIDING, None, message="")
        return st, [*eff, Void(rec.sale_id)]
    if event.key in ("CANCEL", "CLEAR"):
        return _menu(state, "NOT VOIDED")
    return state, []


def _in_voiding(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, VoidRecorded):
        rec = event.record
        st, eff = go(state, Phase.VOIDED, None, candidate=rec, message="")
        lines = tuple(void_receipt(state.cfg, rec, event.sent_to_host, voided_at=now.local))
        return st, [*eff, Print(lines, None, job="void")]
    if isinstance(event, VoidCandidate) and event.record is None:
        st, eff = _menu(state, (event.problem or "NOT VOIDED")[:20])
        return st, [Beep(), *eff]
    if isinstance(event, KeyPressed) and event.key == "CANCEL" and \
            state.message != "PLEASE WAIT":
        return refresh(state, "PLEASE WAIT")
    return state, []


def _in_voided(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, KeyPressed) and event.key in ("OK", "CANCEL", "CLEAR") and \
            state.message:  # the receipt has been printed (or failed)
        return to_idle(state)
    return state, []


def _in_close_confirm(state: State, event: Event, now: Now) -> Step:
    if not isinstance(event, KeyPressed):
        return state, []
    if event.key == "OK":
        return _closing(state, origin="")
    if event.key in ("CANCEL", "CLEAR"):
        return _menu(state, "BATCH NOT CLOSED")
    return state, []


def _in_closing(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, CloseProgress):
        return refresh(state, event.text[:20])
    if isinstance(event, CloseFinished):
        effects: list[Effect] = []
        if not event.ok or not event.balanced:
            effects.append(Beep())
        st, eff = go(state, Phase.CLOSED, state.cfg.result_timeout, close=event,
                     message="PRINTING REPORT" if event.ok else "")
        return st, [*effects, *eff]
    return state, []  # no cancel, no sale: the close runs to its end


def _in_closed(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, KeyPressed) and event.key in ("OK", "CANCEL", "CLEAR"):
        return closed_to_idle(state)
    return state, []


def closed_to_idle(state: State) -> Step:
    """Leave the close's result. What the idle screen keeps as a notice: a close that
    did not end in balance, and any close nobody asked for at the keypad (the daily
    close, or one the terminal finished after a restart), which may have run with
    nobody watching. A close that ended replaces the notice of an earlier close: a
    BATCH NOT CLOSED never outlives the close that succeeded after it."""
    done = state.close
    notice = state.notice if not is_close_notice(state.notice) else ""
    if done is not None and (not done.ok or not done.balanced):
        notice = close_notice(done)  # before any other notice: the batch needs attention
    elif done is not None and state.close_origin in ("daily", "resumed") and not notice:
        notice = close_notice(done)  # a restart's notice about the last sale goes first
    return to_idle(state, notice)


def close_notice(done: CloseFinished) -> str:
    """The two idle-screen lines that tell how a close ended."""
    if not done.ok:
        return f"BATCH NOT CLOSED\n{(done.message or 'TRY AGAIN LATER')[:20]}"
    return f"BATCH {done.batch} CLOSED\n" + ("IN BALANCE" if done.balanced else "OUT OF BALANCE")


def is_close_notice(notice: str) -> bool:
    return notice.startswith(("BATCH NOT CLOSED\n", "BATCH ")) and " CLOSED\n" in notice


def timer(state: State) -> Step | None:
    """The phase timer of an operator phase fired; None for the phases that have none."""
    if state.phase in (Phase.PIN, Phase.VOID_PICK, Phase.VOID_CONFIRM, Phase.CLOSE_CONFIRM):
        return to_idle(state)
    if state.phase == Phase.VOIDED:
        return to_idle(state)
    if state.phase == Phase.CLOSED:
        return closed_to_idle(state)
    return None


def side_print(state: State, event: PrintFinished) -> Step | None:
    """The end of a print of the merchant's functions; None when it is not one."""
    fault = event.message or "PRINTER FAULT"
    if event.job == "void" and state.phase == Phase.VOIDED and not state.message:
        st, eff = go(state, Phase.VOIDED, state.cfg.result_timeout,
                     message="VOID PRINTED" if event.ok else fault)
        if not event.ok:
            return st, [Log("error", f"void receipt not printed: {fault}"), Beep(), *eff]
        return st, eff
    if event.job in ("x-report", "z-report") and state.phase == Phase.MENU:
        name = "X REPORT" if event.job == "x-report" else "Z REPORT"
        return refresh(state, f"{name} PRINTED" if event.ok else fault)
    if event.job == "z-report" and state.phase == Phase.CLOSED:
        return refresh(state, "REPORT PRINTED" if event.ok else fault)
    return None


HANDLERS = {
    Phase.PIN: _in_pin,
    Phase.PIN_CHECK: _in_pin_check,
    Phase.VOID_PICK: _in_void_pick,
    Phase.VOID_FIND: _in_void_find,
    Phase.VOID_CONFIRM: _in_void_confirm,
    Phase.VOIDING: _in_voiding,
    Phase.VOIDED: _in_voided,
    Phase.CLOSE_CONFIRM: _in_close_confirm,
    Phase.CLOSING: _in_closing,
    Phase.CLOSED: _in_closed,
}
