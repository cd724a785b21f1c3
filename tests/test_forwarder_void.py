"""Voids through the forwarder against the simulated acquirer host (in this process): a
void is sent like a reversal (0400 reason 17, no card data, field 90 naming the original's
first transmission), ends with an 0410, and the host's ledger no longer charges or credits
the original; a void the host cannot place (25) still ends, with a warning."""

from __future__ import annotations

import asyncio
import logging
import pathlib
from datetime import datetime
from typing import Any

import pytest

from firmware.config import HostConfig
from firmware.core import iso
from firmware.core.card import CardData
from firmware.core.events import HostAnswered
from firmware.core.model import SaleRequest
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.forwarder import Forwarder
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.outbox import Kind
from firmware.runtime.vault import Vault
from hwsim.host import AcquirerHost
from tests.invariants import check, pending

PAN = "4761739001010010"
CARD = CardData(pan=PAN, expiry="3012", service_code="101", track2=f"{PAN}=30121011000000000000")
IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")


class Bench:
    def __init__(self, tmp: pathlib.Path, port: int) -> None:
        self.journal = Journal(tmp / "j.sqlite3", Vault.open(tmp / "k", create=True))
        cfg = HostConfig(host="127.0.0.1", port=port, tls=False, response_timeout=3.0,
                         repeat_backoff_base=0.1, repeat_backoff_cap=0.2)
        self.link = HostLink(cfg, IDENT, self.journal.allocate_stan)
        self.forwarder = Forwarder(self.journal, self.link, cfg)
        self.auth = Authorizer(self.journal, self.link, IDENT, 3.0,
                               before_request=self.forwarder.flush,
                               reversal_recorded=self.forwarder.kick)

    async def sale(self, amount: int, kind: str = "purchase") -> int:
        req = SaleRequest(kind=kind, amount=amount, card=CARD, local=datetime(2026, 3, 4, 10))
        event = await self.auth.authorize(req, None)
        assert isinstance(event, HostAnswered) and event.record.status == "APPROVED"
        return event.record.sale_id

    async def drain(self) -> None:
        for _ in range(100):
            await self.forwarder.flush(due_only=False)
            if not self.journal.pending_keys(Kind.REVERSAL, Kind.VOID):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the void was never acknowledged")

    async def close(self) -> None:
        await self.forwarder.stop()
        await self.link.close()


def run(tmp: pathlib.Path, scenario: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                     Journal]:
    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], Journal]:
        host = AcquirerHost(rng_seed=3)
        port = await host.start()
        bench = Bench(tmp, port)
        try:
            await scenario(bench, host)
        finally:
            await bench.close()
            await host.stop()
        return host.ledger(), host.messages(), bench.journal

    return asyncio.run(main())


def test_void_of_a_purchase_and_a_refund_reaches_the_host(tmp_path: pathlib.Path) -> None:
    ids: dict[str, int] = {}

    async def scenario(b: Bench, host: AcquirerHost) -> None:
        ids["sale"] = await b.sale(1250)
        ids["refund"] = await b.sale(800, "refund")
        ids["kept"] = await b.sale(990)
        for key in ("sale", "refund"):
            assert b.journal.record_void(ids[key]).sent_to_host
        await b.drain()

    ledger, messages, journal = run(tmp_path, scenario)
    voids = [m for m in messages if m.get("mti", m.get("t")) in ("0400", "0401")]
    assert len(voids) == 2, messages
    by_amount = {int(e["amount"]): e for e in ledger}
    assert by_amount[1250]["voided"] and not by_amount[1250]["charged"]
    assert by_amount[800]["voided"] and not by_amount[800]["credited"]
    assert by_amount[990]["charged"] and not by_amount[990]["voided"]
    assert pending(journal.path) == 0
    assert check(journal.path, ledger, "TERM0001") == []
    rows = journal.db.execute("SELECT state, last_code, stan, f7 FROM reversals").fetchall()
    assert [(r["state"], r["last_code"]) for r in rows] == [("done", "00"), ("done", "00")]
    journal.close()


def test_the_void_message_on_the_wire(tmp_path: pathlib.Path) -> None:
    seen: list[dict[str, str]] = []

    async def scenario(b: Bench, host: AcquirerHost) -> None:
        sale_id = await b.sale(1250)
        b.journal.record_void(sale_id)
        original = b.journal.sale(sale_id)
        f7 = b.journal.db.execute("SELECT f7 FROM attempts WHERE sale_id=?",
                                  (sale_id,)).fetchone()[0]
        sent = b.link._write

        def spy(doc: dict[str, str], **kw: Any) -> Any:
            seen.append(dict(doc))
            return sent(doc, **kw)

        b.link._write = spy  # type: ignore[method-assign]
        await b.drain()
        (doc,) = [d for d in seen if d["t"] == "0400"]
        assert doc["39"] == "17" and doc["37"] == original.rrn
        assert doc["90"] == f"0200{original.stan}{f7}" + "0" * 22
        assert not {"2", "14", "35"} & set(doc)
        assert (doc["60"], doc["62"]) == ("000001", "000001")

    _, _, journal = run(tmp_path, scenario)
    assert seen
    journal.close()


def test_a_void_the_host_cannot_place_ends_with_a_warning(tmp_path: pathlib.Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    caplog.set_level(logging.INFO, logger="posterm.forward")

    async def scenario(b: Bench, host: AcquirerHost) -> None:
        sale_id = await b.sale(1250)
        # the host forgets nothing, so point the void at an original it never saw
        b.journal.record_void(sale_id)
        b.journal.db.execute("UPDATE reversals SET orig_stan='999990'")
        await b.drain()

    ledger, _, journal = run(tmp_path, scenario)
    row = journal.db.execute("SELECT state, last_code FROM reversals").fetchone()
    assert (row["state"], row["last_code"]) == ("done", "25")
    assert journal.sale(1).voided
    assert "the host does not know the original 0200 stan 999990 (0410 code 25)" in caplog.text
    assert PAN not in caplog.text
    journal.close()
