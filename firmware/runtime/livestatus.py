"""The running terminal's status: the line systemd shows (`systemctl status`) and the
document `posterm status` gets from the status socket, gathered from the live parts.
The words, the socket and the journal's read-only facts are status.py's."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from firmware.runtime import status
from firmware.runtime.current import Current
from firmware.runtime.graph import Parts
from firmware.runtime.paths import PRIMARY, modem_facts
from firmware.runtime.status import StatusServer

log = logging.getLogger("posterm")


class LiveStatus:
    def __init__(self, parts: Parts, current: Current) -> None:
        self.parts, self.current = parts, current
        self.server: StatusServer | None = None

    def line(self) -> str:
        """What the terminal is doing, in words, for `systemctl status`."""
        return status.status_line(status.Facts(
            queue=status.Queue.of(self.parts.journal.queue_stats()), terminal=self.terminal()))

    def terminal(self) -> status.Terminal:
        """The running terminal's own part of `posterm status` (status.py)."""
        p = self.parts
        return status.Terminal(
            pid=os.getpid(), printer_fault=p.spooler.condition, display_fault=p.display.fault,
            waiting_prints=len(p.journal.queued_prints()),
            phase=self.current.phase.value if self.current.phase else "",
            batch_close_running=p.closer.running,
            in_flight=p.link.outstanding + (1 if self.current.in_flight() else 0),
            link=status.Link(p.monitor.state, p.monitor.health.untrusted,
                             p.link.path or PRIMARY, p.link.address, p.link.connected),
            modem=modem_facts(p.paths) if p.paths is not None and p.paths.modem is not None
            else None,
            power=p.power.facts() if p.power is not None else None)

    async def doc(self) -> dict[str, Any]:
        state_dir = self.parts.cfg.state_dir
        pin, key = self.parts.cfg.pin, None
        if pin.enabled:  # pinkeys (DUKPT) only where [pin] is on
            from firmware.runtime.pinkeys import key_path
            key = (key_path(pin.key_file, state_dir), pin.method)
        facts = await asyncio.to_thread(
            status.read_journal, state_dir / "journal.sqlite3", state_dir / "card.key", key)
        return replace(facts, terminal=self.terminal()).to_doc()

    async def start(self) -> None:
        """The status socket, in systemd's runtime directory, else [terminal] runtime_dir,
        else the state directory; without it `posterm status` reads the journal."""
        cfg = self.parts.cfg
        env = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        where = Path(env) if env else cfg.runtime_dir
        if not (where.is_dir() and os.access(where, os.W_OK)):
            where = cfg.state_dir
        server = StatusServer(where / status.SOCKET_NAME, self.doc)
        try:
            await server.start()
        except OSError as exc:
            log.warning("status socket %s: %s; `posterm status` will read the journal",
                        server.path, exc.strerror or exc)
            return
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
