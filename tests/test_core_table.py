"""The transition table's own rules (firmware/core/machine.py): every phase that starts a
timer has a row for it, every phase is reachable from the table, an event a phase does not
expect is logged and changes nothing, and no import circle inside the core."""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path

import pytest

from firmware.core import machine
from firmware.core.card import CardData
from firmware.core.effects import Log, StartTimer
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import ChipData, Outcome, PinResult
from firmware.core.events import (
    AdviceRefused, AttemptFailed, BatteryRead, CardReadFailed, CardSwiped, ChipAsked,
    ChipFinished, ChipInserted, ChipRead, ChipReaderFailed, ChipRemoved, ChipSettled, CloseDue,
    CloseFinished, CloseProgress, ConditionChanged, DeviceFault, Event, HostAnswered,
    HostBusy, HostOutcomeUnknown, HostUntrusted, KeyPressed, LinkChanged, MaintenanceNotice,
    OfflineDecided, PathChanged, PinAsked, PinChecked, PinKeyed, PinTaken, PrintFinished,
    QueueChanged, SaleClosed,
    TimerFired, VoidCandidate, VoidRecorded,
)
from firmware.core.iso import Identity
from firmware.core.machine import Now, Phase, State, initial, step
from firmware.core.model import CoreConfig, SaleRecord, SaleStatus
from firmware.core.risk import QueueStats

CORE = Path(__file__).resolve().parent.parent / "firmware" / "core"
CFG = CoreConfig(identity=Identity("TERM0001", "MERCHANT0000001", "978"), merchant_name="SHOP",
                 address=("1 MAIN ST",), currency_code="EUR", max_amount=100000, pin_set=True,
                 chip=Terminal())
NOW = Now(mono=0.0, local=datetime(2026, 1, 2, 12, 0))
CARD = CardData(pan="4761739001010010", expiry="2812", service_code="101",
                track2="4761739001010010=28121011234567890")
CHIP = ChipData(card=CARD, psn="01", aid="F0000000011010", label="CREDIT",
                field55=bytes.fromhex("9F2608CA00FC7521318666"), cid=0x80)
TC = Outcome("approved", "second", chip=ChipData(
    card=CARD, psn="01", aid="F0000000011010", label="CREDIT", field55=b"", cid=0x40))
REC = SaleRecord(sale_id=3, kind="purchase", amount=1250, pan_masked="476173******0010",
                 local=NOW.local, status=SaleStatus.APPROVED, approval="123456")

# one event of every type the core knows
EVENTS: list[Event] = [
    KeyPressed("5"), KeyPressed("OK"), KeyPressed("CANCEL"), CardSwiped(CARD),
    CardReadFailed("NO TRACK 2"), DeviceFault("printer", "jam"), TimerFired("phase", 0),
    HostAnswered(REC), HostBusy(3, "91"), HostUntrusted(3, "bad certificate"),
    AttemptFailed(None, "TERMINAL ERROR"), HostOutcomeUnknown(REC, "timeout"), SaleClosed(REC),
    PrintFinished(True), PrintFinished(True, job="copy"), MaintenanceNotice("RESTART 03:00"),
    AdviceRefused(REC), LinkChanged("DOWN"), QueueChanged(QueueStats()),
    OfflineDecided(REC), ConditionChanged("printer", "PAPER LOW"), BatteryRead(50),
    PathChanged("ETH"), PinChecked(True, "void"), VoidCandidate(REC), VoidRecorded(REC, True),
    CloseProgress("UPLOADING"), CloseFinished(True, 1), CloseDue(),
    ChipInserted("3B00"), ChipRemoved(), ChipReaderFailed("CHIP READER FAULT"),
    ChipAsked(("CREDIT", "DEBIT")), ChipRead(CHIP), ChipFinished(TC), ChipSettled(REC),
    PinAsked("offline_plain", 3), PinKeyed(4), PinTaken(PinResult("verified")),
]


def test_every_event_type_of_the_core_is_covered_here() -> None:
    names = {n.name for n in ast.parse((CORE / "events.py").read_text()).body
             if isinstance(n, ast.ClassDef) and n.name not in ("Event",)}
    assert names == {type(e).__name__ for e in EVENTS}


def _reach_every_phase() -> dict[Phase, State]:
    """Drive the machine by keys and answers into every phase (not by building states)."""
    st, _ = initial(CFG)
    seen: dict[Phase, State] = {}

    def run(state: State, *events: Event) -> State:
        for ev in events:
            if isinstance(ev, TimerFired):
                ev = TimerFired("phase", state.token)
            state, _ = step(state, ev, NOW)
            seen.setdefault(state.phase, state)
        return state

    k = KeyPressed
    run(st, k("1"), k("OK"), CardSwiped(CARD), HostBusy(3, "91"))
    run(st, k("1"), k("OK"), CardSwiped(CARD), HostAnswered(REC), PrintFinished(True))
    # the same card (keyed hash) and amount again: POSSIBLE DUPLICATE
    again = run(st, k("1"), k("2"), k("5"), k("0"), k("OK"), CardSwiped(CARD, pan_hash="h"),
                HostAnswered(REC), PrintFinished(True), k("OK"))
    run(again, k("1"), k("2"), k("5"), k("0"), k("OK"), CardSwiped(CARD, pan_hash="h"))
    # a chip sale: inserted, the application chosen, online, the card's TC, REMOVE CARD
    run(st, k("1"), k("OK"), ChipInserted("3B00"), ChipAsked(("CREDIT", "DEBIT")), k("1"),
        PinAsked("offline_plain", 3), PinKeyed(4), PinTaken(PinResult("verified")),
        ChipRead(CHIP), HostAnswered(REC), ChipFinished(TC), ChipSettled(REC),
        PrintFinished(True), TimerFired("phase"))
    menu = run(st, k("F1"), k("3"), k("CANCEL"))
    run(menu, k("6"), k("1"), k("2"), k("3"), k("4"), k("OK"), PinChecked(True, "void"),
        k("OK"), VoidCandidate(REC), k("OK"), VoidRecorded(REC, True))
    run(menu, k("8"), k("1"), k("2"), k("3"), k("4"), k("OK"), PinChecked(True, "close"),
        k("OK"), CloseFinished(True, 1))
    return seen


def test_every_phase_is_reached_and_has_rows() -> None:
    seen = _reach_every_phase()
    missing = set(Phase) - set(seen)
    assert not missing, f"not reached by keys and answers: {missing}"
    in_table = {phase for phase, _ev in machine.TABLE}
    assert set(Phase) <= in_table, f"phases without a row: {set(Phase) - in_table}"


def test_every_phase_that_starts_a_timer_has_its_timer_row() -> None:
    """A timer a phase starts comes back to that phase: it must say what it does."""
    for phase, state in _reach_every_phase().items():
        for ev in EVENTS:
            after, effects = step(state, ev, NOW)
            for eff in effects:
                if isinstance(eff, StartTimer):
                    assert (after.phase, TimerFired) in machine.TABLE, \
                        f"{after.phase} (from {phase}) starts a timer but has no row for it"


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
def test_an_event_a_phase_does_not_expect_is_logged_not_silent(phase: Phase) -> None:
    state = _reach_every_phase()[phase]
    for ev in EVENTS:
        if type(ev) in machine.ANY_PHASE or (phase, type(ev)) in machine.TABLE:
            continue
        after, effects = step(state, ev, NOW)
        assert after == state, (phase, ev)
        assert effects and all(isinstance(e, Log) and e.level == "debug" for e in effects), \
            (phase, ev, effects)
        assert type(ev).__name__ in effects[0].text and phase.value in effects[0].text


def test_no_import_circle_in_the_core() -> None:
    graph: dict[str, set[str]] = {}
    for path in CORE.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "firmware.core":
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "firmware.core."):
                deps.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = deps

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, f"import circle: {' -> '.join((*trail, node))}"
        for dep in graph.get(node, ()):
            visit(dep, (*trail, node))

    for module in graph:
        visit(module, ())


def test_state_holds_data_only() -> None:
    """state.py has no moves: no function at module level (the moves are in moves.py)."""
    tree = ast.parse((CORE / "state.py").read_text())
    assert not [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
