"""Offline approval rules: each limit and each card rule refuses with its own reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from firmware.core.card import CardData
from firmware.core.risk import OfflineRules, QueueStats, expired, offline_code, offline_decision

NOW = datetime(2026, 11, 23, 12, 0)
RULES = OfflineRules(floor_limit=5000, total_limit=20000, max_count=3, max_age_hours=24,
                     blocked_bins=("541333",))


def card(pan: str = "4761739001010010", svc: str = "101", expiry: str = "3012") -> CardData:
    return CardData(pan=pan, expiry=expiry, service_code=svc, track2=f"{pan}={expiry}{svc}")


EMPTY = QueueStats()


def decide(amount: int = 1000, c: CardData | None = None, queue: QueueStats = EMPTY,
           kind: str = "purchase", rules: OfflineRules = RULES) -> str:
    d = offline_decision(rules, queue, kind=kind, amount=amount, card=c or card(), now=NOW)
    assert d.approved == (d.reason == "WITHIN OFFLINE LIMITS")
    return d.reason


def test_plain_card_within_limits_is_approved() -> None:
    assert decide() == "WITHIN OFFLINE LIMITS"
    assert decide(5000) == "WITHIN OFFLINE LIMITS"  # at the floor limit exactly


@pytest.mark.parametrize("kwargs,reason", [
    ({"kind": "refund"}, "REFUND NEEDS HOST"),
    ({"amount": 5001}, "OVER FLOOR LIMIT"),
    ({"queue": QueueStats(count=2, total=19500)}, "OFFLINE TOTAL FULL"),
    ({"queue": QueueStats(count=3, total=3000)}, "OFFLINE COUNT FULL"),
    ({"queue": QueueStats(count=1, total=100, oldest=NOW - timedelta(hours=24))},
     "OFFLINE QUEUE OLD"),
    ({"c": card("4000000000000003")}, "INVALID CARD"),
    ({"c": card(expiry="2610")}, "CARD EXPIRED"),
    ({"c": card("4111111111111111", "201")}, "CHIP CARD"),
    ({"c": card("4005550000000019", "221")}, "CHIP CARD"),
    ({"c": card("4000000000000002", "121")}, "CARD NEEDS ONLINE"),
    ({"c": card("4000000000000002", "141")}, "CARD NEEDS ONLINE"),
    ({"c": card("6011000990139424", "120")}, "PIN REQUIRED"),
    ({"c": card("4000000000000002", "103")}, "PIN REQUIRED"),
    ({"c": card("4000000000000002", "105")}, "PIN REQUIRED"),
    ({"c": card("5413330089010012")}, "CARD NOT ACCEPTED"),
    ({"rules": replace(RULES, enabled=False)}, "OFFLINE NOT ALLOWED"),
])
def test_each_rule_refuses_with_its_reason(kwargs: dict[str, object], reason: str) -> None:
    assert decide(**kwargs) == reason  # type: ignore[arg-type]
    assert len(reason) <= 20


def test_total_limit_counts_this_sale() -> None:
    assert decide(4000, queue=QueueStats(count=2, total=16000)) == "WITHIN OFFLINE LIMITS"
    assert decide(4001, queue=QueueStats(count=2, total=16000)) == "OFFLINE TOTAL FULL"


def test_expiry_is_the_end_of_the_month() -> None:
    assert not expired("2611", NOW) and expired("2610", NOW) and expired("2613", NOW)
    assert expired("xx", NOW)


def test_offline_code_format() -> None:
    assert offline_code(7) == "Y30007" and offline_code(123456) == "Y33456"
