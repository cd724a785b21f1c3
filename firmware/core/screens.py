"""What the 20x4 display shows in each phase. Pure: state in, four rows out."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from firmware.core.effects import Show
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.texts import money, outcome

if TYPE_CHECKING:
    from firmware.core.sale import State

W = 20


def rows(*lines: str) -> tuple[str, str, str, str]:
    padded = [line[:W] for line in lines] + [""] * 4
    return (padded[0], padded[1], padded[2], padded[3])


def _header(state: State, title: str) -> str:
    flag = {"UP": "", "DEGRADED": "SLOW", "DOWN": "OFFLINE"}.get(state.link, state.link)
    space = W - len(title) - len(flag)
    return title + " " * max(1, space) + flag if flag else title


def show(state: State) -> Show:
    from firmware.core.sale import Phase

    cur = state.cfg.currency_code
    phase = state.phase
    if phase == Phase.IDLE:
        notice = state.notice.split("\n")
        if len(notice) > 1:
            return Show(rows(_header(state, "POSTERM"), notice[0], notice[1], "ENTER AMOUNT"))
        return Show(rows(_header(state, "POSTERM"), notice[0], "ENTER AMOUNT", "F1 MENU"))
    if phase == Phase.AMOUNT:
        amount = int(state.digits) if state.digits else 0
        return Show(rows("SALE", money(amount, cur).rjust(W), state.message,
                         "OK=CONFIRM"))
    amount_row = money(state.sale.amount, cur) if state.sale else ""
    if phase == Phase.WAIT_CARD:
        return Show(rows(amount_row, "SWIPE CARD", state.message, "CANCEL=STOP"))
    if phase == Phase.AUTHORIZING:
        return Show(rows(amount_row, "AUTHORIZING", state.message or "PLEASE WAIT", ""))
    if phase == Phase.BUSY_WAIT:
        return Show(rows(amount_row, "HOST BUSY — RETRYING", state.message or "PLEASE WAIT",
                         "CANCEL=STOP"))
    if phase in (Phase.PRINTING, Phase.RESULT) and state.result is not None:
        top, second = result_lines(state.result)
        third = "PRINTING..." if phase == Phase.PRINTING else state.message
        return Show(rows(top, second, third, money(state.result.amount, cur)))
    if phase == Phase.MENU:
        return Show(rows(_header(state, "MENU"), "1 LAST    2 REPRINT", "3 STATUS  4 REPORT",
                         state.message or "CANCEL=EXIT"))
    if phase == Phase.STATUS:
        q = state.queue
        age = "" if q.oldest is None else \
            f" {max(0, int((now_hint(state) - q.oldest).total_seconds() // 60))}M"
        return Show(rows(f"LINK {state.link}", f"QUEUE {q.count}{age}",
                         money(q.total, cur), f"REFUSED {q.refused}"))
    return Show(rows("POSTERM", "", "", ""))


def now_hint(state: State) -> datetime:
    """The time of the last event the core saw (screens read no clock)."""
    return state.seen


def result_lines(rec: SaleRecord) -> tuple[str, str]:
    """The two rows that tell a person how a sale ended."""
    if rec.status == SaleStatus.APPROVED:
        return "APPROVED", f"AUTH {rec.approval}"
    if rec.status == SaleStatus.OFFLINE_APPROVED:
        return "APPROVED OFFLINE", f"AUTH {rec.approval}"
    if rec.status == SaleStatus.DECLINED:
        out = outcome(rec.response_code)
        return out.headline, out.reason or f"CODE {rec.response_code}"
    if rec.status == SaleStatus.NOT_COMPLETED:
        return "NO RESPONSE", "NOT CHARGED"
    if rec.status == SaleStatus.OFFLINE_REFUSED:
        return "REFUSED BY HOST", f"OFFLINE {rec.approval}"
    return "NOT COMPLETED", rec.reason or "NOT CHARGED"


def last_sale_line(rec: SaleRecord | None) -> str:
    if rec is None:
        return "NO SALES YET"
    top, _ = result_lines(rec)
    return f"#{rec.sale_id} {top}"[:W]
