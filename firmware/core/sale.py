"""The transaction state machine: one pure function, `step(state, event, now)`.

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
    IDLE --F1--> MENU (1 last sale, 2 reprint, 3 link and queue status, 4 report;
                       F1: the merchant's page, 5 refund .. 9 last Z: merchant.py)
    IDLE --CloseDue--> CLOSING (the daily batch close: merchant.py)

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

from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta

from firmware.core import merchant, screens
from firmware.core.card import CardData, luhn_ok
from firmware.core.effects import (
    Authorize, Beep, CloseSale, DecideOffline, Effect, Log, Print, PrintReport,
)
from firmware.core.events import (
    AdviceRefused, AttemptFailed, CardReadFailed, CardSwiped, CloseDue, DeviceFault, Event,
    HostAnswered, BatteryRead, ConditionChanged, HostBusy, HostOutcomeUnknown, HostUntrusted,
    KeyPressed, LinkChanged, MaintenanceNotice, OfflineDecided, PathChanged, PrintFinished,
    QueueChanged, SaleClosed, TimerFired, VoidRecorded,
)
from firmware.core.risk import offline_decision
from firmware.core.model import CoreConfig, SaleRecord, SaleRequest, SaleStatus
from firmware.core.texts import RESTART_NOTICES
from firmware.core.receipt import refused_slip, sale_receipt
from firmware.core.state import (
    Now, Phase, Recent, Sale, State, Step, blocking, go, refresh, to_idle,
)


def initial(cfg: CoreConfig, *, last: SaleRecord | None = None, notice: str = "",
            recent: Iterable[SaleRecord] = ()) -> Step:
    """The state at start. `recent`: the journal's approved purchases of the last
    `cfg.duplicate_minutes` (journal.recent_approvals), for the duplicate guard."""
    state = State(cfg=cfg, last=last, notice=notice)
    for rec in recent:
        state = _remember(state, rec)
    return state, [screens.show(state)]


def step(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, TimerFired):
        if event.token != state.token:
            return state, []
        return _timer(state, now)
    if isinstance(event, LinkChanged):
        st = replace(state, link=event.state, untrusted=event.untrusted)
        return st, [screens.show(st)] if st.phase in _PASSIVE else []
    if isinstance(event, AdviceRefused):
        rec = event.record
        st = replace(state, alert=f"OFFLINE SALE REFUSED\nSALE #{rec.sale_id} UNPAID")
        effects: list[Effect] = [Print(tuple(refused_slip(state.cfg, rec)), rec.sale_id,
                                       job="refused"), Beep()]
        return st, [screens.show(st), *effects] if st.phase in _PASSIVE else effects
    if isinstance(event, MaintenanceNotice):
        st = replace(state, banner=event.text)
        return st, [screens.show(st)] if st.phase == Phase.IDLE else []
    if isinstance(event, PrintFinished) and event.job != "sale":
        return _side_print(state, event)
    if isinstance(event, VoidRecorded):  # the voided sale leaves the duplicate guard
        rec = event.record
        last = rec if state.last is not None and state.last.sale_id == rec.sale_id else \
            state.last
        state = replace(state, last=last,
                        recent=tuple(r for r in state.recent if r.sale_id != rec.sale_id))
    if isinstance(event, QueueChanged):
        st = replace(state, queue=event.stats)
        return st, [screens.show(st)] if st.phase in _PASSIVE else []
    if isinstance(event, DeviceFault):
        return state, [Log("error", f"{event.device}: {event.message}")]
    if isinstance(event, ConditionChanged):
        rest = tuple(c for c in state.conditions if c[0] != event.source)
        new = ((event.source, event.text, event.blocks_sales),) if event.text else ()
        st = replace(state, conditions=tuple(sorted(rest + new, key=_condition_order)))
        if st.conditions == state.conditions:
            return state, []
        shown = st.phase in _PASSIVE or (st.phase == Phase.WAIT_CARD
                                         and event.source == "card_reader")
        return st, [screens.show(st)] if shown else []
    if isinstance(event, BatteryRead):
        st = replace(state, battery=event.percent, charging=event.charging)
        changed = (st.battery, st.charging) != (state.battery, state.charging)
        return st, [screens.show(st)] if changed and st.phase in _PASSIVE else []
    if isinstance(event, PathChanged):
        st = replace(state, path=event.path, bars=event.bars, path_detail=event.detail)
        changed = (st.path, st.bars, st.path_detail) != (state.path, state.bars,
                                                         state.path_detail)
        return st, [screens.show(st)] if changed and st.phase in _PASSIVE else []
    handler = _HANDLERS.get(state.phase)
    return handler(state, event, now) if handler else (state, [])


# -- helpers ---------------------------------------------------------------

def _side_print(state: State, event: PrintFinished) -> Step:
    """A print that is not the sale's own receipt: a copy, the report, a refusal slip, the
    merchant's (void receipt, X and Z reports), or the copy recovery prints after a
    restart (its notice then says how that went)."""
    took = merchant.side_print(state, event)
    if took is not None:
        return took
    if event.job == "recovery-last" and state.notice.endswith("\nPRINTING COPY"):
        head = state.notice.rsplit("\n", 1)[0]
        st = replace(state, notice=f"{head}\n{'COPY PRINTED' if event.ok else 'REPRINT FROM MENU'}")
        return st, [screens.show(st)] if st.phase == Phase.IDLE else []
    done = {"copy": "COPY PRINTED", "report": "REPORT PRINTED"}.get(event.job, "")
    if state.phase == Phase.MENU and done:
        return refresh(state, done if event.ok else event.message or "PRINTER FAULT")
    if not event.ok:
        return state, [Log("error", f"{event.job} not printed: {event.message}")]
    return state, []


def _condition_order(cond: tuple[str, str, bool]) -> tuple[int, int, str]:
    """Conditions that stop sales first, then by a fixed order of sources."""
    rank = ("power", "battery", "card_reader", "printer", "display", "modem")
    source = cond[0]
    return (0 if cond[2] else 1, rank.index(source) if source in rank else len(rank), source)


def _amount(state: State) -> int:
    return int(state.digits) if state.digits else 0


# -- phases ----------------------------------------------------------------

def _in_idle(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, KeyPressed):
        if event.key.isdigit() and event.key != "0" and blocking(state):
            return state, [Log("warning", f"no new sale: {blocking(state)}"), Beep(),
                           screens.show(state)]
        if event.key.isdigit() and event.key != "0":
            return go(state, Phase.AMOUNT, state.cfg.amount_timeout, digits=event.key,
                       notice="", message="")
        if event.key == "F1":
            return go(state, Phase.MENU, state.cfg.amount_timeout, message="", notice="",
                      menu_page=0)
        if event.key in ("CANCEL", "CLEAR") and state.notice:
            return to_idle(state)  # a notice goes first; an alert behind it shows next
        if event.key in ("CANCEL", "CLEAR") and state.alert:
            return to_idle(replace(state, alert=""))
        return state, []
    if isinstance(event, CardSwiped) and not state.notice.startswith(RESTART_NOTICES):
        st = replace(state, notice="ENTER AMOUNT FIRST")  # never over a recovery notice
        return st, [screens.show(st)]
    if isinstance(event, CloseDue):  # only here: in any other phase it waits for later
        return merchant.close_due(state, event)
    return state, []


def _in_amount(state: State, event: Event, now: Now) -> Step:
    if not isinstance(event, KeyPressed):
        if isinstance(event, CardSwiped):
            return refresh(state, "PRESS OK FIRST")
        return state, []
    key = event.key
    if key == "CANCEL":
        return to_idle(state, _cancelled(state))
    if key == "CLEAR":
        if not state.digits:
            return to_idle(state)
        return go(state, Phase.AMOUNT, state.cfg.amount_timeout, digits=state.digits[:-1],
                   message="")
    if key.isdigit():
        digits = (state.digits + key).lstrip("0")
        if len(digits) > 12 or int(digits or "0") > state.cfg.max_amount:
            return refresh(state, "AMOUNT OVER LIMIT")
        return go(state, Phase.AMOUNT, state.cfg.amount_timeout, digits=digits, message="")
    if key == "OK":
        amount = _amount(state)
        if amount <= 0:
            return refresh(state, "ENTER AN AMOUNT")
        kind = "refund" if state.function == "refund" else "purchase"
        return go(state, Phase.WAIT_CARD, state.cfg.card_timeout,
                  sale=Sale(amount=amount, kind=kind), message="")
    return state, []


def _in_wait_card(state: State, event: Event, now: Now) -> Step:
    assert state.sale is not None
    if isinstance(event, KeyPressed) and event.key == "CANCEL":
        return to_idle(state, _cancelled(state))
    if isinstance(event, CardReadFailed):  # the driver has logged it, once
        # the card timer runs on: a reader that keeps sending noise cannot hold the sale
        st, eff = refresh(state, event.reason)
        return st, [Beep(), *eff]
    if isinstance(event, CardSwiped):
        card = event.card
        if not luhn_ok(card.pan):  # the card timer runs on, as for any bad read
            st, eff = refresh(state, "INVALID CARD")
            return st, [Log("warning", f"card {card.masked} fails the Luhn check"), Beep(), *eff]
        sale = replace(state.sale, pan_hash=event.pan_hash)
        if _duplicate(state, sale, now):
            request = SaleRequest(kind=sale.kind, amount=sale.amount, card=card,
                                  local=now.local)
            st, eff = go(state, Phase.DUPLICATE, state.cfg.card_timeout,
                         sale=replace(sale, request=request), message="")
            return st, [Log("warning", f"possible duplicate: card {card.masked}, same amount "
                                       "as a recent approval; asking the operator"), Beep(),
                        *eff]
        return _send(replace(state, sale=sale), card, now)
    return state, []


def _send(state: State, card: CardData, now: Now) -> Step:
    """The card is taken: authorize online, or apply the offline rules when the link is
    down."""
    assert state.sale is not None
    request = SaleRequest(kind=state.sale.kind, amount=state.sale.amount, card=card,
                          local=now.local)
    sale = replace(state.sale, request=request, attempts=1, started=now.mono)
    if state.link == "DOWN":  # decided at once: no AUTHORIZING screen in between
        cause = "HOST NOT TRUSTED" if state.untrusted else "HOST OFFLINE"
        st = replace(state, phase=Phase.AUTHORIZING, token=state.token + 1, sale=sale,
                     message="", cause=cause)
        return st, [_offline(st, request, None, now)]
    st, eff = go(state, Phase.AUTHORIZING, None, sale=sale, message="")
    return st, [*eff, Authorize(request, None)]


def _duplicate(state: State, sale: Sale, now: Now) -> bool:
    """A purchase with the same card (keyed hash) and amount as one approved within the
    last `duplicate_minutes`."""
    if sale.kind != "purchase" or not sale.pan_hash or state.cfg.duplicate_minutes <= 0:
        return False
    window = timedelta(minutes=state.cfg.duplicate_minutes)
    return any(r.pan_hash == sale.pan_hash and r.amount == sale.amount
               and now.local - r.local <= window for r in state.recent)


def _in_duplicate(state: State, event: Event, now: Now) -> Step:
    """POSSIBLE DUPLICATE: OK goes on exactly as the swipe would have; CANCEL stops."""
    sale = state.sale
    if not isinstance(event, KeyPressed) or sale is None or sale.request is None:
        return state, []
    if event.key == "OK":
        st, eff = _send(replace(state, sale=replace(sale, request=None)), sale.request.card, now)
        return st, [Log("info", f"possible duplicate confirmed by the operator: card "
                                f"{sale.request.card.masked}"), *eff]
    if event.key in ("CANCEL", "CLEAR"):
        return to_idle(state, "SALE CANCELLED")
    return state, []


# the duplicate guard remembers at most this many approvals (the most recent): memory
# stays bounded however busy the window gets (a counter rarely sells 200 in 10 minutes)
RECENT_MAX = 200


def _remember(state: State, rec: SaleRecord, pan_hash: str = "") -> State:
    """Keep an approved purchase for the duplicate guard (and forget the expired ones)."""
    key = rec.pan_hash or pan_hash
    if rec.kind != "purchase" or rec.voided or not key or rec.status not in (
            SaleStatus.APPROVED, SaleStatus.OFFLINE_APPROVED):
        return state
    window = timedelta(minutes=state.cfg.duplicate_minutes)
    kept = tuple(r for r in state.recent
                 if r.sale_id != rec.sale_id and rec.local - r.local <= window)
    kept = kept[len(kept) - RECENT_MAX + 1:] if len(kept) >= RECENT_MAX else kept
    return replace(state, recent=(*kept, Recent(rec.sale_id, key, rec.amount, rec.local)))


def _cancelled(state: State) -> str:
    return "REFUND CANCELLED" if state.function == "refund" else "SALE CANCELLED"


def _in_authorizing(state: State, event: Event, now: Now) -> Step:
    sale = state.sale
    assert sale is not None and sale.request is not None
    if isinstance(event, HostAnswered):
        return _finish(state, event.record)
    if isinstance(event, HostOutcomeUnknown):
        st, eff = _finish(state, event.record)
        return st, [Log("warning", f"sale {event.record.sale_id}: {event.reason}; reversal "
                                   "recorded"), *eff]
    if isinstance(event, HostUntrusted):
        sale = replace(sale, sale_id=event.sale_id)
        st = replace(state, sale=sale, cause="HOST NOT TRUSTED")
        assert sale.request is not None
        return st, [Log("error", f"sale {event.sale_id}: {event.reason}; not retried: a "
                                 "configuration error or an attack, not a busy host"),
                    _offline(st, sale.request, event.sale_id, now)]
    if isinstance(event, AttemptFailed):
        assert sale.request is not None
        req = sale.request
        record = SaleRecord(sale_id=0, kind=req.kind, amount=req.amount,
                            pan_masked=req.card.masked, local=req.local,
                            status=SaleStatus.FAILED, reason=event.reason)
        st, eff = _finish(replace(state, cause=""), record)
        return replace(st, last=state.last), eff
    if isinstance(event, HostBusy):
        sale = replace(sale, sale_id=event.sale_id)
        elapsed = now.mono - sale.started
        if sale.attempts <= state.cfg.busy_retries and elapsed < state.cfg.sale_budget:
            delay = min(state.cfg.busy_backoff * (2 ** (sale.attempts - 1)),
                        max(0.0, state.cfg.sale_budget - elapsed))
            st, eff = go(state, Phase.BUSY_WAIT, delay, jitter=True, sale=sale,
                          message="")
            return st, [Log("warning", f"sale {event.sale_id}: host busy ({event.reason}); "
                                       f"retry {sale.attempts} of {state.cfg.busy_retries}"),
                        *eff]
        st = replace(state, sale=sale, cause="HOST UNAVAILABLE")
        assert sale.request is not None
        return st, [Log("warning", f"sale {event.sale_id}: host busy ({event.reason}); "
                                   "no more retries"),
                    _offline(st, sale.request, event.sale_id, now)]
    if isinstance(event, OfflineDecided):
        return _finish(state, event.record)
    if isinstance(event, SaleClosed):
        return _finish(state, event.record)
    if isinstance(event, KeyPressed) and event.key == "CANCEL":
        return refresh(state, "PLEASE WAIT")
    return state, []


def _in_busy_wait(state: State, event: Event, now: Now) -> Step:
    sale = state.sale
    assert sale is not None and sale.sale_id is not None
    if isinstance(event, KeyPressed) and event.key == "CANCEL":
        # the retry timer is void; the next screen is the result, not "cancelling"
        st = replace(state, token=state.token + 1)
        return st, [CloseSale(sale.sale_id, _cancelled(state))]
    if isinstance(event, SaleClosed):
        return _finish(state, event.record)
    return state, []


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


def _finish(state: State, record: SaleRecord) -> Step:
    state = _remember(state, record, state.sale.pan_hash if state.sale else "")
    st, eff = go(state, Phase.PRINTING, None, result=record, last=record, message="")
    lines = tuple(sale_receipt(state.cfg, record))
    return st, [*eff, Print(lines, record.sale_id or None)]  # the runtime logs the outcome


def _in_printing(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, PrintFinished):
        message = "" if event.ok else f"{event.message or 'PRINTER FAULT'}"
        st, eff = go(state, Phase.RESULT, state.cfg.result_timeout, message=message)
        if not event.ok:
            return st, [Log("error", f"receipt not printed: {event.message}"), Beep(), *eff]
        return st, eff
    return state, []


def _in_result(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, KeyPressed) and event.key in ("OK", "CANCEL", "CLEAR"):
        return to_idle(state)
    return state, []


def _in_menu(state: State, event: Event, now: Now) -> Step:
    if not isinstance(event, KeyPressed):
        return state, []
    if event.key in ("CANCEL", "CLEAR"):
        return to_idle(state)
    if event.key == "F1":  # the other page
        return go(state, Phase.MENU, state.cfg.amount_timeout, message="",
                  menu_page=1 - state.menu_page)
    if event.key in merchant.FUNCTIONS:
        return merchant.open_function(state, event.key, now)
    if event.key == "1":
        return go(state, Phase.MENU, state.cfg.amount_timeout,
                   message=screens.last_sale_line(state.last))
    if event.key == "2":
        if state.last is None:
            return refresh(state, "NO SALE TO REPRINT")
        lines = tuple(sale_receipt(state.cfg, state.last, copy=True))
        st, eff = go(state, Phase.MENU, state.cfg.amount_timeout, message="PRINTING COPY")
        return st, [*eff, Print(lines, state.last.sale_id, job="copy")]
    if event.key == "3":
        return go(state, Phase.STATUS, state.cfg.amount_timeout, message="", seen=now.local,
                   page=0)
    if event.key == "4":
        st, eff = go(state, Phase.MENU, state.cfg.amount_timeout, message="PRINTING REPORT")
        return st, [*eff, PrintReport()]
    return state, []


def _in_status(state: State, event: Event, now: Now) -> Step:
    if isinstance(event, KeyPressed) and event.key == "3":  # 3 again: the devices page
        return go(state, Phase.STATUS, state.cfg.amount_timeout, page=(state.page + 1) % 2)
    if isinstance(event, KeyPressed):
        return go(state, Phase.MENU, state.cfg.amount_timeout, message="")
    return state, []


def _timer(state: State, now: Now) -> Step:
    if state.phase in (Phase.AMOUNT, Phase.MENU, Phase.STATUS):
        return to_idle(state, "TIMED OUT" if state.phase == Phase.AMOUNT else "")
    if state.phase == Phase.WAIT_CARD:
        return to_idle(state, "NO CARD - CANCELLED")
    if state.phase == Phase.DUPLICATE:
        return to_idle(state, "SALE CANCELLED")
    if state.phase == Phase.RESULT:
        return to_idle(state)
    took = merchant.timer(state)
    if took is not None:
        return took
    if state.phase == Phase.BUSY_WAIT:
        sale = state.sale
        assert sale is not None and sale.request is not None
        request = sale.request
        sale = replace(sale, attempts=sale.attempts + 1)
        st, eff = go(state, Phase.AUTHORIZING, None, sale=sale)
        return st, [*eff, Authorize(request, sale.sale_id)]
    return state, []


_HANDLERS = {
    Phase.IDLE: _in_idle,
    Phase.AMOUNT: _in_amount,
    Phase.WAIT_CARD: _in_wait_card,
    Phase.DUPLICATE: _in_duplicate,
    Phase.AUTHORIZING: _in_authorizing,
    Phase.BUSY_WAIT: _in_busy_wait,
    Phase.PRINTING: _in_printing,
    Phase.RESULT: _in_result,
    Phase.MENU: _in_menu,
    Phase.STATUS: _in_status,
    **merchant.HANDLERS,
}

_PASSIVE = (Phase.IDLE, Phase.MENU, Phase.STATUS)

__all__ = ["Phase", "State", "Now", "Sale", "Recent", "step", "initial", "blocking",
           "SaleStatus"]
