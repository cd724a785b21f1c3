"""The merchant's functions in the pure core: supervisor PIN, refund, void, duplicate guard,
X and Z reports and the batch close, driven event by event as a person and the runtime
would, with no loop and no process."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from firmware.core.effects import (
    Authorize, CheckPin, CloseBatch, CloseSale, DecideOffline, FindForVoid, Log, Print,
    PrintTotals, Show, Void,
)
from firmware.core.events import (
    CardSwiped, CloseDue, CloseFinished, CloseProgress, ConditionChanged, HostAnswered,
    HostBusy, HostOutcomeUnknown, KeyPressed, LinkChanged, OfflineDecided, PinChecked,
    PrintFinished, TimerFired, VoidCandidate, VoidRecorded,
)
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.state import MenuFlow, PinFlow
from firmware.core.machine import Now, Phase, State, initial, step
from tests.test_core_sale import CARD, CFG, T0, keys, record, run, shown

PIN = "4862"
OPS = replace(CFG, pin_set=True)  # every function protected (the default), a PIN set
HASH = "a1" * 32


def only_debug(effects: list[object]) -> bool:
    """The event was not taken: said in the log at debug, and nothing else done."""
    return bool(effects) and all(isinstance(e, Log) and e.level == "debug" for e in effects)


def screens(effects: list[object]) -> list[tuple[str, ...]]:
    return [tuple(e.rows) for e in effects if isinstance(e, Show)]


def of(effects: list[object], kind: type) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


def to_menu_page2(cfg: object = OPS, **kw: object) -> State:
    st, _ = initial(cfg, **kw)  # type: ignore[arg-type]
    st, _ = run(st, KeyPressed("F1"), KeyPressed("F1"))
    assert st.phase == Phase.MENU and st.flow == MenuFlow(page=1)
    return st


def with_pin(st: State, digit: str, function: str) -> tuple[State, list[object]]:
    """Choose a function, key the PIN in, have the runtime accept it."""
    st, eff = run(st, KeyPressed(digit), *keys(PIN, "OK"))
    checks = of(eff, CheckPin)
    assert len(checks) == 1 and checks[0].pin == PIN  # type: ignore[attr-defined]
    assert checks[0].function == function  # type: ignore[attr-defined]
    assert st.phase == Phase.PIN_CHECK
    st, eff2 = run(st, PinChecked(True, function))
    return st, eff + eff2


def refund_record(status: str, code: str = "00", **kw: object) -> SaleRecord:
    return replace(record(status, code, **kw), kind="refund", sale_id=8, invoice=2, batch=1)


# -- the menu -----------------------------------------------------------------------

def test_menu_has_two_pages_and_the_first_is_unchanged() -> None:
    st, _ = initial(OPS)
    st, eff = run(st, KeyPressed("F1"))
    assert screens(eff)[-1] == ("MENU", "1 LAST    2 REPRINT", "3 STATUS  4 REPORT",
                                "F1 MORE  CANCEL=EXIT")
    st, eff = run(st, KeyPressed("F1"))
    assert screens(eff)[-1] == ("MERCHANT", "5 REFUND  6 VOID", "7 X REPORT 8 CLOSE",
                                "9 LAST Z CANCEL=EXIT")
    st, eff = run(st, KeyPressed("F1"))
    assert screens(eff)[-1][0] == "MENU"
    st, eff = run(st, KeyPressed("5"))  # the digits work on either page
    assert st.phase == Phase.PIN and screens(eff)[-1][0] == "SUPERVISOR PIN"
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.MENU and st.flow == MenuFlow(page=1)
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.IDLE


# -- supervisor PIN -----------------------------------------------------------------

def test_pin_is_masked_checked_and_never_shown_or_logged() -> None:
    st = to_menu_page2()
    st, eff = run(st, KeyPressed("6"))
    assert screens(eff)[-1] == ("SUPERVISOR PIN", "", "", "OK=ENTER CANCEL=STOP")
    all_effects: list[object] = list(eff)
    for n, digit in enumerate(PIN, 1):
        st, eff = run(st, KeyPressed(digit))
        assert screens(eff)[-1][1] == "*" * n
        all_effects += eff
    assert "pin=" not in repr(st)  # a state in a log or a traceback holds no PIN
    st, eff = run(st, KeyPressed("CLEAR"))
    assert screens(eff)[-1][1] == "***"
    st, eff2 = run(st, KeyPressed(PIN[-1]), KeyPressed("OK"))
    all_effects += eff + eff2
    check = of(eff2, CheckPin)
    assert check == [CheckPin(PIN, "void")]
    assert PIN not in repr(check[0]) and PIN not in repr(st)
    assert screens(eff2)[-1][:2] == ("SUPERVISOR PIN", "CHECKING PIN")
    assert isinstance(st.flow, PinFlow) and st.flow.pin == ""  # forgotten once sent
    for e in all_effects:
        if isinstance(e, Show):
            assert not any(PIN in row or any(d in row for d in PIN) for row in e.rows[1:3]), e
        if isinstance(e, Log):
            assert PIN not in e.text
        assert PIN not in repr(e)


def test_short_pin_is_refused_before_it_is_checked() -> None:
    st = to_menu_page2()
    st, eff = run(st, KeyPressed("8"), *keys("123", "OK"))
    assert st.phase == Phase.PIN and not of(eff, CheckPin)
    assert screens(eff)[-1][2] == "PIN IS 4-8 DIGITS"
    st, eff = run(st, *keys("456789"))  # nine digits keyed: the ninth is refused
    assert screens(eff)[-1][1] == "********" and screens(eff)[-1][2] == "AT MOST 8 DIGITS"


def test_wrong_pin_and_lockout_return_to_the_menu_with_the_message() -> None:
    st = to_menu_page2()
    st, _ = run(st, KeyPressed("5"), *keys("1111", "OK"))
    st, eff = run(st, PinChecked(False, "refund", "WRONG PIN - 2 LEFT"))
    assert st.phase == Phase.MENU and screens(eff)[-1][3] == "WRONG PIN - 2 LEFT"
    st, _ = run(st, KeyPressed("5"), *keys("1111", "OK"))
    st, eff = run(st, PinChecked(False, "refund", "LOCKED FOR 15 MIN"))
    assert st.phase == Phase.MENU and screens(eff)[-1][3] == "LOCKED FOR 15 MIN"
    assert st.flow == MenuFlow(page=1)  # the function and its PIN are gone


def test_answer_for_another_function_or_after_cancel_is_ignored() -> None:
    st = to_menu_page2()
    st, _ = run(st, KeyPressed("6"), *keys(PIN, "OK"))
    st2, eff = run(st, PinChecked(True, "close"))
    assert st2 is st and only_debug(eff)
    st, _ = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.MENU
    st2, eff = run(st, PinChecked(True, "void"))  # too late: the person left
    assert st2 == st and only_debug(eff)


def test_protected_function_without_a_pin_configured_is_refused() -> None:
    st = to_menu_page2(CFG)  # pin_set False
    for digit in "56789":
        st, eff = run(st, KeyPressed(digit))
        assert st.phase == Phase.MENU and screens(eff)[-1][3] == "NO PIN CONFIGURED"
        assert not of(eff, CheckPin) and not of(eff, PrintTotals)


def test_unprotected_function_asks_no_pin() -> None:
    st = to_menu_page2(replace(CFG, protect=frozenset({"refund", "void", "close"})))
    st, eff = run(st, KeyPressed("7"))
    assert of(eff, PrintTotals) == [PrintTotals("X")] and not of(eff, CheckPin)
    st, eff = run(st, KeyPressed("9"))
    assert of(eff, PrintTotals) == [PrintTotals("Z")]


def test_pin_entry_times_out_like_amount_entry() -> None:
    st = to_menu_page2()
    st, _ = run(st, KeyPressed("8"), *keys("12"))
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE and st.flow is None


# -- refund -------------------------------------------------------------------------

def to_refund_card(cfg: object = OPS) -> State:
    st = to_menu_page2(cfg)
    st, eff = with_pin(st, "5", "refund")
    assert st.phase == Phase.AMOUNT and screens(eff)[-1][1].startswith("REFUND")
    st, eff = run(st, *keys("1250", "OK"))
    assert st.phase == Phase.WAIT_CARD
    assert screens(eff)[-1][1:3] == ("REFUND     EUR 12.50", "SWIPE CARD")
    return st


def test_refund_is_authorized_online_and_says_refund_approved() -> None:
    st = to_refund_card()
    st, eff = run(st, CardSwiped(CARD, HASH))
    auth = of(eff, Authorize)
    assert len(auth) == 1 and auth[0].request.kind == "refund"  # type: ignore[attr-defined]
    assert auth[0].request.amount == 1250  # type: ignore[attr-defined]
    st, eff = run(st, HostAnswered(refund_record(SaleStatus.APPROVED)))
    assert screens(eff)[-1][:3] == ("REFUND APPROVED", "REFUND     EUR 12.50", "AUTH 123456")
    prints = of(eff, Print)
    assert len(prints) == 1 and prints[0].job == "sale"  # type: ignore[attr-defined]
    assert "REFUND" in "\n".join(prints[0].lines)  # type: ignore[attr-defined]
    st, eff = run(st, PrintFinished(True))
    assert st.phase == Phase.RESULT and "REFUND APPROVED" in shown(eff)
    st, _ = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE and st.flow is None
    assert st.recent == ()  # a refund is never a duplicate candidate


def test_largest_refund_shows_its_whole_amount() -> None:
    st = to_menu_page2(replace(OPS, max_amount=999999999999))
    st, _ = with_pin(st, "5", "refund")
    st, eff = run(st, *keys("999999999999", "OK"))
    # no room for the word: the amount alone, in the amount's columns
    assert screens(eff)[-1][1] == "EUR 9999999999.99".rjust(20)


def test_refund_is_never_approved_offline() -> None:
    # link down: decided at once, refused, whatever the offline rules would allow
    st, _ = run(to_refund_card(), LinkChanged("DOWN"))
    st, eff = run(st, CardSwiped(CARD, HASH))
    assert not of(eff, Authorize)
    decide = of(eff, DecideOffline)
    assert len(decide) == 1 and not decide[0].approved  # type: ignore[attr-defined]
    assert decide[0].reason == "REFUND NEEDS HOST"  # type: ignore[attr-defined]
    failed = refund_record(SaleStatus.FAILED, "", reason="REFUND NEEDS HOST")
    st, eff = run(st, OfflineDecided(failed))
    assert screens(eff)[-1] == ("NOT COMPLETED", "HOST OFFLINE", "REFUND NEEDS HOST",
                                "PRINTING...")
    st, eff = run(st, PrintFinished(True))
    assert screens(eff)[-1][3] == "NOT CREDITED"
    # a busy host, retries spent: the same
    st = to_refund_card()
    st, _ = run(st, CardSwiped(CARD, HASH))
    for _ in range(3):
        st, eff = run(st, HostBusy(8, "91"))
        if st.phase == Phase.BUSY_WAIT:
            st, eff = run(st, TimerFired("phase", st.token))
    decide = of(eff, DecideOffline)
    assert len(decide) == 1 and not decide[0].approved  # type: ignore[attr-defined]


def test_refund_unknown_outcome_is_reversed_as_for_a_sale() -> None:
    st, _ = run(to_refund_card(), CardSwiped(CARD, HASH))
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.AUTHORIZING and "PLEASE WAIT" in shown(eff)
    st, eff = run(st, HostOutcomeUnknown(refund_record(SaleStatus.NOT_COMPLETED), "timeout"))
    assert screens(eff)[-1][:3] == ("NO RESPONSE", "REFUND     EUR 12.50", "NOT CREDITED")
    assert not of(eff, DecideOffline) and len(of(eff, Print)) == 1
    assert any(isinstance(e, Log) and "reversal" in e.text for e in eff)


def test_refund_cancelled_while_waiting_to_retry_says_refund() -> None:
    st, _ = run(to_refund_card(), CardSwiped(CARD, HASH))
    st, _ = run(st, HostBusy(8, "96"))
    st, eff = run(st, KeyPressed("CANCEL"))
    assert of(eff, CloseSale) == [CloseSale(8, "REFUND CANCELLED")]
    st, eff = run(to_refund_card(), KeyPressed("CANCEL"))
    assert st.phase == Phase.IDLE and "REFUND CANCELLED" in shown(eff)


def test_refund_is_refused_while_a_condition_stops_new_sales() -> None:
    st = to_menu_page2()
    st, _ = run(st, ConditionChanged("power", "MAINS POWER LOST", blocks_sales=True))
    st, eff = run(st, KeyPressed("5"))
    assert st.phase == Phase.MENU and screens(eff)[-1][3] == "MAINS POWER LOST"
    assert not of(eff, CheckPin)


# -- duplicate guard ----------------------------------------------------------------

def approved_purchase(st: State, amount: str = "1250") -> State:
    st, _ = run(st, *keys(amount, "OK"), CardSwiped(CARD, HASH))
    st, _ = run(st, HostAnswered(record(SaleStatus.APPROVED, pan_hash=HASH)))
    st, _ = run(st, PrintFinished(True))
    st, _ = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE
    return st


def test_same_card_and_amount_asks_before_it_is_sent_and_ok_proceeds() -> None:
    st, _ = initial(OPS)
    st = approved_purchase(st)
    assert [r.sale_id for r in st.recent] == [7]
    st, _ = run(st, *keys("1250", "OK"))
    st, eff = run(st, CardSwiped(CARD, HASH))
    assert st.phase == Phase.DUPLICATE and not of(eff, Authorize)
    assert screens(eff)[-1] == ("POSSIBLE DUPLICATE", "SALE       EUR 12.50", "OK TO PROCEED",
                                "CANCEL=STOP")
    st, eff = run(st, KeyPressed("OK"))
    auth = of(eff, Authorize)
    assert st.phase == Phase.AUTHORIZING and len(auth) == 1
    assert auth[0].request.card == CARD and auth[0].request.kind == "purchase"  # type: ignore


def test_duplicate_cancel_and_timeout_stop_the_sale() -> None:
    st, _ = initial(OPS)
    st = approved_purchase(st)
    st, _ = run(st, *keys("1250", "OK"), CardSwiped(CARD, HASH))
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.IDLE and "SALE CANCELLED" in shown(eff)
    assert not of(eff, Authorize)
    st, _ = run(st, *keys("1250", "OK"), CardSwiped(CARD, HASH))
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE and not of(eff, Authorize)


def test_duplicate_with_the_link_down_goes_to_the_offline_rules_after_ok() -> None:
    st, _ = initial(OPS)
    st = approved_purchase(st)
    st, _ = run(st, LinkChanged("DOWN"), *keys("1250", "OK"), CardSwiped(CARD, HASH))
    st, eff = run(st, KeyPressed("OK"))
    decide = of(eff, DecideOffline)
    assert len(decide) == 1 and decide[0].approved  # type: ignore[attr-defined]


def test_no_prompt_for_another_amount_another_card_or_after_the_window() -> None:
    st, _ = initial(OPS)
    st = approved_purchase(st)
    st, eff = run(st, *keys("1251", "OK"), CardSwiped(CARD, HASH))
    assert st.phase == Phase.AUTHORIZING
    st, _ = initial(OPS)
    st = approved_purchase(st)
    st, eff = run(st, *keys("1250", "OK"), CardSwiped(CARD, "b2" * 32))
    assert st.phase == Phase.AUTHORIZING
    st, _ = initial(OPS)
    st = approved_purchase(st)
    later = Now(mono=0.0, local=T0 + timedelta(minutes=OPS.duplicate_minutes, seconds=1))
    st, _ = run(st, *keys("1250", "OK"))
    st, eff = step(st, CardSwiped(CARD, HASH), later)
    assert st.phase == Phase.AUTHORIZING
    st, _ = initial(replace(OPS, duplicate_minutes=0))  # the guard switched off
    st = approved_purchase(st)
    st, eff = run(st, *keys("1250", "OK"), CardSwiped(CARD, HASH))
    assert st.phase == Phase.AUTHORIZING


def test_duplicate_memory_comes_from_the_journal_at_start_and_offline_approvals() -> None:
    earlier = record(SaleStatus.APPROVED, pan_hash=HASH)
    declined = replace(record(SaleStatus.DECLINED, "05", pan_hash=HASH), sale_id=9, amount=99)
    st, _ = initial(OPS, recent=[earlier, declined])
    assert [r.sale_id for r in st.recent] == [7]
    st, _ = run(st, *keys("1250", "OK"), CardSwiped(CARD, HASH))
    assert st.phase == Phase.DUPLICATE
    # an offline approval is remembered from the sale's own swipe
    st, _ = initial(OPS)
    st, _ = run(st, LinkChanged("DOWN"), *keys("1000", "OK"), CardSwiped(CARD, HASH))
    offline = replace(record(SaleStatus.OFFLINE_APPROVED, "", approval="Y30011"), sale_id=11,
                      amount=1000)
    st, _ = run(st, OfflineDecided(offline), PrintFinished(True))
    assert [(r.sale_id, r.pan_hash, r.amount) for r in st.recent] == [(11, HASH, 1000)]


def test_a_voided_sale_leaves_the_duplicate_memory() -> None:
    st, _ = initial(OPS, recent=[record(SaleStatus.APPROVED, pan_hash=HASH)])
    voided = replace(record(SaleStatus.APPROVED, pan_hash=HASH), voided=True)
    st, _ = run(st, VoidRecorded(voided, True))  # e.g. recorded just before a restart
    assert st.recent == ()
    st, _ = run(st, *keys("1250", "OK"), CardSwiped(CARD, HASH))
    assert st.phase == Phase.AUTHORIZING


# -- void ---------------------------------------------------------------------------

SALE = replace(record(SaleStatus.APPROVED, pan_hash=HASH), batch=1, invoice=12)


def to_void_pick() -> State:
    st = to_menu_page2(last=SALE, recent=[SALE])
    st, eff = with_pin(st, "6", "void")
    assert st.phase == Phase.VOID_PICK
    assert screens(eff)[-1] == ("VOID", "INVOICE NO: ", "", "OK=LAST CANCEL=STOP")
    return st


def test_void_by_invoice_number_confirm_record_and_print() -> None:
    st = to_void_pick()
    st, eff = run(st, *keys("12"))
    assert screens(eff)[-1][1] == "INVOICE NO: 12"
    st, eff = run(st, KeyPressed("OK"))
    assert of(eff, FindForVoid) == [FindForVoid(12)] and st.phase == Phase.VOID_FIND
    st, eff = run(st, VoidCandidate(SALE))
    assert screens(eff)[-1] == ("VOID #12?      12:00", "SALE       EUR 12.50",
                                "****0010 AUTH 123456", "OK=VOID CANCEL=NO")
    st, eff = run(st, KeyPressed("OK"))
    assert of(eff, Void) == [Void(7)] and st.phase == Phase.VOIDING
    st, eff = run(st, KeyPressed("CANCEL"), KeyPressed("5"), CardSwiped(CARD, HASH))
    assert st.phase == Phase.VOIDING  # nothing else is taken while it is recorded
    assert not of(eff, Authorize) and not of(eff, Void)
    st, eff = run(st, VoidRecorded(replace(SALE, voided=True), True))
    assert st.phase == Phase.VOIDED
    assert screens(eff)[-1][:3] == ("VOIDED", "SALE       EUR 12.50", "PRINTING...")
    prints = of(eff, Print)
    assert len(prints) == 1 and prints[0].job == "void"  # type: ignore[attr-defined]
    assert "VOID" in "\n".join(prints[0].lines)  # type: ignore[attr-defined]
    assert st.recent == () and st.last is not None and st.last.voided
    st, eff = run(st, PrintFinished(True, job="void"))
    assert screens(eff)[-1][2] == "VOID PRINTED"
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE
    st, eff = run(st, KeyPressed("F1"), KeyPressed("1"))
    assert screens(eff)[-1][3] == "#7 SALE VOIDED"


def test_void_of_the_last_transaction_with_ok_alone() -> None:
    st = to_void_pick()
    st, eff = run(st, KeyPressed("OK"))
    assert of(eff, FindForVoid) == [FindForVoid(None)]
    assert screens(eff)[-1][1] == "LAST TRANSACTION"


def test_void_problems_are_shown_and_another_number_may_be_keyed() -> None:
    st = to_void_pick()
    st, _ = run(st, *keys("3", "OK"))
    st, eff = run(st, VoidCandidate(None, "USE REFUND"))
    assert st.phase == Phase.VOID_PICK and screens(eff)[-1] == ("VOID", "INVOICE NO: ",
                                                                "USE REFUND",
                                                                "OK=LAST CANCEL=STOP")
    st, _ = run(st, *keys("12", "OK"))
    st, eff = run(st, VoidCandidate(replace(SALE, voided=True)))
    assert st.phase == Phase.VOID_PICK and screens(eff)[-1][2] == "ALREADY VOIDED"
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.MENU


def test_void_declined_at_confirmation_and_a_late_problem() -> None:
    st = to_void_pick()
    st, _ = run(st, KeyPressed("OK"), VoidCandidate(SALE))
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.MENU and screens(eff)[-1][3] == "NOT VOIDED"
    assert not of(eff, Void)
    st, _ = run(st, KeyPressed("6"), *keys(PIN, "OK"), PinChecked(True, "void"))
    st, _ = run(st, KeyPressed("OK"), VoidCandidate(SALE), KeyPressed("OK"))
    st, eff = run(st, VoidCandidate(None, "ALREADY VOIDED"))  # e.g. voided meanwhile
    assert st.phase == Phase.MENU and screens(eff)[-1][3] == "ALREADY VOIDED"


def test_void_of_an_offline_sale_taken_off_the_queue() -> None:
    offline = replace(SALE, status=SaleStatus.OFFLINE_APPROVED, approval="Y30007")
    st = to_void_pick()
    st, _ = run(st, KeyPressed("OK"), VoidCandidate(offline), KeyPressed("OK"))
    st, eff = run(st, VoidRecorded(replace(offline, voided=True), False))
    assert st.phase == Phase.VOIDED and len(of(eff, Print)) == 1
    st, eff = run(st, PrintFinished(False, "PAPER OUT", job="void"))
    assert screens(eff)[-1][2] == "PAPER OUT"
    st, _ = run(st, KeyPressed("OK"))
    assert st.phase == Phase.IDLE


# -- reports ------------------------------------------------------------------------

def test_x_report_and_last_z_print_and_say_so() -> None:
    st = to_menu_page2()
    st, eff = with_pin(st, "7", "x_report")
    assert of(eff, PrintTotals) == [PrintTotals("X")]
    assert st.phase == Phase.MENU and screens(eff)[-1][3] == "PRINTING X REPORT"
    st, eff = run(st, PrintFinished(True, job="x-report"))
    assert screens(eff)[-1][3] == "X REPORT PRINTED"
    st, eff = run(st, KeyPressed("9"), *keys(PIN, "OK"))
    assert of(eff, CheckPin) == [CheckPin(PIN, "x_report")]  # the last Z is a report too
    st, eff = run(st, PinChecked(True, "x_report"))
    assert of(eff, PrintTotals) == [PrintTotals("Z")]
    assert screens(eff)[-1][3] == "PRINTING LAST Z"
    st, eff = run(st, PrintFinished(False, "NO Z REPORT YET", job="z-report"))
    assert screens(eff)[-1][3] == "NO Z REPORT YET"


# -- batch close --------------------------------------------------------------------

def to_closing() -> tuple[State, list[object]]:
    st = to_menu_page2()
    st, eff = with_pin(st, "8", "close")
    assert st.phase == Phase.CLOSE_CONFIRM and screens(eff)[-1][0] == "CLOSE BATCH?"
    assert screens(eff)[-1][3] == "OK=CLOSE CANCEL=NO"
    st, eff = run(st, KeyPressed("OK"))
    assert of(eff, CloseBatch) == [CloseBatch(scheduled=False)]
    assert st.phase == Phase.CLOSING
    return st, eff


def test_close_from_the_menu_in_balance() -> None:
    st, eff = to_closing()
    assert screens(eff)[-1][0] == "CLOSING BATCH" and screens(eff)[-1][2] == "PLEASE WAIT"
    st, eff = run(st, CloseProgress("UPLOADING 3 OF 10"))
    assert screens(eff)[-1][1] == "UPLOADING 3 OF 10"
    st, eff = run(st, KeyPressed("CANCEL"), KeyPressed("5"), KeyPressed("OK"),
                  CardSwiped(CARD, HASH))
    assert st.phase == Phase.CLOSING and not of(eff, Authorize)  # no cancel, no sale
    st, eff = run(st, CloseFinished(True, 3, balanced=True))
    assert screens(eff)[-1] == ("BATCH 3 CLOSED", "IN BALANCE", "PRINTING REPORT", "")
    st, eff = run(st, PrintFinished(True, job="z-report"))
    assert screens(eff)[-1][2] == "REPORT PRINTED"
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE and "ENTER AMOUNT" in shown(eff)


def test_close_out_of_balance_tells_to_call_the_help_desk() -> None:
    st, _ = to_closing()
    st, eff = run(st, CloseFinished(True, 3, balanced=False))
    assert screens(eff)[-1][:3] == ("BATCH 3 CLOSED", "OUT OF BALANCE", "CALL HELP DESK")
    st, eff = run(st, KeyPressed("OK"))
    assert st.phase == Phase.IDLE and screens(eff)[-1][1:3] == ("BATCH 3 CLOSED",
                                                                "OUT OF BALANCE")


def test_close_not_done_says_why_and_stays_as_a_notice() -> None:
    st, _ = to_closing()
    st, eff = run(st, CloseFinished(False, 3, message="HOST OFFLINE"))
    assert screens(eff)[-1] == ("CLOSE NOT DONE", "HOST OFFLINE", "TRY AGAIN LATER", "")
    st, eff = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE
    assert screens(eff)[-1][1:3] == ("BATCH NOT CLOSED", "HOST OFFLINE")
    st, eff = run(st, KeyPressed("CANCEL"))
    assert "BATCH NOT CLOSED" not in shown(eff)


def test_close_confirmation_can_be_declined() -> None:
    st = to_menu_page2()
    st, _ = with_pin(st, "8", "close")
    st, eff = run(st, KeyPressed("CANCEL"))
    assert st.phase == Phase.MENU and not of(eff, CloseBatch)
    assert screens(eff)[-1][3] == "BATCH NOT CLOSED"


def test_scheduled_close_starts_only_when_idle_and_asks_no_pin() -> None:
    st, _ = initial(OPS)
    st, eff = run(st, CloseDue())
    assert of(eff, CloseBatch) == [CloseBatch(scheduled=True)] and not of(eff, CheckPin)
    assert st.phase == Phase.CLOSING and screens(eff)[-1][3] == "DAILY CLOSE"
    st, eff = run(st, CloseFinished(True, 1))
    st, _ = run(st, TimerFired("phase", st.token))
    assert st.phase == Phase.IDLE
    # mid-sale, in the menu, while authorizing: ignored (the runtime asks again later)
    st, _ = initial(OPS)
    for prefix in ([*keys("12")], [*keys("12", "OK")], [*keys("12", "OK"), CardSwiped(CARD)],
                   [KeyPressed("F1")]):
        st2, _ = run(st, *prefix)
        st3, eff = run(st2, CloseDue())
        assert st3 == st2 and only_debug(eff), prefix


def test_scheduled_close_keeps_a_recovery_notice() -> None:
    st, _ = initial(OPS, notice="LAST SALE REVERSED\nNOT CHARGED")
    st, _ = run(st, CloseDue(), CloseFinished(True, 1))
    st, eff = run(st, TimerFired("phase", st.token))
    assert screens(eff)[-1][1] == "LAST SALE REVERSED"
