"""One contact transaction, EMV 4.4 Books 1, 3 and 4, as a generator: `run(txn,
terminal)` yields what it needs (an APDU to send, a choice for the cardholder, the
host) and returns the `Outcome`. Pure: no I/O, no clock, no random; the transaction
carries the unpredictable number, the random-selection draw and the date.

The steps, each in its module:

1. application selection, Book 1 12 (`selection.py`);
2. initiate application processing, Book 3 10.1, and read application data, 10.2
   (`records.py`); a GPO answered 6985 sends selection to the next candidate;
3. offline data authentication, 10.3, and processing restrictions, 10.4
   (`authenticate.py`; the cryptography is `oda.py`'s);
4. cardholder verification, 10.5 (`cvm.py`): a PIN CVM yields `PinStep` and takes
   the PIN pad's `PinResult`;
5. terminal risk management, 10.6, and terminal action analysis, 10.7
   (`riskmgmt.py`);
6. card action analysis, online processing, issuer authentication, scripts and
   completion, 10.8 to 10.10 (`complete.py`, with field 55 in `field55.py`).

A reader error (card removed, mute, reader gone) ends the run: before an application
is selected it is a "fallback" (a swipe may be taken, host-interface 8.1), after it
"failed", with the last cryptogram's data when there is one. A card that answers
nonsense ends it with a clear message; every loop is bounded (`context.py`)."""

from __future__ import annotations

from collections.abc import Generator

from firmware.core.emv import authenticate, complete, cvm, records, riskmgmt, selection
from firmware.core.emv.context import CardGone, Ctx, Reply, Step, Stop
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import Outcome, Txn


def run(txn: Txn, terminal: Terminal) -> Generator[Step, Reply, Outcome]:
    ctx = Ctx(txn, terminal)
    try:
        return (yield from _flow(ctx))
    except Stop as stop:
        return complete.outcome(ctx, stop.decision, _stage(ctx), stop.message, stop.detail)
    except CardGone as gone:
        message = gone.error if len(gone.error) <= 20 else "CARD ERROR"
        if not ctx.selected:  # host-interface 8.1: no application selected -> fallback
            return complete.outcome(ctx, "fallback", "", message, str(gone))
        return complete.outcome(ctx, "failed", _stage(ctx), message, str(gone))


def _stage(ctx: Ctx) -> str:
    """Where a failure left the transaction: after the online step, after the first
    cryptogram, or before any."""
    if ctx.online:
        return "second"
    return "first" if ctx.chip is not None else ""


def _flow(ctx: Ctx) -> Generator[Step, Reply, Outcome]:
    found = yield from selection.candidates(ctx)  # Book 1 12.3
    for _ in range(len(found) + 1):
        yield from selection.choose(ctx, found)  # Book 1 12.4
        if (yield from records.gpo(ctx)):  # Book 3 10.1
            break
        assert ctx.app is not None
        found.remove(ctx.app)  # 6985: back to selection without this application
    else:
        raise Stop("terminated", "NOT ACCEPTED", "no application took GPO")
    yield from records.read(ctx)  # 10.2
    yield from authenticate.perform(ctx)  # 10.3
    authenticate.restrictions(ctx)  # 10.4
    yield from cvm.process(ctx)  # 10.5 (asks the PIN pad: PinStep)
    yield from riskmgmt.terminal_risk(ctx)  # 10.6
    ask = riskmgmt.action_analysis(ctx)  # 10.7
    return (yield from complete.first(ctx, ask))  # 10.8 to 10.10
