"""The chip session: the EMV kernel (firmware/core/emv/kernel.py) run against the reader.

The kernel is a pure generator; this carries what it asks for. An APDU goes to the
reader in the reader's own thread (PC/SC calls block); a choice of application goes to
the core as ChipAsked and comes back as ChipChoice; a request to go online goes to the
core as ChipRead (the sale's own authorization follows, in the order of durable writes)
and the host's answer comes back as ChipComplete. When the kernel returns, its Outcome
goes to the core as ChipFinished, and the card is powered off.

Whatever fails here (the card pulled out, a mute card, the reader or pcscd gone, a
command that never returns, a bug in the kernel) ends in exactly one ChipFinished:
the core never waits on a card that will not answer. A reader error is turned into
the kernel's `Response.error`, so the kernel decides (fallback before an application
is selected, a failed card after). Card data never reaches a log line: only the step,
INS and status words.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Generator
from typing import Any

from firmware.core.effects import ChipBegin, ChipComplete
from firmware.core.emv import kernel
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import (
    Choose, HostReply, Online, Outcome, PinResult, PinStep, Response, Send, Txn,
)
from firmware.core.events import ChipAsked, ChipFinished, ChipRead, Event, PinAsked, PinTaken
from firmware.errors import ChipError, ChipMuteError, ChipReaderGoneError, ChipRemovedError
from firmware.ports import ChipReaderPort, PinPadPort
from firmware.runtime import threads

log = logging.getLogger("posterm.chip")

APDU_TIMEOUT = 15.0  # a command the card has not answered by then: the card is mute
Step = Send | Choose | Online | PinStep
Kernel = Generator[Step, Any, Outcome]


def _why(exc: BaseException) -> str:
    if isinstance(exc, ChipRemovedError):
        return "CARD REMOVED"
    if isinstance(exc, ChipReaderGoneError):
        return "READER FAULT"
    if isinstance(exc, ChipMuteError | TimeoutError):
        return "CARD MUTE"
    return "CHIP ERROR"


class ChipSession:
    """One kernel run at a time, for the sale in progress."""

    def __init__(self, reader: ChipReaderPort, terminal: Terminal, *,
                 emit: Callable[[Event], None], pan_hash: Callable[[str], str],
                 sequence: Callable[[], int], spawn: Callable[[Any, str], None],
                 pinpad: PinPadPort | None = None) -> None:
        self.reader, self.terminal, self.emit = reader, terminal, emit
        self.pinpad = pinpad
        self.pan_hash, self.sequence, self.spawn = pan_hash, sequence, spawn
        self._pool = threads.pool("chip")
        self._reply: asyncio.Future[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self.last: Outcome | None = None  # the last outcome (bench, status)
        self._amount = 0

    # -- the effects ------------------------------------------------------------------
    def begin(self, effect: ChipBegin) -> None:
        self.stop()
        self._amount = effect.amount
        txn = Txn(kind=effect.kind, amount=effect.amount, local=effect.local,
                  unpredictable=secrets.token_bytes(4),
                  random_percent=secrets.randbelow(99) + 1,
                  sequence=self.sequence(), offline_ok=effect.offline_ok)
        self._task = asyncio.get_running_loop().create_task(self._run(txn), name="chip")

    def choose(self, index: int | None) -> None:
        if not self._answer(index) and not self._running():
            self.emit(ChipFinished(Outcome("failed", message="CHIP ERROR",
                                           detail="a choice came with no card session")))

    def complete(self, effect: ChipComplete) -> None:
        """The host's answer for the card. With no kernel waiting for it (a bug, or the
        session lost) the core is still told the card did not finish: a sale the host
        approved is then reversed, never left waiting."""
        if not self._answer(effect.reply) and not self._running():
            self.emit(ChipFinished(Outcome("failed", "second", message="CHIP ERROR",
                                           detail="the answer came with no card session")))

    def stop(self) -> None:
        """The sale ended without the card: stop the kernel, power the card off."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self.spawn(self._off(), "chip power off")
        self._task, self._reply = None, None

    def _running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _answer(self, value: object) -> bool:
        reply = self._reply
        if reply is None or reply.done():
            log.warning("chip: an answer came with no question pending")
            return False
        reply.set_result(value)
        return True

    # -- the run ----------------------------------------------------------------------
    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._pool, fn, *args),
                                      APDU_TIMEOUT)

    async def _ask(self, event: Event) -> Any:
        self._reply = asyncio.get_running_loop().create_future()
        self.emit(event)
        try:
            return await self._reply
        finally:
            self._reply = None

    async def _run(self, txn: Txn) -> None:
        outcome: Outcome | None = None
        try:
            outcome = await self._drive(txn)
        except asyncio.CancelledError:
            log.info("chip: stopped (the sale ended without the card)")
            raise
        except Exception as exc:  # a bug: the sale must still end, and end safely
            log.error("chip: internal error: %s: %s", type(exc).__name__, exc)
            outcome = Outcome("failed", message="CHIP ERROR",
                              detail=f"internal error ({type(exc).__name__})")
        finally:
            if outcome is not None:
                await self._off()
        self.last = outcome
        self.emit(ChipFinished(outcome))

    async def _drive(self, txn: Txn) -> Outcome:
        try:
            atr = await self._call(self.reader.power_on)
        except (ChipError, TimeoutError) as exc:
            log.warning("chip: no usable answer to reset: %s", exc)
            # no usable ATR: the chip cannot be read (technical fallback, host-interface 8.1)
            return Outcome("fallback", message="CHIP ERROR", detail=f"power on: {exc}")
        log.info("chip: card powered, ATR %d bytes", len(atr))
        gen: Kernel = kernel.run(txn, self.terminal)
        reply: Any = None
        try:
            while True:
                step = gen.send(reply)
                reply = await self._carry(step)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _carry(self, step: Step) -> Any:
        if isinstance(step, Send):
            try:
                data, sw = await self._call(self.reader.transmit, step.apdu)
            except (ChipError, TimeoutError) as exc:
                why = _why(exc)
                log.warning("chip: %s failed: %s (%s)", step.what, why, exc)
                return Response(b"", 0, error=why)
            log.debug("chip: %s -> %04X", step.what, sw)
            return Response(bytes(data), sw)
        if isinstance(step, Choose):
            return await self._ask(ChipAsked(step.labels))
        if isinstance(step, Online):
            reply = await self._ask(ChipRead(step.chip, self.pan_hash(step.chip.card.pan)))
            assert isinstance(reply, HostReply)
            return reply
        if isinstance(step, PinStep):
            return await self._pin(step)
        raise TypeError(f"the kernel asked for {type(step).__name__}")

    async def _pin(self, step: PinStep) -> PinResult:
        """The card's CVM asks for the PIN: the PIN pad takes it (the core shows ENTER PIN
        and the stars) and makes the online block, or sends it to the card itself."""
        if self.pinpad is None:  # Book 3 10.5: "PIN pad not present or not working"
            return PinResult("no_pinpad")
        self.emit(PinAsked(step.kind, step.tries_left, step.bypass))
        if step.kind == "online":
            result = await self.pinpad.online(step.pan, self._amount, bypass=step.bypass)
        else:
            result = await self.pinpad.offline(step, self._transmit)
        self.emit(PinTaken(result))
        return result

    async def _transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """The PIN pad's way to the card (VERIFY, GET CHALLENGE); a reader failure is a
        status word of 0 (the PIN pad answers "failed")."""
        try:
            data, sw = await self._call(self.reader.transmit, apdu)
        except (ChipError, TimeoutError) as exc:
            log.warning("chip: PIN command failed: %s", _why(exc))
            return b"", 0
        return bytes(data), int(sw)

    async def _off(self) -> None:
        try:
            await self._call(self.reader.power_off)
        except Exception as exc:  # the card is gone already, most likely
            log.debug("chip: power off: %s", exc)

    def close(self) -> None:
        self.stop()
        self._pool.shutdown(wait=False)
