"""What the 20x4 display shows in each phase. Pure: state in, four rows out."""

from __future__ import annotations

from datetime import datetime

from firmware.core.effects import Show
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.state import CloseFlow, MenuFlow, Phase, PinFlow, SaleFlow, State, VoidFlow
from firmware.core.texts import CARD_DECLINED, money, outcome, two_cols

W = 20


def rows(*lines: str) -> tuple[str, str, str, str]:
    padded = [line[:W] for line in lines] + [""] * 4
    return (padded[0], padded[1], padded[2], padded[3])


# The top row's flag for the state of the link to the bank (README, "Screens").
LINK_FLAGS = {"UP": "", "DEGRADED": "BANK SLOW", "DOWN": "OFFLINE"}
LINK_WORDS = {"UP": "ONLINE", "DEGRADED": "SLOW TO ANSWER", "DOWN": "OFFLINE"}


def path_tag(state: State) -> str:
    """The path to the host in use: "ETH", or "4G" with signal bars ("4G|||." = 3 of 4)."""
    if state.path == "4G":
        bars = max(0, min(4, state.bars))
        return "4G" + "|" * bars + "." * (4 - bars)
    return state.path


def _header(state: State, title: str) -> str:
    """The title, then on the right the path to the host (when a modem is configured) and
    the link's flag, as much of them as fits."""
    flag = LINK_FLAGS.get(state.link, state.link)
    tag = path_tag(state)
    room = W - len(title) - 1
    right = next((r for r in (f"{tag} {flag}".strip(), f"{state.path} {flag}".strip(), flag)
                  if len(r) <= room), "")
    return title + " " * (W - len(title) - len(right)) + right if right else title


def _bottom(state: State, left: str) -> str:
    """The last row: a hint (or a word), and the battery level at the right when there is a
    gauge and it fits. Every screen of a sale keeps the level in the same cells as idle."""
    if state.battery is None:
        return left
    level = f"{'CHG' if state.charging else 'BAT'} {max(0, min(100, state.battery))}%"
    if len(left) + 1 + len(level) > W:
        return left
    return left + " " * (W - len(left) - len(level)) + level


def amount_line(kind: str, amount: int, cur: str) -> str:
    """The amount row of a sale or refund: its word on the left, the amount right-aligned,
    in the same row and columns from the amount's entry to the result (the display
    rewrites only what changes); the amount alone, right-aligned, when both do not fit."""
    label = "REFUND" if kind == "refund" else "SALE"
    return _labelled(label, money(amount, cur))


def _idle_lines(state: State) -> list[str]:
    """What the idle screen has to say: planned maintenance, a notice, else an alert, else
    a link fault."""
    if state.banner:
        return state.banner.split("\n")
    if state.notice:
        return state.notice.split("\n")
    if state.alert:
        return state.alert.split("\n")
    stop = next((text for _src, text, blocks in state.conditions if blocks), "")
    if stop:
        return [stop, "NO NEW SALES"]
    if state.untrusted:
        return ["HOST NOT TRUSTED"]
    if state.conditions:
        return [state.conditions[0][1]]
    return [""]


def show(state: State) -> Show:
    cur = state.cfg.currency_code
    phase = state.phase
    if phase == Phase.IDLE:
        said = _idle_lines(state)
        if said[-1:] == ["NO NEW SALES"]:
            return Show(rows(_header(state, "POSTERM"), said[0], said[1],
                             _bottom(state, "F1 MENU")))
        if len(said) > 1:
            return Show(rows(_header(state, "POSTERM"), said[0], said[1],
                             _bottom(state, "ENTER AMOUNT")))
        return Show(rows(_header(state, "POSTERM"), said[0], "ENTER AMOUNT",
                         _bottom(state, "F1 MENU")))
    flow = state.flow
    top = _header(state, "POSTERM")  # the idle screen's top row, kept through a sale
    if phase == Phase.AMOUNT and isinstance(flow, SaleFlow):
        amount = int(flow.digits) if flow.digits else 0
        return Show(rows(top, amount_line(flow.kind, amount, cur), state.message,
                         _bottom(state, "OK=CONFIRM")))
    amount_row = amount_line(state.sale.kind, state.sale.amount, cur) if state.sale else ""
    if phase == Phase.DUPLICATE:
        return Show(rows("POSSIBLE DUPLICATE", amount_row, "OK TO PROCEED",
                         "CANCEL=STOP"))
    if phase == Phase.WAIT_CARD:  # a bad read or a reader fault takes the top row
        reader = next((t for src, t, _b in state.conditions if src == "card_reader"), "")
        chip = state.cfg.chip is not None and not (isinstance(flow, SaleFlow) and flow.fallback)
        return Show(rows(state.message or reader or top, amount_row,
                         "SWIPE OR INSERT CARD" if chip else "SWIPE CARD",
                         _bottom(state, "CANCEL=STOP")))
    if phase in (Phase.CHIP_READING, Phase.CHIP_COMPLETING):  # PLEASE WAIT as AUTHORIZING's
        return Show(rows(state.message or top, amount_row, "DO NOT REMOVE CARD",
                         _bottom(state, "PLEASE WAIT")))
    if phase == Phase.CHIP_CHOOSE and isinstance(flow, SaleFlow):
        labels = [f"{i} {label}" for i, label in enumerate(flow.labels[:3], 1)]
        return Show(rows(f"SELECT 1-{min(3, len(flow.labels))}  CANCEL=NO", *labels))
    if phase == Phase.PIN_ENTRY and isinstance(flow, SaleFlow):  # one star per digit
        title = "LAST PIN TRY" if flow.pin_tries == 1 else "ENTER PIN"
        return Show(rows(title, amount_row, "*" * flow.pin_count,
                         state.message or "OK=ENTER CANCEL=STOP"))
    if phase == Phase.REMOVE_CARD:  # the last words: why it ended, else its result
        said = state.message.split("\n")[:2] if state.message else \
            list(result_lines(state.result)) if state.result is not None else [""]
        said += [""] * (2 - len(said))
        return Show(rows(said[0], amount_row, said[1], _bottom(state, "REMOVE CARD")))
    if phase == Phase.AUTHORIZING:
        return Show(rows(top, amount_row, "AUTHORIZING",
                         _bottom(state, state.message or "PLEASE WAIT")))
    if phase == Phase.BUSY_WAIT:
        return Show(rows(state.message or top, amount_row, "HOST BUSY - RETRYING",
                         _bottom(state, "CANCEL=STOP")))
    if phase in (Phase.PRINTING, Phase.RESULT) and state.result is not None:
        return Show(rows(*_result_rows(state, state.result)))
    menu = flow if isinstance(flow, MenuFlow) else MenuFlow()
    if phase == Phase.MENU and menu.page == 1:
        return Show(rows(_header(state, "MERCHANT"), "5 REFUND  6 VOID", "7 X REPORT 8 CLOSE",
                         state.message or "9 LAST Z CANCEL=EXIT"))
    if phase == Phase.MENU:
        return Show(rows(_header(state, "MENU"), "1 LAST    2 REPRINT", "3 STATUS  4 REPORT",
                         state.message or "F1 MORE  CANCEL=EXIT"))
    if phase == Phase.STATUS:
        return Show(rows(*_status_rows(state, menu)))
    merchant = _merchant_rows(state)
    if merchant is not None:
        return Show(rows(*merchant))
    return Show(rows("POSTERM", "", "", ""))


def _merchant_rows(state: State) -> tuple[str, str, str, str] | None:
    """The screens of the merchant's functions (merchant.py): PIN, void, batch close."""
    phase, cur, flow = state.phase, state.cfg.currency_code, state.flow
    if phase == Phase.PIN and isinstance(flow, PinFlow):  # the digits never: one star each
        return ("SUPERVISOR PIN", "*" * len(flow.pin), state.message,
                "OK=ENTER CANCEL=STOP")
    if phase == Phase.PIN_CHECK:
        return ("SUPERVISOR PIN", "CHECKING PIN", "PLEASE WAIT", "")
    void = flow if isinstance(flow, VoidFlow) else VoidFlow()
    if phase == Phase.VOID_PICK:
        return ("VOID", f"INVOICE NO: {void.digits}", state.message,
                "OK=LAST CANCEL=STOP")
    if phase == Phase.VOID_FIND:
        which = f"INVOICE {void.digits}" if void.digits else "LAST TRANSACTION"
        return ("VOID", which, "LOOKING UP...", "")
    rec = void.candidate
    if phase == Phase.VOID_CONFIRM and rec is not None:
        return (two_cols(f"VOID #{rec.invoice}?", rec.local.strftime("%H:%M"), W),
                _labelled(_kind_word(rec), money(rec.amount, cur)), _card_words(rec),
                "OK=VOID CANCEL=NO")
    if phase == Phase.VOIDING and rec is not None:
        return (f"VOIDING #{rec.invoice}", _labelled(_kind_word(rec), money(rec.amount, cur)),
                state.message or "PLEASE WAIT", "")
    if phase == Phase.VOIDED and rec is not None:
        return ("VOIDED", _labelled(_kind_word(rec), money(rec.amount, cur)),
                state.message or "PRINTING...", f"INVOICE #{rec.invoice}")
    if phase == Phase.CLOSE_CONFIRM:
        return ("CLOSE BATCH?", "SENDS THE TOTALS", "TO THE BANK", "OK=CLOSE CANCEL=NO")
    close = flow if isinstance(flow, CloseFlow) else CloseFlow()
    if phase == Phase.CLOSING:
        return ("CLOSING BATCH", state.message, "PLEASE WAIT",
                {"daily": "DAILY CLOSE", "resumed": "RESUMED CLOSE"}.get(close.origin, ""))
    done = close.done
    if phase == Phase.CLOSED and done is not None:
        if not done.ok:
            return ("CLOSE NOT DONE", done.message or "", "TRY AGAIN LATER", "")
        if not done.balanced:
            return (f"BATCH {done.batch} CLOSED", "OUT OF BALANCE", "CALL HELP DESK",
                    state.message)
        return (f"BATCH {done.batch} CLOSED", "IN BALANCE", state.message, "")
    return None


def _labelled(label: str, amount: str) -> str:
    """'REFUND     EUR 12.50'; the amount alone, right-aligned in the same columns, when both
    do not fit (never cut short)."""
    return two_cols(label, amount, W) if len(label) + 1 + len(amount) <= W else amount.rjust(W)


def _kind_word(rec: SaleRecord) -> str:
    return "REFUND" if rec.kind == "refund" else "SALE"


def _card_words(rec: SaleRecord) -> str:
    """The card's last four digits and the approval code: enough to tell which it is."""
    last4 = rec.pan_masked[-4:] if len(rec.pan_masked) >= 4 else rec.pan_masked
    return f"****{last4} AUTH {rec.approval}" if rec.approval else f"CARD ****{last4}"


def _result_rows(state: State, rec: SaleRecord) -> tuple[str, str, str, str]:
    """The outcome in the top row, the amount where it stood since its entry, the second
    word (the approval code, the reason), and PRINTING... (then the printer's fault, if
    any) before the battery level; a sale not completed says why instead of its amount."""
    printing = "PRINTING..." if state.phase == Phase.PRINTING else state.message
    amount_row = amount_line(rec.kind, rec.amount, state.cfg.currency_code)
    if rec.status == SaleStatus.FAILED:
        # why it could not go online, then why the offline rules refused it (what the
        # cashier can act on: PIN REQUIRED, CARD EXPIRED...), and the money word once
        # the slip is out: the three say more than the amount, which gives its row up
        nothing = "NOT CREDITED" if rec.kind == "refund" else "NOT CHARGED"
        why = list(dict.fromkeys(x for x in (state.cause, rec.reason or nothing) if x))
        second = why[1] if len(why) > 1 else nothing
        last = printing or ("" if second == nothing else nothing)  # said once is enough
        return "NOT COMPLETED", why[0], second, _bottom(state, last)
    top, second = result_lines(rec)
    if not printing and state.chip_in:
        printing = "REMOVE CARD"
    return top, amount_row, second, _bottom(state, printing)


def _status_rows(state: State, menu: MenuFlow) -> tuple[str, str, str, str]:
    if menu.status_page == 1:
        return _device_rows(state)
    q = state.queue
    link = "NOT TRUSTED" if state.untrusted else LINK_WORDS.get(state.link, state.link)
    if q.refused:
        last = f"REFUSED {q.refused} UNPAID"
    elif q.oldest is not None:
        last = f"OLDEST {age_words(menu.seen, q.oldest)} AGO"
    else:
        last = "NOTHING TO SEND"
    return (f"BANK {link}", f"UNSENT SALES {q.count}",
            f"AMOUNT {money(q.total, state.cfg.currency_code)}", last)


def _device_rows(state: State) -> tuple[str, str, str, str]:
    """The second status page (OK turns to it): the path to the host, the modem, the
    battery, and the first standing condition."""
    path = {"ETH": "ETHERNET", "4G": "4G MODEM"}.get(state.path, state.path or "ETHERNET")
    modem = state.path_detail or ("NO MODEM" if not state.path else "")
    if state.battery is None:
        power = "NO BATTERY GAUGE"
    else:
        power = f"BATTERY {state.battery}%{' CHARGING' if state.charging else ''}"
    cond = state.conditions[0][1] if state.conditions else "NO DEVICE FAULT"
    return (f"PATH {path}", modem, power, cond)


def age_words(now: datetime, then: datetime) -> str:
    """'3 MIN', '5 H', '2 DAYS': how long ago, in words a cashier reads at a glance."""
    minutes = max(0, int((now - then).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} MIN"
    if minutes < 48 * 60:
        return f"{minutes // 60} H"
    return f"{minutes // (24 * 60)} DAYS"


def result_lines(rec: SaleRecord) -> tuple[str, str]:
    """The two rows that tell a person how a sale (or a refund) ended."""
    refund = rec.kind == "refund"
    if rec.status == SaleStatus.APPROVED:
        return "REFUND APPROVED" if refund else "APPROVED", f"AUTH {rec.approval}"
    if rec.status == SaleStatus.OFFLINE_APPROVED:
        return "APPROVED OFFLINE", f"AUTH {rec.approval}"
    if rec.status == SaleStatus.DECLINED and rec.reason == CARD_DECLINED:
        return CARD_DECLINED, "NOT CHARGED"
    if rec.status == SaleStatus.DECLINED:
        out = outcome(rec.response_code)
        return out.headline, out.reason or f"CODE {rec.response_code}"
    if rec.status == SaleStatus.NOT_COMPLETED:
        return "NO RESPONSE", "NOT CREDITED" if refund else "NOT CHARGED"
    if rec.status == SaleStatus.OFFLINE_REFUSED:
        return "REFUSED BY HOST", f"{rec.approval} UNPAID"
    return "NOT COMPLETED", rec.reason or ("NOT CREDITED" if refund else "NOT CHARGED")


def last_sale_line(rec: SaleRecord | None) -> str:
    if rec is None:
        return "NO SALES YET"
    top, _ = result_lines(rec)
    if rec.voided:
        top = f"{_kind_word(rec)} VOIDED"
    return f"#{rec.sale_id} {top}"[:W]
