"""The cardholder's PIN in a sale: the PIN_ENTRY phase (hardware.md "PIN entry").

The digits never come here. While the PIN pad takes a PIN it gets the keys itself
(the runtime routes them to it) and tells the core only how many digits there are
(PinKeyed, for the stars) and how the entry ended (PinTaken). Two ways in:

    WAIT_CARD --swipe whose service code requires a PIN--> PIN_ENTRY (TakePin: pinask.py)
    PIN_ENTRY --PinTaken entered--> the sale's request goes out with the PIN (AUTHORIZING)
    CHIP_READING --PinAsked (the card's CVM)--> PIN_ENTRY --PinTaken--> CHIP_READING

For the chip the kernel decides what follows (another try, the next CVM, the end);
the screen only says what happened: INCORRECT PIN, PIN BLOCKED, PIN OK.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.chipsale import first_word
from firmware.core.effects import Beep, Log
from firmware.core.events import ChipFinished, Event, KeyPressed, PinAsked, PinKeyed, PinTaken
from firmware.core.moves import go, refresh
from firmware.core.sale import _send, ended
from firmware.core.state import Now, Phase, SaleFlow, State, Step

# what the screen says after the card's answer to a PIN (CHIP_READING's message)
AFTER = {"verified": "PIN OK", "wrong": "INCORRECT PIN", "blocked": "PIN BLOCKED",
         "bypassed": "PIN BYPASSED", "timeout": "PIN TIMED OUT", "failed": "PIN NOT CHECKED",
         "no_pinpad": "PIN PAD FAULT"}
# why a swipe's sale ends without its PIN
ENDED = {"cancelled": "PIN CANCELLED", "timeout": "PIN TIMED OUT",
         "no_pinpad": "PIN PAD FAULT", "failed": "PIN PAD FAULT", "bypassed": "PIN REQUIRED"}


def _flow(state: State) -> SaleFlow:
    flow = state.flow
    assert isinstance(flow, SaleFlow), f"{state.phase.value} without a sale flow"
    return flow


def _asked(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, PinAsked)
    # a new try after a wrong PIN keeps saying so under the stars
    said = state.message if state.message == AFTER["wrong"] else ""
    st, eff = go(state, Phase.PIN_ENTRY, None, message=said, flow=replace(
        _flow(state), pin_for="chip", pin_count=0, pin_tries=event.tries_left))
    tries = "" if event.tries_left is None else f", tries left {event.tries_left}"
    return st, [*eff, Log("info", f"PIN asked by the card ({event.kind}{tries})")]


def _keyed(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, PinKeyed)
    st = replace(state, flow=replace(_flow(state), pin_count=max(0, min(12, event.count))))
    return refresh(st, event.message)


def _taken(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, PinTaken)
    flow, status = _flow(state), event.result.status
    flow = replace(flow, pin_count=0)
    if flow.pin_for == "chip":  # the kernel decides what follows
        st, eff = go(state, Phase.CHIP_READING, None, message=AFTER.get(status, ""),
                     flow=replace(flow, pin_online=flow.pin_online or status == "entered"))
        return st, [Log("info", f"PIN entry: {status}"), *eff]
    sale = flow.sale
    assert sale is not None and sale.request is not None
    if status == "entered":
        st = replace(state, flow=flow)
        return _send(st, sale.request.card, now, replace(sale.request, pin=True))
    st, eff = ended(replace(state, flow=flow), ENDED.get(status, "PIN CANCELLED"))
    return st, [Log("info", f"PIN entry: {status}; nothing sent"), Beep(), *eff]


def _key(state: State, event: Event, now: Now) -> Step:
    """A key that reached the core during PIN entry (it should not: the PIN pad takes the
    keys). Never logged by its value."""
    return state, [Log("debug", "KeyPressed ignored in PIN_ENTRY (the PIN pad takes keys)")]


def _card_done(state: State, event: Event, now: Now) -> Step:
    """The kernel ended while the PIN was being keyed (the card was pulled out)."""
    return first_word(state, event, now)


ROWS = {
    (Phase.CHIP_READING, PinAsked): _asked,
    (Phase.PIN_ENTRY, PinKeyed): _keyed,
    (Phase.PIN_ENTRY, PinTaken): _taken,
    (Phase.PIN_ENTRY, KeyPressed): _key,
    (Phase.PIN_ENTRY, ChipFinished): _card_done,
}
