"""What needs a person's eye in the fleet, and the order the table shows it in.

Pure functions of a terminal's latest state and telemetry (docs/fleet.md), the newest
version seen in the fleet and the time now; nothing here reads a clock or a file.

The alerts, most urgent first (`RANK`):

- `offline`: the terminal's state is "offline" (its own word or the broker's last will).
- `offline_growing`: unsent offline sales, and their count rose at the last change.
- `offline_old`: unsent offline sales, the oldest older than `Policy.old_after`.
- `refused`: offline sales the bank refused (queue.refused > 0).
- `out_of_balance`: the last batch close did not balance.
- `paper_out`: the printer says PAPER OUT.
- `battery_low`: below `Policy.battery_low` percent.
- `mains_lost`: running on its battery.
- `version_behind`: its version is older than the newest one seen in the fleet, or is
  not a Debian version at all (whatever a terminal sends, it is never taken for the
  newest: `newest`).

Versions are in Debian's order, the one the terminal itself uses to take or refuse an
update (firmware/debversion.py, imported by both: the console imports nothing else
from the firmware).

The table lists terminals with alerts first, by their most urgent alert, then by how
many they have, then by terminal id; terminals without alerts follow, by id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from firmware import debversion

RANK = ("offline", "offline_growing", "offline_old", "refused", "out_of_balance",
        "paper_out", "battery_low", "mains_lost", "version_behind")


@dataclass(frozen=True)
class Policy:
    old_after: float = 3600.0  # seconds: an unsent offline sale older than this is an alert
    battery_low: int = 20  # percent


@dataclass(frozen=True)
class Facts:
    """What the alerts read of one terminal (the store builds it from its row)."""
    tid: str
    state: str | None
    version: str | None
    facts: dict[str, Any]
    offline_trend: str  # "up" (the offline count rose at its last change), "down" or ""


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 UTC time as docs/fleet.md writes it (`...Z`), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def part(facts: dict[str, Any], name: str) -> dict[str, Any]:
    """`facts[name]` when it is an object, else {} (a terminal may leave a group out)."""
    value = facts.get(name)
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def alerts(t: Facts, newest: str | None, now: datetime, policy: Policy) -> list[dict[str, str]]:
    """The terminal's alerts, most urgent first: each `{"code", "text"}`."""
    out: list[tuple[str, str]] = []
    f = t.facts
    queue, device = part(f, "queue"), part(f, "device")
    if t.state == "offline":
        out.append(("offline", "offline"))
    count = _int(queue.get("offline_count"))
    if count > 0:
        if t.offline_trend == "up":
            out.append(("offline_growing", f"{count} offline sales unsent, growing"))
        oldest = parse_time(queue.get("offline_oldest"))
        if oldest is not None and (now - oldest).total_seconds() > policy.old_after:
            out.append(("offline_old", f"{count} offline sales unsent, oldest "
                                       f"{_ago((now - oldest).total_seconds())} old"))
    refused = _int(queue.get("refused"))
    if refused:
        out.append(("refused", f"{refused} offline sales refused"))
    close = f.get("last_close")
    if isinstance(close, dict) and close.get("balanced") is False:
        out.append(("out_of_balance", f"batch {close.get('batch', '?')} out of balance"))
    if isinstance(f.get("printer"), str) and "PAPER OUT" in f["printer"].upper():
        out.append(("paper_out", "paper out"))
    level = device.get("battery_level")
    if isinstance(level, (int, float)) and not isinstance(level, bool) \
            and level < policy.battery_low:
        out.append(("battery_low", f"battery {level:g}%"))
    if device.get("power_source") == "battery":
        out.append(("mains_lost", "mains lost"))
    if newest and t.version is not None:
        if not debversion.valid(t.version):
            out.append(("version_behind", f"version {str(t.version)[:40]!r} is not a version "
                                          f"(newest {newest})"))
        elif debversion.newer(newest, t.version):
            out.append(("version_behind", f"version {t.version}, newest {newest}"))
    return [{"code": code, "text": text} for code, text in out]


def newest(versions: Iterable[object]) -> str | None:
    """The newest of the versions in Debian's order; what is not a version is left out."""
    found = [v for v in versions if isinstance(v, str) and debversion.valid(v)]
    return max(found, key=debversion.key) if found else None


def order_key(tid: str, found: list[dict[str, str]]) -> tuple[int, int, int, str]:
    """Sort key: alerts first, by the most urgent, then by how many, then by id."""
    if not found:
        return (1, 0, 0, tid)
    return (0, min(RANK.index(a["code"]) for a in found), -len(found), tid)
