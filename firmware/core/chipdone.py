"""Where a chip sale's online step hands the card its last word (EMV Book 3 10.9).

`sale.py` calls these from its AUTHORIZING rows when the sale was read from a chip:
instead of showing the result at once, the card is told the host's answer (or that
there is none) and the sale waits in CHIP_COMPLETING for the card's decision
(`chipsale.py` takes it from there); a sale dropped before its request was sent
lets the kernel go (`dropped`). No import of the sale flow: it imports this.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.effects import ChipBegin, ChipComplete, ChipStop
from firmware.core.emv.steps import HostReply
from firmware.core.model import SaleRecord
from firmware.core.moves import go
from firmware.core.risk import Decision, chip_offline
from firmware.core.state import Now, Phase, SaleFlow, State, Step


def start(state: State, now: Now) -> Step:
    """The card is in the reader and the amount known: the kernel runs (CHIP_READING),
    told whether the terminal's own offline rules would allow an offline approval."""
    flow = state.flow
    assert isinstance(flow, SaleFlow) and flow.sale is not None
    sale = flow.sale
    offline = chip_offline(state.cfg.offline, state.queue, kind=sale.kind,
                           amount=sale.amount, now=now.local)
    st, eff = go(state, Phase.CHIP_READING, None, message="")
    return st, [*eff, ChipBegin(sale.kind, sale.amount, now.local, offline.approved)]


def is_chip(state: State) -> bool:
    """The sale in progress was read from a chip (entry 05)."""
    flow = state.flow
    return isinstance(flow, SaleFlow) and flow.sale is not None and \
        flow.sale.request is not None and flow.sale.request.chip is not None


def await_card(state: State, record: SaleRecord, reply: HostReply) -> Step:
    """The journal holds the host's answer (or the sale's end): the card decides next."""
    flow = state.flow
    assert isinstance(flow, SaleFlow)
    st, eff = go(state, Phase.CHIP_COMPLETING, None, flow=replace(flow, waiting=record),
                 message="")
    return st, [*eff, ChipComplete(reply)]


def unreachable(state: State, decision: Decision, cause: str) -> Step:
    """The host could not be reached before the request was written, or stayed busy: the
    card decides with the default action codes (8A Y3 or Z3), within the offline rules."""
    flow = state.flow
    assert isinstance(flow, SaleFlow)
    st, eff = go(state, Phase.CHIP_COMPLETING, None, message="",
                 flow=replace(flow, offline=(decision.approved, decision.reason), cause=cause))
    return st, [*eff, ChipComplete(HostReply("unreachable", offline_ok=decision.approved))]


def dropped(state: State, step: Step) -> Step:
    """The sale ended before its request was sent (a possible duplicate refused): a chip's
    kernel, waiting at its online step for an answer that will not come, is stopped and
    the card powered off (ChipStop)."""
    st, eff = step
    return (st, [ChipStop(), *eff]) if is_chip(state) else step
