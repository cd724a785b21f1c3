"""Offline approval rules: may this sale be approved without the host?

Pure. Every rule is configurable (`OfflineRules`), has a safe default, and a
refusal names its reason in plain words that fit the display (20 characters).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmware.core.card import CardData, luhn_ok


@dataclass(frozen=True)
class OfflineRules:
    enabled: bool = True
    floor_limit: int = 5000  # minor units: the largest sale approved offline
    total_limit: int = 50000  # unsent offline sales plus this one
    max_count: int = 20  # unsent offline sales, this one excluded, must stay below
    max_age_hours: float = 24.0  # oldest unsent offline sale
    blocked_bins: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueStats:
    """The store-and-forward queue as the journal last reported it."""

    count: int = 0
    total: int = 0
    oldest: datetime | None = None  # local time of the oldest unsent offline sale
    refused: int = 0  # advices the host refused (reported, never retried)
    reversals: int = 0
    unsendable: int = 0  # reversals and advices whose message cannot be built (see the log)


@dataclass(frozen=True)
class Decision:
    approved: bool
    reason: str  # the rule that decided, in plain words


def offline_decision(rules: OfflineRules, queue: QueueStats, *, kind: str, amount: int,
                     card: CardData, now: datetime) -> Decision:
    if not rules.enabled:
        return Decision(False, "OFFLINE NOT ALLOWED")
    if kind != "purchase":
        return Decision(False, "REFUND NEEDS HOST")
    if amount > rules.floor_limit:
        return Decision(False, "OVER FLOOR LIMIT")
    held = _holding(rules, queue, amount, now)
    if held is not None:
        return held
    return _card_rules(rules, card, now)


def _holding(rules: OfflineRules, queue: QueueStats, amount: int,
             now: datetime) -> Decision | None:
    """What the terminal may hold for the host: total, count, age of the queue."""
    if queue.total + amount > rules.total_limit:
        return Decision(False, "OFFLINE TOTAL FULL")
    if queue.count >= rules.max_count:
        return Decision(False, "OFFLINE COUNT FULL")
    if queue.oldest is not None and \
            (now - queue.oldest).total_seconds() >= rules.max_age_hours * 3600:
        return Decision(False, "OFFLINE QUEUE OLD")
    return None


def _card_rules(rules: OfflineRules, card: CardData, now: datetime) -> Decision:
    if not luhn_ok(card.pan):
        return Decision(False, "INVALID CARD")
    if expired(card.expiry, now):
        return Decision(False, "CARD EXPIRED")
    svc = card.service_code
    if len(svc) != 3 or not svc.isdigit():
        return Decision(False, "CARD NEEDS ONLINE")
    if svc[0] in "26":
        return Decision(False, "CHIP CARD")
    if svc[2] in "035":
        return Decision(False, "PIN REQUIRED")
    if svc[1] in "24":
        return Decision(False, "CARD NEEDS ONLINE")
    if card.pan[:6] in rules.blocked_bins:
        return Decision(False, "CARD NOT ACCEPTED")
    return Decision(True, "WITHIN OFFLINE LIMITS")


def chip_offline(rules: OfflineRules, queue: QueueStats, *, kind: str, amount: int,
                 now: datetime) -> Decision:
    """The offline rules for a chip sale. The card's data and its risk (expiry, floor
    limit per application, velocity, action codes) are the EMV kernel's to judge (Book 3
    10.4 to 10.7); what stays the terminal's is whether it may hold one more sale for the
    host: offline enabled, a purchase, the offline total, count and age."""
    if not rules.enabled:
        return Decision(False, "OFFLINE NOT ALLOWED")
    if kind != "purchase":
        return Decision(False, "REFUND NEEDS HOST")
    held = _holding(rules, queue, amount, now)
    return held if held is not None else Decision(True, "WITHIN OFFLINE LIMITS")


def expired(expiry: str, now: datetime) -> bool:
    """A card is valid through the last day of its expiry month (YYMM)."""
    if len(expiry) != 4 or not expiry.isdigit():
        return True
    year, month = 2000 + int(expiry[:2]), int(expiry[2:])
    if not 1 <= month <= 12:
        return True
    return (now.year, now.month) > (year, month)


def offline_code(sale_id: int, prefix: str = "Y3") -> str:
    """The offline approval code printed on the receipt: Y3 (the host could not be
    reached) or Y1 (a chip card approved offline at its first cryptogram) and four
    digits (host-interface 4, 0220)."""
    return f"{prefix}{sale_id % 10000:04d}"
