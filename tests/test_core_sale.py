"""The transaction state machine, driven event by event with no loop and no process."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from firmware.core.card import CardData
from firmware.core.effects import (
    Authorize, CloseSale, DecideOffline, Log, Print, PrintReport, Show, StartTimer,
)
from firmware.core.events import (
    CardReadFailed, CardSwiped, HostAnswered, HostBusy, HostOutcomeUnknown, KeyPressed,
    LinkChanged, OfflineDecided, PrintFinished, QueueChanged, TimerFired,
)
from firmware.core.risk import OfflineRules, QueueStats
from firmware.core.iso import Identity
from firmware.core.model import CoreConfig, SaleRecord, SaleStatus
from firmware.core.machine import Now, Phase, State, initial, step

CFG = CoreConfig(identity=Identity("TERM0001", "MERCHANT0000001", "978"),
                 merchant_name="SHOP", address=("1 STREET",), currency_code="EUR",
                 max_amount=100000, busy_retries=2, busy_backoff=0.5, sale_budget=10.0)
CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101",
                track2="4761739001010010=30122011000000000000")
T0 = datetime(2026, 11, 23, 12, 0, 0)


def only_debug(effects: list[object]) -> bool:
    """The event was not taken: said in the log at debug, and nothing else done."""
    return bool(effects) and all(isinstance(e, Log) and e.level == "debug" for e in effects)


def now(mono: float = 0.0) -> Now:
    return Now(mono=mono, local=T0)


def run(state: State, *events: object, mono: float = 0.0) -> tuple[State, list[object]]:
    effects: list[object] = []
    for ev in events:
        state, eff = step(state, ev, now(mono))  # type: ignore[arg-type]
        effects += eff
    return state, effects


def keys(*ks: str) -> list[KeyPressed]:
    out = []
    for k in ks:
        out += [KeyPressed(c) for c in k] if k.isdigit() else [KeyPressed(k)]
    return out


def shown(effects: list[object]) -> str:
    rows = [e.rows for e in effects if isinstance(e, Show)]
    return " | ".join(rows[-1]) if rows else ""


def record(status: str, code: str = "00", **kw: object) -> SaleRecord:
    fields: dict[str, object] = {"approval": "123456", "rrn": "000000000001", "stan": "000001"}
    fields.update(kw)
    return SaleRecord(sale_id=7, kind="purchase", amount=1250, pan_masked="476173******0010",
                      local=T0, status=status, response_code=code,
                      **fields)  # type: ignore[arg-type]


def to_card_wait() -> State:
    st, _ = initial(CFG)
    st, _ = run(st, *keys("1250", "OK"))
    return st


def test_idle_screen_and_amount_entry() -> None:
    st, eff = initial(CFG)
    assert "ENTER AMOUNT" in shown(eff)
    st, eff = run(st, *keys("125"))
    assert st.phase == Phase.AMOUNT and "EUR 1.25" in shown(eff)
    st, eff = run(st, KeyPressed("CLEAR"))
    assert "EUR 0.12" in shown(eff)


def test_amount_over_limit_is_refused() -> None:
    st, _ = initial(CFG)
    st, eff = run(st, *keys("100001"))
    assert st.sale_flow is not None and st.sale_flow.digits == "10000"
    assert "AMOUNT OVER LIMIT" in shown(eff)


def test_ok_moves_to_card_and_starts_timer() -> None:
    st, _ = initial(CFG)
    st, eff = run(st, *keys("1250", "OK"))
    assert st.phase == Phase.WAIT_CARD
    assert "SWIPE CARD" in shown(eff)
    assert any(isinstance(e, StartTimer) and e.seconds == CFG.card_timeout for e in eff)


def test_cancel_during_amount_and_card_wait() -> None:
    st, _ = initial(CFG)
    st, eff = run(st, *keys("12", "CANCEL"))
    assert st.phase == Phase.IDLE and "SALE CANCELLED" in shown(eff)
    st, eff = run(to_card_wait(), KeyPressed("CANCEL"))
    assert st.phase == Phase.IDLE and "SALE CANCELLED" in shown(eff)


def test_card_timeout_and_stale_timer() -> None:
    st = to_card_wait()
    stale = TimerFired("phase", st.token - 1)
    st2, eff = run(st, stale)
    assert st2 is st and only_debug(eff)
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE and "NO CARD" in shown(eff)


def test_bad_read_then_good_swipe_authorizes() -> None:
    st = to_card_wait()
    st, eff = run(st, CardReadFailed("TRACK 2 NOT READ"))
    assert st.phase == Phase.WAIT_CARD and "TRACK 2 NOT READ" in shown(eff)
    st, eff = run(st, CardSwiped(CARD))
    assert st.phase == Phase.AUTHORIZING
    auth = [e for e in eff if isinstance(e, Authorize)]
    assert len(auth) == 1 and auth[0].request.amount == 1250 and auth[0].sale_id is None


def test_luhn_failure_asks_for_another_card() -> None:
    st = to_card_wait()
    bad = replace(CARD, pan="4000000000000003")
    st, eff = run(st, CardSwiped(bad))
    assert st.phase == Phase.WAIT_CARD and "INVALID CARD" in shown(eff)
    assert not any(isinstance(e, Authorize) for e in eff)


def test_cancel_is_refused_while_authorizing() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.AUTHORIZING and "PLEASE WAIT" in shown(eff)


def test_approval_prints_then_returns_to_idle() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, eff = run(st, HostAnswered(record(SaleStatus.APPROVED)))
    assert st.phase == Phase.PRINTING and "APPROVED" in shown(eff)
    prints = [e for e in eff if isinstance(e, Print)]
    assert prints and prints[0].sale_id == 7
    text = "\n".join(prints[0].lines)
    assert "476173******0010" in text and "123456" in text and "EUR 12.50" in text
    st, eff = run(st, PrintFinished(True))
    assert st.phase == Phase.RESULT
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE


def test_decline_texts() -> None:
    for code, reason in (("05", "DO NOT HONOUR"), ("51", "INSUFFICIENT FUNDS")):
        st, _ = run(to_card_wait(), CardSwiped(CARD))
        st, eff = run(st, HostAnswered(record(SaleStatus.DECLINED, code)))
        assert "DECLINED" in shown(eff) and reason in shown(eff)


def test_printer_failure_does_not_lose_the_sale() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, _ = run(st, HostAnswered(record(SaleStatus.APPROVED)))
    st, eff = run(st, PrintFinished(False, "PAPER OUT"))
    assert st.phase == Phase.RESULT and "APPROVED" in shown(eff) and "PAPER OUT" in shown(eff)
    assert st.last is not None and st.last.status == SaleStatus.APPROVED


def test_outcome_unknown_shows_not_charged() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, eff = run(st, HostOutcomeUnknown(record(SaleStatus.NOT_COMPLETED), "timeout"))
    assert "NO RESPONSE" in shown(eff) and "NOT CHARGED" in shown(eff)
    slips = [e for e in eff if isinstance(e, Print)]  # the customer gets it in writing
    assert len(slips) == 1 and "NO RESPONSE - NOT CHARGED" in slips[0].lines
    assert st.phase == Phase.PRINTING


def test_busy_retries_with_backoff_then_gives_up() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    for attempt in (1, 2):
        st, eff = run(st, HostBusy(7, "host answered 91"), mono=1.0)
        assert st.phase == Phase.BUSY_WAIT and "HOST BUSY" in shown(eff)
        timer = [e for e in eff if isinstance(e, StartTimer)][0]
        assert timer.jitter and timer.seconds == 0.5 * 2 ** (attempt - 1)
        st, eff = run(st, TimerFired("phase", st.token), mono=1.0)
        auth = [e for e in eff if isinstance(e, Authorize)]
        assert auth and auth[0].sale_id == 7
    st, eff = run(st, HostBusy(7, "host answered 96"), mono=2.0)
    decide = [e for e in eff if isinstance(e, DecideOffline)]
    assert len(decide) == 1 and decide[0].sale_id == 7 and decide[0].approved
    assert decide[0].reason == "WITHIN OFFLINE LIMITS"


def test_busy_host_without_offline_ends_the_sale() -> None:
    cfg = replace(CFG, offline=OfflineRules(enabled=False))
    st, _ = initial(cfg)
    st, _ = run(st, *keys("1250", "OK"), CardSwiped(CARD))
    for _ in range(3):
        st, eff = run(st, HostBusy(7, "91"), mono=1.0)
        if st.phase == Phase.BUSY_WAIT:
            st, eff = run(st, TimerFired("phase", st.token), mono=1.0)
    decide = [e for e in eff if isinstance(e, DecideOffline)]
    assert decide == [DecideOffline(decide[0].request, 7, False, "HOST UNAVAILABLE")]
    closed = record(SaleStatus.FAILED, "", reason="HOST UNAVAILABLE")
    st, eff = run(st, OfflineDecided(closed))
    assert st.phase == Phase.PRINTING and "HOST UNAVAILABLE" in shown(eff)
    assert "NOT COMPLETED" in shown(eff)
    assert any(isinstance(e, Print) and "CUSTOMER NOT CHARGED" in e.lines for e in eff)
    st, eff = run(st, PrintFinished(True))
    assert st.phase == Phase.RESULT and "NOT CHARGED" in shown(eff)


def test_link_down_goes_straight_to_offline_approval() -> None:
    st, _ = run(to_card_wait(), LinkChanged("DOWN"))
    st, eff = run(st, CardSwiped(CARD))
    assert not any(isinstance(e, Authorize) for e in eff)
    decide = [e for e in eff if isinstance(e, DecideOffline)]
    assert decide and decide[0].approved and decide[0].sale_id is None
    rec = record(SaleStatus.OFFLINE_APPROVED, "", approval="Y30007")
    st, eff = run(st, OfflineDecided(rec))
    assert "APPROVED OFFLINE" in shown(eff)
    text = "\n".join([e for e in eff if isinstance(e, Print)][0].lines)
    assert "OFFLINE" in text and "Y30007" in text


def test_offline_refusal_names_its_rule() -> None:
    st, _ = initial(CFG)
    st, _ = run(st, LinkChanged("DOWN"), QueueChanged(QueueStats(count=20, total=100)))
    st, _ = run(st, *keys("1250", "OK"))
    st, eff = run(st, CardSwiped(CARD))
    decide = [e for e in eff if isinstance(e, DecideOffline)][0]
    assert not decide.approved and decide.reason == "OFFLINE COUNT FULL"


def test_unknown_outcome_is_never_approved_offline() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, eff = run(st, HostOutcomeUnknown(record(SaleStatus.NOT_COMPLETED), "timeout"))
    assert not any(isinstance(e, DecideOffline) for e in eff)


def test_status_screen_and_report() -> None:
    st, _ = initial(CFG)
    stats = QueueStats(count=3, total=4500, oldest=T0 - timedelta(minutes=42), refused=1)
    st, _ = run(st, LinkChanged("DOWN"), QueueChanged(stats), KeyPressed("F1"))
    st, eff = run(st, KeyPressed("3"))
    text = shown(eff)
    assert "BANK OFFLINE" in text and "UNSENT SALES 3" in text and "EUR 45.00" in text
    assert "REFUSED 1 UNPAID" in text
    st, eff = run(st, KeyPressed("OK"), KeyPressed("4"))
    assert any(isinstance(e, PrintReport) for e in eff)


def test_busy_budget_ends_retries_early() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, eff = run(st, HostBusy(7, "refused"), mono=CFG.sale_budget + 1)
    assert any(isinstance(e, DecideOffline) for e in eff)


def test_cancel_while_waiting_to_retry_voids_the_timer() -> None:
    st, _ = run(to_card_wait(), CardSwiped(CARD))
    st, _ = run(st, HostBusy(7, "91"))
    old = st.token
    st, eff = run(st, KeyPressed("CANCEL"))
    assert [e for e in eff if isinstance(e, CloseSale)] == [CloseSale(7, "SALE CANCELLED")]
    assert not any(isinstance(e, Show) for e in eff)  # no "cancelling" screen in between
    st2, eff = run(st, TimerFired("phase", old))
    assert st2 == st and only_debug(eff)


def test_menu_last_sale_and_reprint() -> None:
    last = record(SaleStatus.APPROVED)
    st, _ = initial(CFG, last=last)
    st, eff = run(st, KeyPressed("F1"), KeyPressed("1"))
    assert "#7 APPROVED" in shown(eff)
    st, eff = run(st, KeyPressed("2"))
    prints = [e for e in eff if isinstance(e, Print)]
    assert prints and "*** COPY ***" in "\n".join(prints[0].lines)
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.IDLE


def test_recovery_notice_shows_in_idle() -> None:
    st, eff = initial(CFG, notice="LAST SALE REVERSED\nNOT CHARGED")
    assert "LAST SALE REVERSED" in shown(eff) and "NOT CHARGED" in shown(eff)
