"""The moves every phase makes: enter a phase, go idle, redraw with a message, and the one
way digits are keyed (an amount, an invoice number, the supervisor PIN).

Every transition in `machine.py`'s table ends in one of these: a phase is entered with a
new timer token (so the timer of the phase left goes stale), its screen shown, and its
timer started when it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from firmware.core import screens
from firmware.core.effects import Effect, Log, StartTimer
from firmware.core.events import Event, PrintFinished
from firmware.core.state import Now, Phase, State, Step

# a row of the transition table: what a phase does with one type of event
Handler = Callable[[State, Event, Now], Step]
# what the end of a print job other than the sale's receipt does, by job
PrintHandler = Callable[[State, PrintFinished], Step]


def go(state: State, phase: Phase, timeout: float | None = None, *, jitter: bool = False,
       **changes: object) -> Step:
    """Enter a phase: new timer token, show its screen, start its timer."""
    st = replace(state, phase=phase, token=state.token + 1, **changes)  # type: ignore[arg-type]
    effects: list[Effect] = [screens.show(st)]
    if timeout is not None:
        effects.append(StartTimer(timeout, st.token, jitter=jitter))
    return st, effects


def to_idle(state: State, notice: str = "") -> Step:
    """Back to rest: the flow in progress, whatever it was, is dropped."""
    return go(state, Phase.IDLE, None, flow=None, message="", notice=notice)


def refresh(state: State, message: str) -> Step:
    st = replace(state, message=message)
    return st, [screens.show(st)]


def blocking(state: State) -> str:
    """The text of the first condition that stops new sales, or ""."""
    return next((text for _src, text, blocks in state.conditions if blocks), "")


def ignored(state: State, event: Event, why: str = "") -> Step:
    """An event the phase does not take: said in the log (at debug: it is routine), the
    state unchanged."""
    what = type(event).__name__
    return state, [Log("debug", f"{what} ignored in {state.phase.value}"
                                f"{': ' + why if why else ''}")]


def print_elsewhere(state: State, event: PrintFinished) -> Step:
    """A print ended where nothing on screen waits for it: a fault is logged, success
    needs nothing more."""
    if not event.ok:
        return state, [Log("error", f"{event.job} not printed: {event.message}")]
    return state, []


@dataclass(frozen=True)
class Keyed:
    """The result of one key in digit entry: the digits now, or why the key was refused."""

    digits: str
    refused: str = ""  # the message to show; the digits are then unchanged


def key_digit(digits: str, key: str, *, most: int, strip_zeros: bool = False) -> Keyed:
    """One digit key or CLEAR in digit entry: at most `most` digits; leading zeros dropped
    when the digits are a number (an amount, an invoice) rather than a code (a PIN)."""
    if key == "CLEAR":
        return Keyed(digits[:-1])
    new = digits + key
    if strip_zeros:
        new = new.lstrip("0")
    if len(new) > most:
        return Keyed(digits, f"AT MOST {most} DIGITS")
    return Keyed(new)
