"""The core's memory stays bounded however busy the terminal gets."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.machine import RECENT_MAX, initial

from tests.test_core_sale import CFG, T0


def test_duplicate_guard_keeps_at_most_recent_max_approvals() -> None:
    approvals = [SaleRecord(sale_id=i, kind="purchase", amount=100 + i,
                            pan_masked="476173******0010", local=T0 + timedelta(seconds=i),
                            status=SaleStatus.APPROVED, pan_hash=f"{i:064x}")
                 for i in range(1, 3 * RECENT_MAX)]
    state, _ = initial(CFG, recent=approvals)
    assert len(state.recent) == RECENT_MAX
    assert [r.sale_id for r in state.recent] == [a.sale_id for a in approvals[-RECENT_MAX:]]


def test_duplicate_guard_off_keeps_no_approvals() -> None:
    """duplicate_minutes = 0: the guard asks nothing, so it remembers nothing either (it
    kept each second's approvals, up to RECENT_MAX, for no use)."""
    approvals = [SaleRecord(sale_id=i, kind="purchase", amount=100,
                            pan_masked="476173******0010", local=T0,
                            status=SaleStatus.APPROVED, pan_hash=f"{i:064x}")
                 for i in range(1, 50)]
    state, _ = initial(replace(CFG, duplicate_minutes=0), recent=approvals)
    assert state.recent == ()
