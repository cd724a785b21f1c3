"""One authorization attempt against a host that answers wrongly, on loopback."""

from __future__ import annotations

import asyncio
import pathlib
from datetime import datetime

import iso8583
from iso8583.specs import default as SPEC

from firmware.config import HostConfig
from firmware.core.card import CardData
from firmware.core.events import HostOutcomeUnknown
from firmware.core.iso import Identity
from firmware.core.model import SaleRequest, SaleStatus
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.outbox import Kind
from firmware.runtime.vault import Vault

CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101",
                track2="4761739001010010=30121010000000000000")


async def _wrong_amount_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            size = int.from_bytes(await reader.readexactly(2), "big")
            doc, _ = iso8583.decode(await reader.readexactly(size), SPEC)
        except asyncio.IncompleteReadError:
            return
        answer = {k: doc[k] for k in ("3", "4", "7", "11", "41", "42", "49", "70") if k in doc}
        answer["t"] = doc["t"][:2] + "10"
        answer["39"] = "00"
        if doc["t"] == "0200":
            answer.update({"4": "000000000001", "37": "000000000001", "38": "123456"})
        raw, _ = iso8583.encode(answer, SPEC)
        writer.write(len(raw).to_bytes(2, "big") + bytes(raw))
        await writer.drain()


def test_answer_that_does_not_match_leads_to_reversal_06(tmp_path: pathlib.Path) -> None:
    async def scenario() -> tuple[object, Journal]:
        server = await asyncio.start_server(_wrong_amount_host, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        journal = Journal(tmp_path / "j.sqlite3", Vault.open(tmp_path / "k", create=True))
        ident = Identity("TERM0001", "MERCHANT0000001", "978")
        link = HostLink(HostConfig(host="127.0.0.1", port=port, tls=False), ident,
                        journal.allocate_stan)
        auth = Authorizer(journal, link, ident, 2.0, before_request=lambda: None,
                          reversal_recorded=lambda: None)
        req = SaleRequest(kind="purchase", amount=1250, card=CARD, local=datetime(2026, 1, 1))
        event = await auth.authorize(req, None)
        await link.close()
        server.close()
        return event, journal

    event, journal = asyncio.run(scenario())
    assert isinstance(event, HostOutcomeUnknown)
    assert event.record.status == SaleStatus.NOT_COMPLETED
    assert "field 4 does not match" in event.reason
    revs = journal.pending(Kind.REVERSAL, Kind.VOID)
    assert len(revs) == 1 and revs[0].reason == "06"
    assert revs[0].fields["2"] == CARD.pan  # unsealed from the vault for the 0400
