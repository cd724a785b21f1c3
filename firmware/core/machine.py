"""The terminal's state machine: one pure function, `step(state, event, now)`, and the one
table it follows.

Theory of operation
-------------------
Everything that moves the state machine is in the table below, in the spirit of h11's
`_state.py`: a row per (phase, type of event), gathered from the flows — `menu.py` (idle,
menu, status), `sale.py` (a sale or refund, amount to result) and `merchant.py` (the
supervisor PIN, void, batch close) — and an any-phase part for the events that mean the
same in every phase (the link, the queue, conditions, battery, path, maintenance, the
end of a print that is not the sale's receipt, a stale timer). An event with no row in
the phase it arrives in is logged at debug and changes nothing: never silence.

Time moves the machine only through `TimerFired` events carrying the token of the timer
the core started; each phase that starts a timer has its own `TimerFired` row, and a
timer from a phase already left carries an old token and is ignored (logged at debug).

Adding a flow (the chip flow next) is adding its record to `state.py`, its phases to
`Phase`, a module with its rows, and the module's rows here; no other flow changes.
The theory of each flow is at the top of its module; the phases at a glance:

    IDLE --digit--> AMOUNT --OK--> WAIT_CARD --card--> AUTHORIZING
    AUTHORIZING --HostAnswered--> PRINTING --PrintFinished--> RESULT --timer/key--> IDLE
    AUTHORIZING --HostBusy--> BUSY_WAIT --timer--> AUTHORIZING   (within budget)
    MENU --5..9--> PIN --> PIN_CHECK --> refund (AMOUNT...), void (VOID_*), close
    IDLE --CloseDue--> CLOSING --CloseFinished--> CLOSED --timer/key--> IDLE
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from firmware.core import chipsale, menu, merchant, pinsale, sale, screens
from firmware.core.effects import Beep, Effect, Log, Print
from firmware.core.events import (
    AdviceRefused, BatteryRead, ChipInserted, ChipReaderFailed, ChipRemoved, ConditionChanged,
    DeviceFault, Event, LinkChanged, MaintenanceNotice, PathChanged, PrintFinished,
    QueueChanged, TimerFired, VoidRecorded,
)
from firmware.core.model import CoreConfig, SaleRecord, SaleStatus
from firmware.core.moves import Handler, PrintHandler, blocking, ignored, print_elsewhere
from firmware.core.receipt import refused_slip
from firmware.core.dupguard import RECENT_MAX, forget, remember_all
from firmware.core.state import Now, Phase, Recent, Sale, State, Step

# the phases whose screen shows the terminal's standing (link, queue, conditions): they are
# redrawn when it changes
PASSIVE = (Phase.IDLE, Phase.MENU, Phase.STATUS)


def initial(cfg: CoreConfig, *, last: SaleRecord | None = None, notice: str = "",
            recent: Iterable[SaleRecord] = ()) -> Step:
    """The state at start. `recent`: the journal's approved purchases of the last
    `cfg.duplicate_minutes` (journal.recent_approvals), for the duplicate guard."""
    state = remember_all(State(cfg=cfg, last=last, notice=notice), recent)
    return state, [screens.show(state)]


def step(state: State, event: Event, now: Now) -> Step:
    row = ANY_PHASE.get(type(event), _by_phase)
    return row(state, event, now)


def _by_phase(state: State, event: Event, now: Now) -> Step:
    row = TABLE.get((state.phase, type(event)))
    return row(state, event, now) if row is not None else ignored(state, event)


def _redrawn(before: State, after: State, *, when: bool = True) -> Step:
    """A change of the terminal's standing: redraw when the phase shows it."""
    return after, [screens.show(after)] if when and after.phase in PASSIVE else []


# -- the any-phase part --------------------------------------------------------------------

def _timer(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, TimerFired)
    if event.token != state.token:
        return ignored(state, event, f"stale (token {event.token}, now {state.token})")
    return _by_phase(state, event, now)


def _link(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, LinkChanged)
    return _redrawn(state, replace(state, link=event.state, untrusted=event.untrusted))


def _advice_refused(state: State, event: Event, now: Now) -> Step:
    """The host refused a sale approved offline: an alert on the idle screen until
    cleared, and a slip."""
    assert isinstance(event, AdviceRefused)
    rec = event.record
    st = replace(state, alert=f"OFFLINE SALE REFUSED\nSALE #{rec.sale_id} UNPAID")
    effects: list[Effect] = [Print(tuple(refused_slip(state.cfg, rec)), rec.sale_id,
                                   job="refused"), Beep()]
    return st, [screens.show(st), *effects] if st.phase in PASSIVE else effects


def _maintenance(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, MaintenanceNotice)
    st = replace(state, banner=event.text)
    return st, [screens.show(st)] if st.phase == Phase.IDLE else []


def _queue(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, QueueChanged)
    return _redrawn(state, replace(state, queue=event.stats))


def _device_fault(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, DeviceFault)
    return state, [Log("error", f"{event.device}: {event.message}")]


def _condition(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, ConditionChanged)
    rest = tuple(c for c in state.conditions if c[0] != event.source)
    new = ((event.source, event.text, event.blocks_sales),) if event.text else ()
    st = replace(state, conditions=tuple(sorted(rest + new, key=_condition_order)))
    if st.conditions == state.conditions:
        return state, []
    shown = st.phase in PASSIVE or (st.phase == Phase.WAIT_CARD
                                    and event.source == "card_reader")
    return st, [screens.show(st)] if shown else []


def _condition_order(cond: tuple[str, str, bool]) -> tuple[int, int, str]:
    """Conditions that stop sales first, then by a fixed order of sources."""
    rank = ("power", "battery", "card_reader", "printer", "display", "modem")
    source = cond[0]
    return (0 if cond[2] else 1, rank.index(source) if source in rank else len(rank), source)


def _battery(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, BatteryRead)
    st = replace(state, battery=event.percent, charging=event.charging)
    changed = (st.battery, st.charging) != (state.battery, state.charging)
    return _redrawn(state, st, when=changed)


def _path(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, PathChanged)
    st = replace(state, path=event.path, bars=event.bars, path_detail=event.detail)
    changed = (st.path, st.bars, st.path_detail) != (state.path, state.bars,
                                                     state.path_detail)
    return _redrawn(state, st, when=changed)


def _print_finished(state: State, event: Event, now: Now) -> Step:
    """The sale's own receipt ends its PRINTING phase (a row of the sale flow); any other
    print (a copy, a report, a refusal slip, the merchant's) carries its job name and is
    handled by its job, whatever the phase."""
    assert isinstance(event, PrintFinished)
    if event.job == "sale":
        return _by_phase(state, event, now)
    return PRINT_JOBS.get(event.job, print_elsewhere)(state, event)


def _void_recorded(state: State, event: Event, now: Now) -> Step:
    """The voided sale leaves the duplicate guard, whatever the phase; VOIDING then
    moves on."""
    assert isinstance(event, VoidRecorded)
    return _by_phase(forget(state, event.record), event, now)


def _chip_slot(state: State, event: Event, now: Now) -> Step:
    """A card in or out of the chip reader, whatever the phase; the phase then takes it
    if it has a row (WAIT_CARD starts the kernel, REMOVE_CARD ends)."""
    st = replace(state, chip_in=isinstance(event, ChipInserted))
    return _by_phase(st, event, now)


def _chip_reader(state: State, event: Event, now: Now) -> Step:
    assert isinstance(event, ChipReaderFailed)
    st = replace(state, chip_in=False)
    eff: list[Effect] = [Log("error", f"chip reader: {event.reason}"
                                      f"{': ' + event.detail if event.detail else ''}")]
    if st.phase == Phase.REMOVE_CARD:  # nothing left to take out
        st2, more = sale.ended(st, st.message)
        return st2, [*eff, *more]
    return st, eff


ANY_PHASE: dict[type[Event], Handler] = {
    ChipInserted: _chip_slot,
    ChipRemoved: _chip_slot,
    ChipReaderFailed: _chip_reader,
    TimerFired: _timer,
    LinkChanged: _link,
    AdviceRefused: _advice_refused,
    MaintenanceNotice: _maintenance,
    QueueChanged: _queue,
    DeviceFault: _device_fault,
    ConditionChanged: _condition,
    BatteryRead: _battery,
    PathChanged: _path,
    PrintFinished: _print_finished,
    VoidRecorded: _void_recorded,
}


def _joined(*parts: dict) -> dict:  # type: ignore[type-arg]
    """The flows' rows as one table; a row written twice is a mistake caught at import."""
    table: dict = {}  # type: ignore[type-arg]
    for part in parts:
        twice = table.keys() & part.keys()
        assert not twice, f"rows declared twice: {sorted(map(str, twice))}"
        table.update(part)
    return table


TABLE: dict[tuple[Phase, type[Event]], Handler] = _joined(
    menu.ROWS, sale.ROWS, chipsale.ROWS, pinsale.ROWS, merchant.ROWS)
PRINT_JOBS: dict[str, PrintHandler] = _joined(menu.PRINT_JOBS, merchant.PRINT_JOBS)

__all__ = ["Phase", "State", "Now", "Sale", "Recent", "step", "initial", "blocking",
           "SaleStatus", "RECENT_MAX", "TABLE", "ANY_PHASE", "PASSIVE"]
