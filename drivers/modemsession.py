"""The modem's AT session, sans I/O: commands queued, answers and URCs correlated,
timeouts as data.

    session = AtSession()
    session.submit(Command("AT+CSQ", timeout=5.0, prefix="+CSQ:"), now)
    port.write(session.outgoing(now))          # "AT+CSQ\\r": the command in flight
    events = session.receive(data, now)        # Answered(command, "OK", ("+CSQ: 20,0",))
    events = session.tick(now)                 # TimedOut(...) once session.deadline() passed

One command is in flight at a time; the others wait in order and the next is
written by the first `outgoing()` after the one before has ended (answered, timed
out or cancelled). A command ends at its final result (OK, ERROR, +CME ERROR:
n, +CMS ERROR: ...). Its info lines are those that start with its `prefix`, or,
with no prefix, every line that is no final result, no echo and no known URC.
A command with `data` (AT+CIPSEND) waits for the `>` prompt, then its data is
written and it waits, for `timeout` again, for its final result.

A command with `urc` is answered twice: its final result, then that unsolicited
result (+NETOPEN: 0 after AT+NETOPEN's OK). The wait begins at `submit`, so a
URC that comes early or in the same read as the OK is not lost; its deadline
(`urc_timeout`) is set by the OK; any other final result ends the wait. A newer
command waiting for the same URC supersedes the older one.

Time is never read here: the caller passes `now` (any monotonic clock) and asks
`deadline()` when to call `tick(now)`. Nothing is written here either; the
wire log (posterm.wire.modem, DEBUG) shows commands and lines as they are sent
and classified, never the bytes of +IPD or AT+CIPSEND: only their lengths.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from drivers.modemat import AtParser, Data, Garbage, Prompt, preview

wire = logging.getLogger("posterm.wire.modem")

FINAL = re.compile(r"OK|ERROR|\+CME ERROR: ?(\d+|.*)|\+CMS ERROR: ?.*")
URC_PREFIXES = ("+NETOPEN:", "+NETCLOSE:", "+CIPOPEN:", "+CIPCLOSE:", "+CIPSEND:", "+IPCLOSE:",
                "+CPIN:")  # fmt: skip
URC_LINES = ("RDY", "NORMAL POWER DOWN")
_URC_WORDS = re.compile(r"[A-Z][A-Z ]{1,19}")
_URC_NAMED = re.compile(r"\+[A-Z]{2,12}:")


@dataclass(eq=False)
class Command:
    """One AT command (compared by identity: the same text may be sent twice)."""

    text: str  # without the CR
    timeout: float  # for its final result (and again for it after the data)
    prefix: str | None = None
    probe: bool = False  # a command that may go unanswered (AT while booting)
    data: bytes | None = field(default=None, repr=False)  # after the ">" prompt
    urc: str | None = None  # answered OK, then by this unsolicited result
    urc_timeout: float = 0.0

    @property
    def name(self) -> str:
        return self.text.split("=")[0]


@dataclass(frozen=True)
class Answered:
    """The command's final result; `prompted` once its data was sent after `>`."""

    command: Command
    result: str
    lines: tuple[str, ...]
    prompted: bool = False


@dataclass(frozen=True)
class Prompted:
    """The `>` came: the command's data is written next."""

    command: Command


@dataclass(frozen=True)
class UrcArrived:
    command: Command
    line: str


@dataclass(frozen=True)
class TimedOut:
    """Nothing came in time: the final result ("answer"), the final result after the data
    ("data"), or the URC after the OK ("urc")."""

    command: Command
    waiting: Literal["answer", "data", "urc"]


@dataclass(frozen=True)
class Superseded:
    """A newer command waits for this command's URC: this one will not get it."""

    command: Command


@dataclass(frozen=True)
class Unsolicited:
    """A known unsolicited result that no command waits for (+IPCLOSE, RDY, ...)."""

    text: str


@dataclass(frozen=True)
class Stray:
    """A line nobody asked for: a final result with no command in flight (`final`), or an
    unknown line."""

    text: str
    final: bool


Event = Answered | Prompted | UrcArrived | TimedOut | Superseded | Unsolicited | Stray | Data \
    | Garbage


@dataclass
class _Wait:
    command: Command
    deadline: float | None = None  # set by the command's OK


def is_urc(text: str) -> bool:
    return text in URC_LINES or text.startswith(URC_PREFIXES)


def safe(text: str) -> str:
    """A line for the log: an unknown line might be misframed payload, so only a
    result code's name (`SMS DONE`, `+CGEV: ...`), or a short hex preview."""
    if _URC_WORDS.fullmatch(text):
        return text
    named = _URC_NAMED.match(text)
    if named:
        return f"{named.group(0)} ... ({len(text)} chars)"
    return f"a line of {len(text)} chars ({preview(text.encode('ascii', 'replace'))})"


class AtSession:
    """Commands to bytes and bytes to events for one open port (see the module docstring)."""

    def __init__(self) -> None:
        self.parser = AtParser()
        self._queue: deque[Command] = deque()
        self._current: Command | None = None
        self._deadline: float | None = None
        self._prompted = False
        self._lines: list[str] = []
        self._waits: dict[str, _Wait] = {}
        self._out = bytearray()

    @property
    def current(self) -> Command | None:
        """The command in flight (written, its final result not yet come)."""
        return self._current

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- the caller's side ------------------------------------------------------------
    def submit(self, command: Command) -> list[Event]:
        """Queue `command`; a Superseded event if an older command waited for its URC."""
        events: list[Event] = []
        if command.urc is not None:
            old = self._waits.get(command.urc)
            if old is not None:
                events.append(Superseded(old.command))
            self._waits[command.urc] = _Wait(command)
        self._queue.append(command)
        return events

    def outgoing(self, now: float) -> bytes:
        """The bytes to write now: the next command if none is in flight, a command's data
        after its prompt."""
        if self._current is None and self._queue:
            self._start(self._queue.popleft(), now)
        out = bytes(self._out)
        self._out.clear()
        return out

    def cancel(self, command: Command) -> None:
        """Forget `command` wherever it is (queued, in flight, waiting for its URC); an
        answer that comes for it later is a stray line."""
        if command in self._queue:
            self._queue.remove(command)
        if self._current is command:
            self._end()
        self._drop_wait(command)

    def deadline(self) -> float | None:
        """When `tick` has something to say, if nothing arrives before."""
        times = [w.deadline for w in self._waits.values() if w.deadline is not None]
        if self._deadline is not None:
            times.append(self._deadline)
        return min(times, default=None)

    def tick(self, now: float) -> list[Event]:
        events: list[Event] = []
        command = self._current
        if command is not None and self._deadline is not None and now >= self._deadline:
            waiting: Literal["data", "answer"] = "data" if self._prompted else "answer"
            self._end()
            self._drop_wait(command)
            events.append(TimedOut(command, waiting))
        for name, wait in list(self._waits.items()):
            if wait.deadline is not None and now >= wait.deadline:
                del self._waits[name]
                events.append(TimedOut(wait.command, "urc"))
        return events

    # -- the modem's side -------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[Event]:
        events: list[Event] = []
        for item in self.parser.feed(data):
            if isinstance(item, Data):
                wire.debug("<<< +IPD%d [%d bytes]", len(item.payload), len(item.payload))
                events.append(item)
            elif isinstance(item, Garbage):
                events.append(item)
            elif isinstance(item, Prompt):
                self._prompt(now, events)
            else:
                self._line(item.text, now, events)
        return events

    def _start(self, command: Command, now: float) -> None:
        self._current, self._prompted, self._lines = command, False, []
        self._deadline = now + command.timeout
        self.parser.expect_prompt = command.data is not None
        wire.debug(">>> %s", command.text)
        self._out += command.text.encode("ascii") + b"\r"

    def _end(self) -> None:
        self._current = self._deadline = None
        self._prompted = False
        self.parser.expect_prompt = False

    def _drop_wait(self, command: Command) -> None:
        if command.urc is not None:
            wait = self._waits.get(command.urc)
            if wait is not None and wait.command is command:
                del self._waits[command.urc]

    def _prompt(self, now: float, events: list[Event]) -> None:
        command = self._current
        if command is None or command.data is None or self._prompted:
            return
        self._prompted = True
        self._deadline = now + command.timeout
        wire.debug(">>> [%d bytes]", len(command.data))
        self._out += command.data
        events.append(Prompted(command))

    def _line(self, text: str, now: float, events: list[Event]) -> None:
        command = self._current
        if command is not None and not self._prompted and text == command.text:
            return  # the echo (before ATE0)
        if FINAL.fullmatch(text):
            wire.debug("<<< %s", text)
            if command is None:
                events.append(Stray(text, final=True))
            else:
                self._answered(command, text, now, events)
            return
        if command is not None and command.prefix is not None and text.startswith(command.prefix):
            wire.debug("<<< %s", text)
            self._lines.append(text)
            return
        if self._urc(text, events):
            return
        if command is not None and command.prefix is None:
            wire.debug("<<< %s", safe(text))
            self._lines.append(text)
            return
        events.append(Stray(text, final=False))

    def _answered(self, command: Command, result: str, now: float,
                  events: list[Event]) -> None:  # fmt: skip
        prompted, lines = self._prompted, tuple(self._lines)
        self._end()
        wait = self._waits.get(command.urc) if command.urc is not None else None
        if wait is not None and wait.command is command:
            if result == "OK" and (command.data is None or prompted):
                wait.deadline = now + command.urc_timeout
            else:
                self._drop_wait(command)
        events.append(Answered(command, result, lines, prompted))

    def _urc(self, text: str, events: list[Event]) -> bool:
        for name, wait in self._waits.items():
            if text.startswith(name):
                wire.debug("<<< %s", text)
                del self._waits[name]
                events.append(UrcArrived(wait.command, text))
                return True
        if is_urc(text):
            wire.debug("<<< %s", text)
            events.append(Unsolicited(text))
            return True
        return False
