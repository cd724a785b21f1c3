"""The pipeline: outbox entries written without waiting, their answers journaled together.

The forwarder's reversals, voids and advices and the batch close's upload both send
this way (host-interface.md 1: "pipelined ... up to the advice window"); the window,
the queue order and what to do after a failure stay with each of them, this is the
mechanism they share:

- `outstanding`: the entries written (or about to be: the caller reserves their keys
  before any wait, so no one else sends them meanwhile) whose answers are not yet
  journaled. A caller fills its window from what is not in it.
- `send`: the one send path (`Outbox.transmit`: identities journaled, frames written
  back to back, `written` marks journaled), each entry written handed to a task of its
  own that awaits its answer.
- Group commit: the answers that arrived together are journaled in one transaction
  (`record_answers`); only then is each told to the owner (`answered(answer, sent,
  journaled)`, in arrival order), taken out of `outstanding`, and `after()` called
  once for the group: the owner may fill the window again.
- `settle()` waits until every answer is journaled (each wait is bounded by the
  response timeout); `stop()` cancels the waits (nothing touches the journal after).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from firmware.runtime.outbox import Answer, Outbox, OutboxItem, OutboxKey, Sent, Unsendable
from firmware.runtime.journal_queues import QueueStore

log = logging.getLogger("posterm.forward")

Answered = Callable[[Answer, Sent, bool], None]


class Pipeline:
    def __init__(self, journal: QueueStore, outbox: Outbox, *, answered: Answered,
                 after: Callable[[], None],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.journal, self.outbox = journal, outbox
        self.answered, self.after = answered, after
        self.on_error = on_error or _log_error
        self.outstanding: set[OutboxKey] = set()  # written, answer not journaled
        self._answers: list[tuple[Answer, Sent]] = []  # to journal in one transaction
        self._committer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def send(self, items: Sequence[OutboxItem], handed: set[OutboxKey],
                   unsendable: Unsendable) -> list[OutboxItem]:
        """Write these entries (reserved in `outstanding` by the caller) and hand each one
        written to a task awaiting its answer (its key joins `handed`); the entries left
        unwritten because the connection failed part way. HostUnreachableError when
        nothing could be written."""
        def hand_over(sent: Sent) -> None:
            self._spawn(self._await_answer(sent))
            handed.add(sent.item.key)

        return await self.outbox.transmit(items, unsendable, hand_over)

    async def settle(self) -> None:
        """Return once every answer awaited is journaled (or its wait failed)."""
        while self._tasks:
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        """Cancel the answer-waiting tasks: nothing may touch the journal after this."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- answers ----------------------------------------------------------------
    async def _await_answer(self, sent: Sent) -> None:
        answer = await self.outbox.answer(sent.pending, sent.what)
        code = answer.get("39", "") if answer is not None else ""
        rrn = answer.get("37", "").strip() if answer is not None else ""
        self._answers.append((Answer(sent.item.key, code, sent.item.is_final(code), rrn), sent))
        if self._committer is None or self._committer.done():
            self._committer = self._spawn(self._commit_soon())

    async def _commit_soon(self) -> None:
        """Group commit: the answers that arrived together are journaled in one
        transaction; only then are they told, and their places taken."""
        await asyncio.sleep(0)  # let the answers read in the same burst join this one
        batch, self._answers = self._answers, []
        if not batch:
            return
        try:
            changed = self.journal.record_answers([a for a, _ in batch])
        except BaseException:
            self._answers[:0] = batch  # not journaled: still waiting for their turn
            raise
        journaled = {a.key for a in changed}
        for answer, sent in batch:
            self.outstanding.discard(answer.key)
            self.answered(answer, sent, answer.key in journaled)
        self.after()

    # -- tasks ------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._task_finished)
        return task

    def _task_finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            self.on_error(exc)


def _log_error(exc: BaseException) -> None:
    log.error("waiting for an answer failed: %s: %s", type(exc).__name__, exc)
