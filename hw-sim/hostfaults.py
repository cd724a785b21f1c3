"""Fault injection for the simulated acquirer host.

A `FaultPlan` holds the faults a test or a person asked for, in the order they
were added. Message faults apply to the next `count` requests whose MTI class
matches (`"0200"`; `"0220"` covers 0220/0221; `"0320"` covers 0320/0321, the
batch upload; `"0400"` covers 0400/0401, reversals and voids; `"0500"`, the batch
close; `"0800"`; `"*"` any); each request takes at most one, the oldest that
matches.
Connection faults ignore the MTI: `refuse` resets the next `count` connection
attempts, `blackhole` silently discards the next `count` requests. A count of 0
means "until cleared".

`ChipFaults` is apart: it does not take a request but changes the next 0210 built
with tag 91 (host-interface 8.2): a wrong ARPC, issuer scripts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from .hostproto import class_matches, mti_class


@dataclass(frozen=True)
class FaultKind:
    """One kind of fault, declared here once: its parameters (name -> default, or None
    when the request must give it), the response codes it may answer with, whether it
    acts on connections (any MTI) rather than messages, and its words for a person."""

    kind: str
    label: str
    help: str
    params: dict[str, Any] = field(default_factory=dict)
    codes: tuple[str, ...] = ()
    connection: bool = False

    def describe(self) -> dict[str, Any]:
        """The kind as the web page's catalogue gives it (JSON)."""
        return {"kind": self.kind, "label": self.label, "help": self.help,
                "params": dict(self.params), "codes": list(self.codes),
                "connection": self.connection}


# Busy answers 91 ("issuer or switch inoperative") unless told 96 ("system malfunction"):
# host-interface.md gives both the same meaning, "not processed, send again".
KINDS: Final[tuple[FaultKind, ...]] = (
    FaultKind("delay", "delay answer", "answer after the given seconds", {"seconds": None}),
    FaultKind("late", "late answer", "answer after the given seconds (meant to arrive after "
              "the terminal gave up)", {"seconds": None}),
    FaultKind("swallow", "swallow answer", "decide the answer but never send it"),
    FaultKind("drop_after_post", "drop after post",
              "decide the answer, then drop the connection without sending it"),
    FaultKind("drop_before_read", "drop before read",
              "drop the connection before reading the request"),
    FaultKind("busy", "busy (91/96)", "answer 91 or 96 (code; default 91)", {"code": "91"},
              codes=("91", "96")),
    FaultKind("malformed", "garbage frame", "answer with a frame that does not parse"),
    FaultKind("decline", "decline", "decline with the code (default 05)", {"code": "05"}),
    FaultKind("refuse", "refuse connection",
              "reset the next connection attempts (any message class)", connection=True),
    FaultKind("blackhole", "black-hole",
              "discard the next requests silently (any message class)", connection=True),
)  # fmt: skip
BY_KIND: Final = {k.kind: k for k in KINDS}
# kind -> (parameter name -> default, or None when the parameter is required)
MESSAGE_FAULTS: Final[dict[str, dict[str, Any]]] = {
    k.kind: dict(k.params) for k in KINDS if not k.connection}
CONNECTION_FAULTS: Final = frozenset(k.kind for k in KINDS if k.connection)
# The request classes a message fault can name (a repeat MTI names its class).
REQUEST_CLASSES: Final = ("0200", "0220", "0320", "0400", "0500", "0800")
FAULT_KINDS: Final = frozenset(BY_KIND)
# Every parameter any kind takes, with its type (the control op declares these).
PARAM_TYPES: Final = {"seconds": float, "code": str}


@dataclass
class Fault:
    """One requested fault; `remaining` 0 means unlimited."""

    kind: str
    mti: str
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)
    unlimited: bool = False

    @property
    def seconds(self) -> float:
        return float(self.params.get("seconds", 0.0))

    @property
    def code(self) -> str:
        return str(self.params.get("code", ""))


def make_fault(kind: str, count: int, mti: str, params: dict[str, Any]) -> Fault:
    """Validate a fault request; ValueError with a specific message if it is wrong."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
    if count < 0:
        raise ValueError(f"fault count must be 0 (until cleared) or more, got {count}")
    if mti != "*" and (len(mti) != 4 or not mti.isdigit()
                       or mti_class(mti) not in REQUEST_CLASSES):
        raise ValueError(f"fault MTI must be a request class ({', '.join(REQUEST_CLASSES)}, "
                         f"or a repeat such as 0401) or '*', got {mti!r}")
    allowed = MESSAGE_FAULTS.get(kind, {})
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter(s) {', '.join(sorted(unknown))}")
    resolved: dict[str, Any] = {}
    for name, default in allowed.items():
        value = params.get(name, default)
        if value is None:
            raise ValueError(f"fault {kind!r} needs {name}=")
        resolved[name] = value
    if "seconds" in resolved:
        seconds = resolved["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"fault {kind!r}: seconds must be a number, 0 or more")
    codes = BY_KIND[kind].codes
    if codes and resolved["code"] not in codes:
        raise ValueError(f"fault {kind!r} takes code {' or '.join(codes)}, "
                         f"got {resolved['code']!r}")
    if "code" in resolved and len(str(resolved["code"])) != 2:
        raise ValueError(f"fault {kind!r}: code must be 2 characters")
    return Fault(kind=kind, mti=mti, remaining=count, params=resolved, unlimited=count == 0)


class FaultPlan:
    """The pending faults, consumed as requests and connections arrive."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, kind: str, count: int = 1, mti: str = "0200", **params: Any) -> Fault:
        fault = make_fault(kind, count, mti, params)
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[Fault]:
        return list(self._faults)

    def take_refuse(self) -> bool:
        """Whether the connection attempt now arriving must be reset."""
        return self._take(lambda f: f.kind == "refuse") is not None

    def take_blackhole(self) -> bool:
        """Whether the request now arriving must be discarded unanswered."""
        return self._take(lambda f: f.kind == "blackhole") is not None

    def take_message_fault(self, mti: str) -> Fault | None:
        """The message fault for a request of `mti`, if one is pending."""
        return self._take(lambda f: f.kind in MESSAGE_FAULTS and class_matches(f.mti, mti))

    def _take(self, wanted: Callable[[Fault], bool]) -> Fault | None:
        for fault in self._faults:
            if wanted(fault):
                if not fault.unlimited:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None


class ChipFaults:
    """What the next 0210s built with tag 91 carry besides the right ARPC (host-interface
    8.2): a wrong ARPC (the ARC stays right), issuer scripts (templates, commands). A
    replayed answer takes nothing: only a 0210 being built does."""

    def __init__(self) -> None:
        self.wrong_arpc = 0
        self.scripts: list[tuple[str, tuple[str, ...]]] = []

    def add_wrong_arpc(self, count: int = 1) -> None:
        if count < 1:
            raise ValueError(f"chip-wrong-arpc count must be 1 or more, got {count}")
        self.wrong_arpc += count

    def add_scripts(self, templates: str, commands: tuple[str, ...]) -> None:
        self.scripts.append((templates, commands))

    def take(self) -> tuple[bool, tuple[str, tuple[str, ...]] | None]:
        """(wrong ARPC?, scripts or None) for the 0210 being built now."""
        wrong = self.wrong_arpc > 0
        if wrong:
            self.wrong_arpc -= 1
        return wrong, self.scripts.pop(0) if self.scripts else None

    def clear(self) -> None:
        self.wrong_arpc = 0
        self.scripts.clear()

    def pending(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.wrong_arpc:
            out.append({"kind": "chip_wrong_arpc", "mti": "0200", "remaining": self.wrong_arpc})
        out.extend({"kind": "chip_scripts", "mti": "0200", "remaining": 1,
                    "templates": t, "commands": list(c)} for t, c in self.scripts)
        return out
