"""What the fleet channel says, and how it checks what it is told (docs/fleet.md).

No I/O here but the clock's value handed in: the topics, the payloads (state, telemetry
facts from `posterm status`'s document, events, replies), the scrubbing every text goes
through before it leaves (card numbers masked, first 6 and last 4; what follows a track
separator after digits hidden), and the checks on a command: its shape, its age (more
than 5 minutes either way: "stale"), its id (seen already: "replayed") and, for the
dangerous ones, its Ed25519 signature by the fleet's key over the canonical JSON (sorted
keys, no spaces, ASCII) of the command without `sig`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware.core.card import mask_pan

PREFIX = "posterm/v1"
COMMANDS = ("ping", "status", "close", "restart", "logs", "params", "update")
SIGNED = frozenset({"restart", "params", "update"})
MAX_AGE = timedelta(minutes=5)
LOG_LINES_MAX = 500
_DIGITS = re.compile(r"\d{13,19}")
_TRACK = re.compile(r"(?<=\d)=[0-9A-Za-z]*")
_LONG = re.compile(r"\d{20,}")


def topic(tid: str, leaf: str) -> str:
    return f"{PREFIX}/{tid}/{leaf}"


def utc(when: datetime) -> str:
    """ISO 8601 UTC with seconds and Z."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def scrub(text: str) -> str:
    """A text with every card-number-like run masked and track data hidden."""
    text = _TRACK.sub("=***", text)
    text = _LONG.sub(lambda m: "*" * len(m[0]), text)
    return _DIGITS.sub(lambda m: mask_pan(m[0]), text)


def dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def canonical(command: Mapping[str, Any]) -> bytes:
    """What a command's signature covers: the command without `sig`, canonical JSON."""
    return json.dumps({k: v for k, v in command.items() if k != "sig"}, sort_keys=True,
                      separators=(",", ":")).encode()


def state(tid: str, online: bool, version: str, since: datetime) -> bytes:
    return dumps({"tid": tid, "state": "online" if online else "offline", "version": version,
                  "since": utc(since)})


def event(tid: str, seq: int, t: str, kind: str, data: Mapping[str, Any]) -> bytes:
    return dumps({"tid": tid, "seq": seq, "t": t, "kind": kind, "data": dict(data)})


def sale_data(sale_id: int, kind: str, amount: int, status: str, entry: str) -> dict[str, Any]:
    """A sale's event: no card data, not even masked."""
    return {"sale_id": sale_id, "kind": kind, "amount": amount, "status": status,
            "entry": entry or "SWIPE"}


def _local_to_utc(text: str) -> str | None:
    try:
        return utc(datetime.fromisoformat(text))
    except (TypeError, ValueError):
        return None


def facts(doc: Mapping[str, Any], *, now: datetime, uptime: float,
          conditions: Mapping[str, str]) -> dict[str, Any]:
    """The telemetry facts (docs/fleet.md) from `posterm status`'s document."""
    power = doc.get("power") or {}
    battery, mains = power.get("battery") or {}, power.get("mains") or {}
    percent = battery.get("percent")
    link, modem = doc.get("link") or {}, doc.get("modem") or {}
    queue = doc.get("queue") or {}
    age = queue.get("oldest_advice_age_seconds")
    batch = doc.get("batch") or {}
    last = batch.get("last_close")
    printer = doc.get("printer_fault") or conditions.get("printer") or "ready"
    return {
        "device": {"manufacturer": "posterm", "firmware_version": doc.get("version", ""),
                   "uptime": int(uptime),
                   "battery_level": int(percent) if percent is not None else None,
                   "power_source": "battery" if mains and not mains.get("ok", True)
                   else "mains"},
        "connectivity": {"network_bearer": "4G" if link.get("path") == "4G" else "ETH",
                         "radio_signal_bars": modem.get("bars") if modem else None,
                         "link": link.get("state", "DOWN")},
        "printer": scrub(str(printer)),
        "card_reader": scrub(conditions.get("card_reader") or "ready"),
        "queue": {"reversals": queue.get("reversals", 0),
                  "offline_count": queue.get("advices", 0),
                  "offline_amount": queue.get("advices_amount", 0),
                  "offline_oldest": utc(now - timedelta(seconds=age)) if age is not None
                  else None,
                  "refused": doc.get("refused_offline_sales", 0)},
        "batch": {"number": batch.get("open", 0), "purchases": batch.get("purchases", 0),
                  "purchase_amount": batch.get("purchase_amount", 0),
                  "refunds": batch.get("refunds", 0)},
        "last_close": {"batch": last["batch"], "balanced": bool(last["balanced"]),
                       "t": _local_to_utc(last["time"])} if last else None,
        "journal_ok": (doc.get("journal") or {}).get("integrity") == "ok",
    }


class Refused(Exception):
    """A command refused: its reply's `error`."""


def check(raw: bytes, *, now: datetime, seen: Mapping[str, str],
          key: Ed25519PublicKey | None) -> dict[str, Any]:
    """The command, checked in this order: its shape, its age, its id, its signature."""
    try:
        command = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise Refused("not JSON") from None
    if not isinstance(command, dict):
        raise Refused("not a JSON object")
    cid, name, args = command.get("id"), command.get("cmd"), command.get("args", {})
    if not isinstance(cid, str) or not 0 < len(cid) <= 64 or not cid.isprintable():
        raise Refused("bad id")
    if name not in COMMANDS:
        raise Refused(f"unknown command {str(name)[:20]!r}")
    if not isinstance(args, dict):
        raise Refused("args must be an object")
    t = command.get("t")
    when = parse_utc(t) if isinstance(t, str) else None
    if when is None:
        raise Refused("bad t")
    if abs(now - when) > MAX_AGE:
        raise Refused("stale")
    if cid in seen:
        raise Refused("replayed")
    if name in SIGNED:
        sig = command.get("sig")
        if not sig:
            raise Refused("unsigned")
        if key is None:
            raise Refused("bad signature")  # no fleet key configured: nothing verifies
        try:
            key.verify(base64.b64decode(str(sig), validate=True), canonical(command))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Refused("bad signature") from None
    return command


def log_lines(lines: list[str], wanted: Any) -> list[str]:
    """The last `wanted` lines (1 to LOG_LINES_MAX), scrubbed."""
    n = wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else 50
    n = max(1, min(LOG_LINES_MAX, n))
    return [scrub(line) for line in lines[-n:]]
