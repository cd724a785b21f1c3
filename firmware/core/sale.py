"""The sale flow: amount, card, authorization, printing, result (refunds too).

Its phases and their rows in the transition table (`ROWS`); `machine.py` assembles the
table and holds `step(state, event, now)`, the one entry point.

Theory of operation
-------------------
The terminal is always in one Phase. A person moves it forward with keys and a
card; the runtime moves it with host and printer events; time moves it only
through `TimerFired` events carrying the token of the timer the core started
(a stale timer, from a phase already left, carries an old token and is ignored).

    IDLE --digit--> AMOUNT --OK--> WAIT_CARD --card--> AUTHORIZING
    AUTHORIZING --HostAnswered--> PRINTING --PrintFinished--> RESULT --timer/key--> IDLE
    AUTHORIZING --HostBusy--> BUSY_WAIT --timer--> AUTHORIZING   (within budget)
    AUTHORIZING --HostBusy, budget spent--> offline rules (DecideOffline)
    WAIT_CARD --card, link DOWN--> offline rules (DecideOffline)
    ... OfflineDecided --> PRINTING (approved offline) or RESULT (refused)
    AUTHORIZING --HostOutcomeUnknown--> RESULT ("NO RESPONSE - NOT CHARGED")
    WAIT_CARD --card, same card and amount as a recent approval--> DUPLICATE
    DUPLICATE --OK--> as the swipe would have gone;  --CANCEL/timer--> IDLE
    (IDLE, the menu and its status pages: menu.py; the operator functions: merchant.py)

Every sale that reached the card ends with something printed: the receipt, or a
slip that says the customer was not charged. Prints other than the sale's own
(a copy, the report, the slip of an offline sale the host refused) carry their
job name, so their PrintFinished never ends a sale's PRINTING phase. A refused
offline sale raises an alert on the idle screen until the operator clears it.
Only final screens are shown: a decision made inside the terminal (offline
rules) goes straight to its result, never through a screen that is about to
change again.

An unknown outcome never falls back to offline approval: the customer may have
been charged, so the sale is reversed, not approved again.

A refund (menu 5, after the supervisor PIN when protected) is a sale of kind
"refund": the same amount, card and authorization phases, the same handling of a
busy host and of an unknown outcome (a reversal: NO RESPONSE / NOT CREDITED), but
never approved offline: with the host unreachable it ends NOT COMPLETED / REFUND
NEEDS HOST, nothing credited.

The duplicate guard remembers the approved purchases (keyed hash of the card,
amount, local time; never the PAN) of the last `duplicate_minutes`, from the
journal at start (`initial(recent=...)`) and from each approval since; a void
takes its sale out. A purchase with the same card and amount asks POSSIBLE
DUPLICATE / OK TO PROCEED before anything is sent.

A person can cancel in AMOUNT, WAIT_CARD, DUPLICATE, BUSY_WAIT (nothing is
outstanding there) and MENU; never while a request is outstanding. The core
never shows an approval itself: it shows what a `HostAnswered` record says, and
the runtime sends that event only after the journal has recorded the answer.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core import chipdone, pinask
from firmware.core.card import CardData, luhn_ok
from firmware.core.dupguard import duplicate, remember
from firmware.core.effects import Authorize, Beep, CloseSale, DecideOffline, Effect, Log, Print
from firmware.core.emv.steps import HostReply
from firmware.core.events import (
    AttemptFailed, CardReadFailed, CardSwiped, Event, HostAnswered, HostBusy,
    HostOutcomeUnknown, HostUntrusted, KeyPressed, OfflineDecided, PrintFinished, SaleClosed,
    TimerFired,
)
from firmware.core.model import SaleRecord, SaleRequest, SaleStatus
from firmware.core.moves import Handler, go, key_digit, refresh, to_idle
from firmware.core.receipt import sale_receipt
from firmware.core.risk import Decision, chip_offline, offline_decision
from firmware.core.state import Now, Phase, Sale, SaleFlow, State, Step

AMOUNT_DIGITS = 12


def _flow(state: State) -> SaleFlow:
    flow = state.flow
    assert isinstance(flow, SaleFlow), f"{state.phase.value} without a sale flow"
    return flow


def _sale(state: State) -> Sale:
    sale = _flow(state).sale
    assert sale is not None, f"{state.phase.value} without a sale"
    return sale


def _with(state: State, **changes: object) -> SaleFlow:
    return replace(_flow(state), **changes)  # type: ignore[arg-type]


def begin(state: State, kind: str = "purchase", digits: str = "") -> Step:
    """A sale (or a refund) begins with its amount: the first digit, or none yet."""
    return go(state, Phase.AMOUNT, state.cfg.amount_timeout,
              flow=SaleFlow(kind=kind, digits=digits), notice="", message="")


def cancelled(state: State) -> str:
    flow = state.sale_flow
    return "REFUND CANCELLED" if flow is not None and flow.kind == "refund" else \
        "SALE CANCELLED"


def _timed_out(notice: str) -> Handler:
    def handler(state: State, event: Event, now: Now) -> Step:
        return to_idle(state, notice)
    return handler


# -- AMOUNT ----------------------------------------------------------------

def _amount_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    flow, key = _flow(state), event.key
    if key == "CANCEL":
        return to_idle(state, cancelled(state))
    if key == "CLEAR" and not flow.digits:
        return to_idle(state)
    if key.isdigit() or key == "CLEAR":
        keyed = key_digit(flow.digits, key, most=AMOUNT_DIGITS, strip_zeros=True)
        if keyed.refused or int(keyed.digits or "0") > state.cfg.max_amount:
            return refresh(state, "AMOUNT OVER LIMIT")
        return go(state, Phase.AMOUNT, state.cfg.amount_timeout,
                  flow=replace(flow, digits=keyed.digits), message="")
    if key == "OK":
        amount = int(flow.digits) if flow.digits else 0
        if amount <= 0:
            return refresh(state, "ENTER AN AMOUNT")
        st, eff = go(state, Phase.WAIT_CARD, state.cfg.card_timeout,
                     flow=replace(flow, sale=Sale(amount=amount, kind=flow.kind)), message="")
        # a card left in the chip reader (inserted before the amount) is read now
        return chipdone.start(st, now) if st.chip_in and st.cfg.chip else (st, eff)
    return state, [Log("debug", f"key {key} ignored in AMOUNT")]


def _amount_card(state: State, event: Event, now: Now) -> Step:
    return refresh(state, "PRESS OK FIRST")


# -- WAIT_CARD, DUPLICATE ----------------------------------------------------

def _wait_card_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key == "CANCEL":
        return ended(state, cancelled(state))
    return state, [Log("debug", f"key {event.key} ignored in WAIT_CARD")]


def _card_read_failed(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, CardReadFailed)  # the driver has logged it, once
    # the card timer runs on: a reader that keeps sending noise cannot hold the sale
    st, eff = refresh(state, event.reason)
    return st, [Beep(), *eff]


def _card_swiped(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, CardSwiped)
    card = event.card
    if not luhn_ok(card.pan):  # the card timer runs on, as for any bad read
        st, eff = refresh(state, "INVALID CARD")
        return st, [Log("warning", f"card {card.masked} fails the Luhn check"), Beep(), *eff]
    flow = _flow(state)
    if state.cfg.chip is not None and card.service_code[:1] in ("2", "6") \
            and not flow.fallback:
        # a chip card: its chip first (host-interface 8.1); a swipe only after it failed
        st, eff = refresh(state, "INSERT CARD")
        return st, [Log("info", f"card {card.masked} has a chip (service code "
                                f"{card.service_code}): asked to insert it"), Beep(), *eff]
    sale = replace(_sale(state), pan_hash=event.pan_hash)
    if duplicate(state, sale, now):
        request = SaleRequest(kind=sale.kind, amount=sale.amount, card=card, local=now.local,
                              entry=_read(state))
        st, eff = go(state, Phase.DUPLICATE, state.cfg.card_timeout,
                     flow=_with(state, sale=replace(sale, request=request)), message="")
        return st, [Log("warning", f"possible duplicate: card {card.masked}, same amount "
                                   "as a recent approval; asking the operator"), Beep(), *eff]
    return _send(replace(state, flow=_with(state, sale=sale)), card, now)


def _read(state: State) -> str:
    """How a swiped card was read: "80" after its chip failed, else "90"."""
    return "80" if _flow(state).fallback else "90"


def _send(state: State, card: CardData, now: Now, request: SaleRequest | None = None) -> Step:
    """The card is taken: authorize online, or apply the offline rules when the link is
    down. `request`: a chip sale's, built from the card's data (entry 05)."""
    sale = _sale(state)
    if request is None:
        request = SaleRequest(kind=sale.kind, amount=sale.amount, card=card, local=now.local,
                              entry=_read(state))
    sale = replace(sale, request=request, attempts=1, started=now.mono)
    if state.link == "DOWN":  # decided at once: no AUTHORIZING screen in between
        cause = "HOST NOT TRUSTED" if state.untrusted else "HOST OFFLINE"
        st = replace(state, phase=Phase.AUTHORIZING, token=state.token + 1, message="",
                     flow=_with(state, sale=sale, cause=cause))
        if request.chip is not None:
            return chipdone.unreachable(st, _chip_rules(st, request, now), cause)
        return st, [_offline(st, request, None, now)]
    if pinask.needs_online_pin(state, request):  # the PIN first, then the request
        return pinask.ask(replace(state, flow=_with(state, sale=sale)), request)
    st, eff = go(state, Phase.AUTHORIZING, None, flow=_with(state, sale=sale), message="")
    return st, [*eff, Authorize(request, None)]


def _duplicate_key(state: State, event: Event, now: Now) -> Step:
    """POSSIBLE DUPLICATE: OK goes on exactly as the swipe would have; CANCEL (or the
    timer) stops, and a chip's kernel waiting at its online step with it (chipdone)."""
    sale = _sale(state)
    if isinstance(event, TimerFired) or getattr(event, "key", "") in ("CANCEL", "CLEAR"):
        return chipdone.dropped(state, ended(state, "SALE CANCELLED"))
    assert isinstance(event, KeyPressed) and sale.request is not None
    if event.key == "OK":
        chip = sale.request if sale.request.chip is not None else None
        st, eff = _send(replace(state, flow=_with(state, sale=replace(sale, request=None))),
                        sale.request.card, now, chip)
        return st, [Log("info", f"possible duplicate confirmed by the operator: card "
                                f"{sale.request.card.masked}"), *eff]
    return state, [Log("debug", f"key {event.key} ignored in DUPLICATE")]


# -- AUTHORIZING, BUSY_WAIT -------------------------------------------------

def _answered(state: State, event: Event, now: Now) -> Step:
    """The journal has recorded how the sale ended: the host's answer, the offline rules'
    decision, or the sale closed."""
    assert isinstance(event, HostAnswered | OfflineDecided | SaleClosed)
    if chipdone.is_chip(state) and not isinstance(event, OfflineDecided):
        reply = HostReply("answered", event.record.response_code, bytes.fromhex(event.icc)) \
            if isinstance(event, HostAnswered) else HostReply("unknown")
        return chipdone.await_card(state, event.record, reply)
    return _finish(state, event.record)


def _outcome_unknown(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, HostOutcomeUnknown)
    if chipdone.is_chip(state):  # the card is asked for an AAC: never approved offline
        st, eff = chipdone.await_card(state, event.record, HostReply("unknown"))
    else:
        st, eff = _finish(state, event.record)
    return st, [Log("warning", f"sale {event.record.sale_id}: {event.reason}; reversal "
                               "recorded"), *eff]


def _untrusted(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, HostUntrusted)
    return _host_not_taking(state, replace(_sale(state), sale_id=event.sale_id),
                            "HOST NOT TRUSTED", now, Log(
                                "error", f"sale {event.sale_id}: {event.reason}; not retried: "
                                "a configuration error or an attack, not a busy host"))


def _host_not_taking(state: State, sale: Sale, cause: str, now: Now, why: Log) -> Step:
    """The host will not take the sale (not trusted, busy past its retries): the offline
    rules decide, and the screen gives `cause` with their answer."""
    st = replace(state, flow=_with(state, sale=sale, cause=cause))
    assert sale.request is not None
    if sale.request.chip is not None:
        st, eff = chipdone.unreachable(st, _chip_rules(st, sale.request, now), cause)
        return st, [why, *eff]
    return st, [why, _offline(st, sale.request, sale.sale_id, now)]


def _attempt_failed(state: State, event: Event, now: Now) -> Step:
    """Never reached the host: a FAILED record that is not the journal's (sale id 0)."""
    assert isinstance(event, AttemptFailed)
    req = _sale(state).request
    assert req is not None
    record = SaleRecord(sale_id=0, kind=req.kind, amount=req.amount,
                        pan_masked=req.card.masked, local=req.local,
                        status=SaleStatus.FAILED, reason=event.reason)
    if req.chip is not None:
        st, eff = chipdone.await_card(replace(state, flow=_with(state, cause="")), record,
                                      HostReply("unknown"))
        return replace(st, last=state.last), eff
    st, eff = _finish(replace(state, flow=_with(state, cause="")), record)
    return replace(st, last=state.last), eff


def _busy(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, HostBusy)
    cfg = state.cfg
    sale = replace(_sale(state), sale_id=event.sale_id)
    elapsed = now.mono - sale.started
    if sale.attempts <= cfg.busy_retries and elapsed < cfg.sale_budget:
        delay = min(cfg.busy_backoff * (2 ** (sale.attempts - 1)),
                    max(0.0, cfg.sale_budget - elapsed))
        st, eff = go(state, Phase.BUSY_WAIT, delay, jitter=True, flow=_with(state, sale=sale),
                     message="")
        return st, [Log("warning", f"sale {event.sale_id}: host busy ({event.reason}); "
                                   f"retry {sale.attempts} of {cfg.busy_retries}"), *eff]
    return _host_not_taking(state, sale, "HOST UNAVAILABLE", now, Log(
        "warning", f"sale {event.sale_id}: host busy ({event.reason}); no more retries"))


def _authorizing_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key == "CANCEL":  # never while a request is outstanding
        return refresh(state, "PLEASE WAIT")
    return state, [Log("debug", f"key {event.key} ignored in AUTHORIZING")]


def _busy_wait_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    sale = _sale(state)
    if event.key == "CANCEL" and sale.sale_id is not None:
        # the retry timer is void; the next screen is the result, not "cancelling"
        st = replace(state, token=state.token + 1)
        return st, [CloseSale(sale.sale_id, cancelled(state))]
    return state, [Log("debug", f"key {event.key} ignored in BUSY_WAIT")]


def _retry(state: State, event: Event, now: Now) -> Step:
    """The busy host's backoff is over: the same request again, under its sale id."""
    sale = _sale(state)
    request = sale.request
    assert request is not None
    sale = replace(sale, attempts=sale.attempts + 1)
    st, eff = go(state, Phase.AUTHORIZING, None, flow=_with(state, sale=sale))
    return st, [*eff, Authorize(request, sale.sale_id)]


def _offline(state: State, request: SaleRequest, sale_id: int | None, now: Now) -> Effect:
    """Apply the offline rules to a sale the host cannot take. A refund is never approved
    offline: it ends not completed, nothing credited."""
    if request.kind != "purchase":
        return DecideOffline(request, sale_id, False, "REFUND NEEDS HOST")
    if not state.cfg.offline.enabled:
        return DecideOffline(request, sale_id, False, "HOST UNAVAILABLE")
    decision = offline_decision(state.cfg.offline, state.queue, kind=request.kind,
                                amount=request.amount, card=request.card, now=now.local)
    return DecideOffline(request, sale_id, decision.approved, decision.reason)


def _chip_rules(state: State, request: SaleRequest, now: Now) -> Decision:
    return chip_offline(state.cfg.offline, state.queue, kind=request.kind,
                        amount=request.amount, now=now.local)


def ended(state: State, notice: str) -> Step:
    """A sale over without a result screen: idle, or first REMOVE CARD while a card is in
    the chip reader (a reminder beeps until it is taken)."""
    if state.chip_in:
        st, eff = go(state, Phase.REMOVE_CARD, REMIND_SECONDS, message=notice)
        return st, [*eff, Beep()]
    return to_idle(state, notice)


REMIND_SECONDS = 5.0  # REMOVE CARD beeps again after this long


def _finish(state: State, record: SaleRecord) -> Step:
    sale = _flow(state).sale
    state = remember(state, record, sale.pan_hash if sale else "")  # the duplicate guard
    st, eff = go(state, Phase.PRINTING, None, flow=_with(state, result=record), last=record,
                 message="")
    lines = tuple(sale_receipt(state.cfg, record))
    return st, [*eff, Print(lines, record.sale_id or None)]  # the runtime logs the outcome


# -- PRINTING, RESULT --------------------------------------------------------

def printed(state: State, event: Event, now: Now) -> Step:
    """The sale's own receipt has printed (or failed): its result stays a few seconds."""
    assert isinstance(event, PrintFinished)
    message = "" if event.ok else f"{event.message or 'PRINTER FAULT'}"
    st, eff = go(state, Phase.RESULT, state.cfg.result_timeout, message=message)
    if not event.ok:
        return st, [Log("error", f"receipt not printed: {event.message}"), Beep(), *eff]
    return st, eff


def _result_key(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, KeyPressed)
    if event.key in ("OK", "CANCEL", "CLEAR"):
        return ended(state, "")
    return state, [Log("debug", f"key {event.key} ignored in RESULT")]


def _result_over(state: State, event: Event, now: Now) -> Step:
    return ended(state, "")


ROWS = {
    (Phase.AMOUNT, KeyPressed): _amount_key,
    (Phase.AMOUNT, CardSwiped): _amount_card,
    (Phase.AMOUNT, TimerFired): _timed_out("TIMED OUT"),
    (Phase.WAIT_CARD, KeyPressed): _wait_card_key,
    (Phase.WAIT_CARD, CardReadFailed): _card_read_failed,
    (Phase.WAIT_CARD, CardSwiped): _card_swiped,
    (Phase.WAIT_CARD, TimerFired): _timed_out("NO CARD - CANCELLED"),
    (Phase.DUPLICATE, KeyPressed): _duplicate_key,
    (Phase.DUPLICATE, TimerFired): _duplicate_key,
    (Phase.AUTHORIZING, HostAnswered): _answered,
    (Phase.AUTHORIZING, OfflineDecided): _answered,
    (Phase.AUTHORIZING, SaleClosed): _answered,
    (Phase.AUTHORIZING, HostOutcomeUnknown): _outcome_unknown,
    (Phase.AUTHORIZING, HostUntrusted): _untrusted,
    (Phase.AUTHORIZING, AttemptFailed): _attempt_failed,
    (Phase.AUTHORIZING, HostBusy): _busy,
    (Phase.AUTHORIZING, KeyPressed): _authorizing_key,
    (Phase.BUSY_WAIT, KeyPressed): _busy_wait_key,
    (Phase.BUSY_WAIT, SaleClosed): _answered,
    (Phase.BUSY_WAIT, TimerFired): _retry,
    (Phase.PRINTING, PrintFinished): printed,
    (Phase.RESULT, KeyPressed): _result_key,
    (Phase.RESULT, TimerFired): _result_over,
}
