"""The duplicate guard: the approved purchases of the last `duplicate_minutes` (keyed hash
of the card, amount, local time; never the PAN), remembered from the journal at start and
from each approval since; a void takes its sale out. A purchase with the same card and
amount is asked about (POSSIBLE DUPLICATE) before anything is sent (sale.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta

from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.state import Now, Recent, Sale, State


def duplicate(state: State, sale: Sale, now: Now) -> bool:
    """A purchase with the same card (keyed hash) and amount as one approved within the
    last `duplicate_minutes`."""
    if sale.kind != "purchase" or not sale.pan_hash or state.cfg.duplicate_minutes <= 0:
        return False
    window = timedelta(minutes=state.cfg.duplicate_minutes)
    return any(r.pan_hash == sale.pan_hash and r.amount == sale.amount
               and now.local - r.local <= window for r in state.recent)


# the duplicate guard remembers at most this many approvals (the most recent): memory
# stays bounded however busy the window gets (a counter rarely sells 200 in 10 minutes)
RECENT_MAX = 200


def remember(state: State, rec: SaleRecord, pan_hash: str = "") -> State:
    """Keep an approved purchase for the duplicate guard (and forget the expired ones)."""
    key = rec.pan_hash or pan_hash
    if rec.kind != "purchase" or rec.voided or not key or rec.status not in (
            SaleStatus.APPROVED, SaleStatus.OFFLINE_APPROVED):
        return state
    if state.cfg.duplicate_minutes <= 0:  # the guard is off: nothing to remember
        return replace(state, recent=()) if state.recent else state
    window = timedelta(minutes=state.cfg.duplicate_minutes)
    kept = tuple(r for r in state.recent
                 if r.sale_id != rec.sale_id and rec.local - r.local <= window)
    kept = kept[len(kept) - RECENT_MAX + 1:] if len(kept) >= RECENT_MAX else kept
    return replace(state, recent=(*kept, Recent(rec.sale_id, key, rec.amount, rec.local)))


def remember_all(state: State, records: Iterable[SaleRecord]) -> State:
    for rec in records:
        state = remember(state, rec)
    return state


def forget(state: State, rec: SaleRecord) -> State:
    """A voided sale leaves the duplicate guard (and the last sale shows it voided)."""
    last = rec if state.last is not None and state.last.sale_id == rec.sale_id else state.last
    return replace(state, last=last,
                   recent=tuple(r for r in state.recent if r.sale_id != rec.sale_id))
