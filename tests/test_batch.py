"""The batch close engine and its journal, against the simulated acquirer host in-process.

Sales are made through the real Authorizer and HostLink, so the host's ledger has
them; the close then runs through the real engine (firmware/runtime/batch.py) and
the journal (firmware/runtime/journal_batch.py). What the host saw is read from its
message log and its settlement records.
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from firmware.config import HostConfig
from firmware.core.card import CardData
from firmware.core.events import CloseDue, CloseFinished, CloseProgress, Event, HostAnswered
from firmware.core.iso import BatchTotals, Identity
from firmware.core.model import CoreConfig, SaleRequest
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.batch import CloseEngine, CloseSchedule
from firmware.runtime.clock import LoopClock
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.outbox import Answer, Kind
from firmware.runtime.vault import Vault
from hwsim.host import AcquirerHost
from tests import vtime

CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101",
                track2="4761739001010010=30121010000000000000")
IDENT = Identity("TERM0001", "MERCHANT0000001", "978")
CORE = CoreConfig(identity=IDENT, merchant_name="TEST SHOP", address=(), currency_code="EUR",
                  max_amount=500000)


class Bench:
    """A journal, a host link to an in-process host, and the close engine."""

    def __init__(self, tmp: pathlib.Path, host: AcquirerHost, port: int,
                 response_timeout: float = 1.0, window: int = 16) -> None:
        self.journal = Journal(tmp / "journal.sqlite3", Vault.open(tmp / "card.key", create=True))
        self.host = host
        self.cfg = HostConfig(host="127.0.0.1", port=port, tls=False, connect_timeout=1.0,
                              response_timeout=response_timeout, advice_window=window)
        self.link = HostLink(self.cfg, IDENT, self.journal.allocate_stan)
        self.auth = Authorizer(self.journal, self.link, IDENT, response_timeout,
                               before_request=lambda: None, reversal_recorded=lambda: None)
        self.events: list[Event] = []
        self.printed: list[tuple[int, tuple[str, ...]]] = []

        async def print_z(batch: int, lines: tuple[str, ...]) -> bool:
            self.printed.append((batch, lines))
            return True

        async def flush() -> None:
            return None

        self.engine = CloseEngine(self.journal, self.link, self.cfg, CORE,
                                  emit=self.events.append, flush=flush, kick=lambda: None,
                                  print_z=print_z, queue_wait=2.0)

    async def sale(self, amount: int, kind: str = "purchase") -> int:
        req = SaleRequest(kind=kind, amount=amount, card=CARD, local=datetime.now())
        event = await self.auth.authorize(req, None)
        assert isinstance(event, HostAnswered), event
        return event.record.sale_id

    async def close(self) -> CloseFinished:
        self.events.clear()
        await self.engine.run()
        finished = [e for e in self.events if isinstance(e, CloseFinished)]
        assert len(finished) == 1, self.events
        return finished[0]

    def progress(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, CloseProgress)]

    def sent(self, *mtis: str) -> list[dict[str, Any]]:
        return [m for m in self.host.messages() if m["mti"] in mtis]


def run(scenario: Callable[[Bench], Awaitable[None]], tmp: pathlib.Path,
        response_timeout: float = 1.0, window: int = 16) -> None:
    async def main() -> None:
        host = AcquirerHost(rng_seed=3)
        port = await host.start()
        bench = Bench(tmp, host, port, response_timeout, window)
        try:
            await scenario(bench)
        finally:
            await bench.link.close()
            await host.stop()
            bench.journal.close()

    asyncio.run(main())


def _batch_record(host: AcquirerHost, batch: int) -> dict[str, Any]:
    return next(b for b in host.batches() if b["batch"] == f"{batch:06d}")


# -- the journal: what the totals count -----------------------------------------------

def _offline(journal: Journal, amount: int) -> int:
    from firmware.core import iso

    fields = iso.sale_fields(IDENT, card=CARD, amount=amount, processing_code=iso.PURCHASE,
                             local=datetime.now(), batch=0, invoice=0)
    rec = journal.record_offline(None, approved=True, reason="OFFLINE", fields=fields,
                                 card=CARD, kind="purchase", amount=amount, currency="978",
                                 local=datetime.now())
    return rec.sale_id


def test_totals_count_what_the_host_charged_and_nothing_else(tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        await b.sale(2000)
        voided = await b.sale(4000)
        await b.sale(505)  # declined (05)
        await b.sale(700, kind="refund")
        with b.journal.tx() as db:  # voided by the operator (the void itself is elsewhere)
            db.execute("UPDATE sales SET voided = 1 WHERE id = ?", (voided,))
        accepted, waiting, refused = (_offline(b.journal, a) for a in (300, 400, 500))
        ids = {adv.sale_id: adv.key for adv in b.journal.pending(Kind.ADVICE)}
        b.journal.record_answers([Answer(ids[accepted], "00", final=True),
                                  Answer(ids[refused], "05", final=True)])
        assert waiting in ids

        totals = b.journal.batch_totals(1)
        assert totals == BatchTotals(purchases=3, purchase_amount=3300, refunds=1,
                                     refund_amount=700)
        s = b.journal.batch_summary(1)
        assert (s.sales.count, s.sales.amount) == (2, 3000)
        assert (s.refunds.count, s.refunds.amount) == (1, 700)
        assert (s.voids.count, s.voids.amount) == (1, 4000)
        assert (s.offline_approved.count, s.offline_approved.amount) == (2, 700)
        assert (s.offline_waiting.count, s.offline_waiting.amount) == (1, 400)
        assert (s.offline_refused.count, s.offline_refused.amount) == (1, 500)
        # the advice still waiting blocks a close: nothing is frozen
        assert b.journal.close_blockers() == 1
        assert b.journal.begin_close(scheduled=False, now=datetime.now()) is None
        assert b.journal.batch_close(1) is None

    run(scenario, tmp_path)


# -- the close --------------------------------------------------------------------------

def test_close_in_balance_advances_the_batch_and_prints_the_z_report(
        tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1250)
        await b.sale(2000)
        await b.sale(500, kind="refund")
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=True)
        assert b.progress() == ["SENDING TOTALS"]
        close = b.journal.batch_close(1)
        assert close is not None and close.state == "closed" and close.balanced
        assert close.totals == BatchTotals(2, 3250, 1, 500)
        assert b.journal.open_batch() == 2
        assert _batch_record(b.host, 1)["closed"]
        [zero] = b.sent("0500")
        assert zero["code"] == "00" and not b.sent("0320", "0321")
        assert b.printed and b.printed[0][0] == 1
        text = "\n".join(b.printed[0][1])
        assert "Z REPORT" in text and "IN BALANCE" in text and "EUR 32.50" in text
        assert b.journal.unprinted_z() == []
        # the next sale is batch 2, invoice 1, and the host sees field 60 = 000002
        sale_id = await b.sale(300)
        rec = b.journal.sale(sale_id)
        assert (rec.batch, rec.invoice) == (2, 1)
        assert b.journal.batch_totals(2) == BatchTotals(1, 300, 0, 0)

    run(scenario, tmp_path)


def test_out_of_balance_uploads_every_transaction_then_closes_with_960000(
        tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        ids = [await b.sale(a) for a in (1000, 2000, 3000)]
        await b.sale(505)  # declined: not counted, not uploaded
        b.host.force_out_of_balance(1)
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=True)  # the host agreed after the upload
        # pipelined: the three 0320s go out together (window 16)
        assert b.progress() == ["SENDING TOTALS", "UPLOADING 3 OF 3", "CHECKING TOTALS"]
        uploads = b.sent("0320", "0321")
        assert [m["mti"] for m in uploads] == ["0320"] * 3
        record = _batch_record(b.host, 1)
        assert [u["status"] for u in record["uploads"]] == ["matched"] * 3
        assert [c["processing_code"] for c in record["closes"]] == ["920000", "960000"]
        items = b.journal.upload_items(1, pending_only=False)
        assert [i.sale_id for i in items] == ids and all(i.state == "answered" for i in items)
        assert b.journal.open_batch() == 2

    run(scenario, tmp_path)


def test_host_still_out_of_balance_after_the_upload_closes_marked_call_help_desk(
        tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        b.host.force_out_of_balance(2)
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=False, message="OUT OF BALANCE")
        close = b.journal.batch_close(1)
        assert close is not None and close.state == "closed" and close.balanced is False
        assert "OUT OF BALANCE - CALL HELP DESK" in "\n".join(b.printed[0][1])
        assert b.journal.open_batch() == 2

    run(scenario, tmp_path)


def test_a_lost_0330_is_repeated_as_0321_with_the_same_identity(tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        await b.sale(2000)
        b.host.force_out_of_balance(1)
        b.host.add_fault("swallow", count=1, mti="0320")
        done = await b.close()
        assert done.ok and done.balanced
        uploads = b.sent("0320", "0321")
        # the second 0320 does not wait for the first one's answer
        assert [m["mti"] for m in uploads] == ["0320", "0320", "0321"]
        assert (uploads[0]["stan"], uploads[0]["f7"]) == (uploads[2]["stan"], uploads[2]["f7"])

    run(scenario, tmp_path, response_timeout=0.5)


def test_a_lost_960000_answer_means_a_new_0500_and_no_new_upload(
        tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        b.host.force_out_of_balance(1)
        # the 920000 is answered 95 (forced); the 960000's answer is lost
        b.host.add_fault("delay", count=1, mti="0500", seconds=0.0)
        b.host.add_fault("swallow", count=1, mti="0500")
        first = await b.close()
        assert first == CloseFinished(False, 1, message="NO ANSWER")
        close = b.journal.batch_close(1)
        assert close is not None and close.state == "uploaded"
        assert b.journal.open_batch() == 1
        again = await b.close()
        assert again == CloseFinished(True, 1, balanced=True)
        zeros = b.sent("0500")
        assert len(zeros) == 3 and len({(m["stan"], m["f7"]) for m in zeros}) == 3
        assert len(b.sent("0320", "0321")) == 1  # one upload, never repeated
        assert b.progress() == ["CHECKING TOTALS"]

    run(scenario, tmp_path, response_timeout=0.5)


def test_host_offline_leaves_the_batch_open_and_the_close_can_be_tried_again(
        tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        await b.link.close()
        await b.host.set_down(True)
        failed = await b.close()
        assert failed == CloseFinished(False, 1, message="HOST OFFLINE")
        assert b.journal.open_batch() == 1 and b.journal.close_in_progress() is None
        await b.host.set_down(False)
        await b.sale(2000)  # the batch stays open: sales go on in it
        done = await b.close()
        assert done.ok and done.balanced
        close = b.journal.batch_close(1)
        assert close is not None and close.totals == BatchTotals(2, 3000, 0, 0)

    run(scenario, tmp_path)


def test_other_answers_keep_the_batch_open(tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        b.host.set_default_answer("0500", "96")
        busy = await b.close()
        assert busy == CloseFinished(False, 1, message="HOST BUSY")
        b.host.set_default_answer("0500", "30")
        refused = await b.close()
        assert refused == CloseFinished(False, 1, message="HOST REFUSED 30")
        close = b.journal.batch_close(1)
        assert close is not None and close.state == "failed" and close.last_code == "30"
        b.host.set_default_answer("0500", None)
        assert (await b.close()).ok
        assert b.journal.open_batch() == 2

    run(scenario, tmp_path)


def test_a_closed_batch_cannot_be_closed_again(tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        assert (await b.close()).ok
        # a stale answer or a replayed step cannot close batch 1 twice
        assert not b.journal.close_done(1, code="00", balanced=True, report=[],
                                        now=datetime.now())
        assert b.journal.open_batch() == 2
        done = await b.close()  # an empty batch 2 closes on its own
        assert done == CloseFinished(True, 2, balanced=True)
        assert b.journal.open_batch() == 3

    run(scenario, tmp_path)


def test_a_close_cut_short_is_resumed_from_the_journal(tmp_path: pathlib.Path) -> None:
    """As after a crash with the 0500 920000 written: the journal says closing, and the
    next run sends a new 0500 (new STAN and field 7) with the same totals."""
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        first = b.journal.begin_close(scheduled=True, now=datetime.now())
        assert first is not None
        b.journal.close_identity(1, "920000", "0101000000")
        b.journal.close_written(1)
        assert b.journal.close_in_progress() == b.journal.batch_close(1)
        done = await b.close()
        assert done.ok and done.batch == 1
        close = b.journal.batch_close(1)
        assert close is not None and close.totals == first.totals and close.sent == 2

    run(scenario, tmp_path)


def test_z_report_reprint_after_a_crash_before_it_printed(tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        b.journal.begin_close(scheduled=False, now=datetime.now())
        assert b.journal.close_done(1, code="00", balanced=True, report=["Z", "LINES"],
                                    now=datetime.now())
        assert [c.batch for c in b.journal.unprinted_z()] == [1]
        await b.engine.print_pending_z()
        assert b.printed == [(1, ("Z", "LINES"))]
        assert b.journal.unprinted_z() == []

    run(scenario, tmp_path)


def test_old_journal_gets_the_batch_tables(tmp_path: pathlib.Path) -> None:
    vault = Vault.open(tmp_path / "card.key", create=True)
    Journal(tmp_path / "j.sqlite3", vault).close()
    db = sqlite3.connect(tmp_path / "j.sqlite3")
    db.execute("DROP TABLE batch_closes")
    db.execute("DROP TABLE batch_uploads")
    db.commit()
    db.close()
    journal = Journal(tmp_path / "j.sqlite3", vault)
    assert journal.batch_totals(1) == BatchTotals()
    assert journal.last_close() is None
    journal.close()


# -- the daily schedule --------------------------------------------------------------

@pytest.mark.parametrize("now, last_day, due", [
    ("2026-03-02 22:59", "", False),
    ("2026-03-02 23:00", "", True),
    ("2026-03-02 23:30", "2026-03-02", False),  # done today already
    ("2026-03-03 00:10", "2026-03-02", False),  # a new day, before its time
])
def test_the_daily_close_is_due_once_a_day_from_its_time(now: str, last_day: str,
                                                         due: bool) -> None:
    when = datetime.fromisoformat(now)
    schedule = CloseSchedule("23:00", idle=lambda: True, emit=lambda e: None,
                             in_progress=lambda: False, running=lambda: False,
                             last_day=lambda: last_day, clock=lambda: when)
    assert (schedule.due() is not None) == due
    assert CloseSchedule("", idle=lambda: True, emit=lambda e: None, in_progress=lambda: False,
                         running=lambda: False, last_day=lambda: "",
                         clock=lambda: when).due() is None


def test_the_schedule_asks_only_when_idle_and_again_after_its_retry() -> None:
    """On virtual time (tests/vtime.py) with the real settings (retry and poll 60 s): the
    close time comes during a sale, so nothing is asked; the terminal goes idle (the app
    kicks the schedule) and the close is asked at once; the core does not take it, so it
    is asked again exactly one retry later."""
    async def main() -> list[tuple[float, Event]]:
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop, start=datetime(2026, 3, 2, 22, 59, 30))
        asked: list[tuple[float, Event]] = []
        idle = [False]
        schedule = CloseSchedule("23:00", idle=lambda: idle[0],
                                 emit=lambda e: asked.append((loop.time(), e)),
                                 in_progress=lambda: False, running=lambda: False,
                                 last_day=lambda: "", clock=clock.local,
                                 monotonic=clock.monotonic)
        task = asyncio.create_task(schedule.run())
        await asyncio.sleep(40)  # 23:00:10, a sale in progress since before 23:00
        assert asked == []
        idle[0] = True
        schedule.kick()
        await asyncio.sleep(90)  # 23:01:40
        task.cancel()
        return asked

    asked, _ = vtime.run(main())
    assert [e for _t, e in asked] == [CloseDue(), CloseDue()]
    assert [t for t, _e in asked] == pytest.approx([40.0, 100.0])


def test_schedule_day_is_the_day_a_close_ended_after_its_time() -> None:
    schedule = CloseSchedule("23:00", idle=lambda: True, emit=lambda e: None,
                             in_progress=lambda: False, running=lambda: False,
                             last_day=lambda: "")
    assert schedule.done_today(datetime(2026, 3, 2, 23, 5)) == "2026-03-02"
    assert schedule.done_today(datetime(2026, 3, 2, 22, 5)) is None


def test_a_sale_made_while_a_close_waits_for_its_960000_is_uploaded_too(
        tmp_path: pathlib.Path) -> None:
    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        b.host.force_out_of_balance(1)
        b.host.add_fault("delay", count=1, mti="0500", seconds=0.0)
        b.host.add_fault("swallow", count=1, mti="0500")
        assert not (await b.close()).ok  # uploaded, the 960000's answer lost
        late = await b.sale(2000)  # the batch is still open: this sale joins it
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=True)
        items = b.journal.upload_items(1, pending_only=False)
        assert [i.sale_id for i in items][-1] == late and len(items) == 2
        close = b.journal.batch_close(1)
        assert close is not None and close.totals == BatchTotals(2, 3000, 0, 0)

    run(scenario, tmp_path, response_timeout=0.5)


# -- messages, reports, status ------------------------------------------------------------

def test_0500_and_0320_encode_as_the_interface_says() -> None:
    from firmware.core import iso

    doc = iso.reconciliation(IDENT, processing_code=iso.CLOSE, batch=7,
                             totals=BatchTotals(3, 4500, 1, 250), stan=42, f7="0302101500")
    back = iso.decode(iso.encode(doc))
    assert back["t"] == "0500" and back["3"] == "920000" and back["60"] == "000007"
    assert (back["74"], back["76"]) == ("0000000001", "0000000003")
    assert (back["86"], back["88"]) == ("0000000000000250", "0000000000004500")
    with pytest.raises(iso.MessageError):
        iso.reconciliation(IDENT, processing_code="000000", batch=1, totals=BatchTotals(),
                           stan=1, f7="0302101500")
    original = {"2": "4761739001010010", "3": "000000", "4": "000000001250", "12": "101500",
                "13": "0302", "14": "3012", "22": "901", "41": IDENT.f41, "42": IDENT.f42,
                "49": "978", "60": "000007", "62": "000003"}
    up = iso.batch_upload(original, orig_mti="0220", orig_stan="000017",
                          orig_f7="0302101010", rrn="123456789012", approval="Y30017",
                          code="00", stan=43, f7="0302101501")
    back = iso.decode(iso.encode(up))
    assert "2" not in back and "14" not in back and "22" not in back
    assert back["90"] == "0220" + "000017" + "0302101010" + "0" * 22
    assert (back["37"], back["38"], back["39"], back["62"]) == ("123456789012", "Y30017", "00",
                                                                "000003")
    again = iso.repeat(up)
    assert again == {**up, "t": "0321"}
    # answers are matched by (41, 11, class): 0510 to its 0500, 0330 to its 0320 / 0321
    assert iso.match_key({**doc, "t": "0510"}) == iso.match_key(doc)
    assert iso.match_key({**up, "t": "0330"}) == iso.match_key(again)
    assert {"0330", "0510"} <= iso.KNOWN_RESPONSES
    assert iso.mismatch(again, {**up, "t": "0330", "39": "00"}) is None


def test_reports_fit_the_paper_and_say_what_they_are() -> None:
    from firmware.core.receipt import BOLD, BatchSummary, Tally, reprint, x_report, z_report

    s = BatchSummary(batch=12, sales=Tally(120, 123456789), refunds=Tally(3, 4500),
                     voids=Tally(2, 900), offline_approved=Tally(4, 2000),
                     offline_waiting=Tally(1, 500), offline_refused=Tally(1, 700),
                     totals=BatchTotals(123, 123458289, 3, 4500),
                     first=datetime(2026, 3, 2, 8, 0), last=datetime(2026, 3, 2, 22, 0))
    x = x_report(CORE, s, printed_at=datetime(2026, 3, 2, 22, 5))
    z_ok = z_report(CORE, s, closed_at=datetime(2026, 3, 2, 23, 0), host_code="00",
                    balanced=True, uploaded=0)
    z_bad = z_report(CORE, s, closed_at=datetime(2026, 3, 2, 23, 0), host_code="95",
                     balanced=False, uploaded=127)
    for lines in (x, z_ok, z_bad, reprint(z_ok)):
        assert all(len(line.removeprefix(BOLD)) <= 32 for line in lines), lines
    text = "\n".join(x)
    assert "X REPORT - BATCH NOT CLOSED" in text and "OFFLINE REFUSED 1" in text
    assert "NET" in text and "EUR 1234537.89" in text
    assert "IN BALANCE" in "\n".join(z_ok) and "BATCH UPLOADED" not in "\n".join(z_ok)
    assert "OUT OF BALANCE - CALL HELP DESK" in "\n".join(z_bad)
    assert "127 TRANS." in "\n".join(z_bad)


def test_status_shows_the_open_batch_and_the_last_close(tmp_path: pathlib.Path) -> None:
    from firmware.runtime import status

    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        assert (await b.close()).ok
        await b.sale(2500)
        await b.sale(500, kind="refund")

    run(scenario, tmp_path)
    facts = status.read_journal(tmp_path / "journal.sqlite3", tmp_path / "card.key")
    batch = facts.to_doc()["batch"]
    assert (batch["open"], batch["purchases"], batch["purchase_amount"]) == (2, 1, 2500)
    assert (batch["refunds"], batch["refund_amount"]) == (1, 500)
    assert batch["last_close"]["batch"] == 1 and batch["last_close"]["balanced"]
    assert batch["close_in_progress"] is None
    running = status.Terminal(pid=1, link=status.Link("UP", False, "ETH", "host", True))
    text = status.render(replace(facts, terminal=running))
    assert "open batch:     #2: 1 purchase(s) 2500" in text
    assert "last close:     batch #1" in text and "in balance" in text
    assert facts.batch is not None
    closing = replace(facts.batch, close_in_progress=status.Closing(2, "uploading"))
    code, reasons = status.health(replace(facts, terminal=running, batch=closing))
    assert code == status.DEGRADED and any("batch close of batch 2" in r for r in reasons)


def test_an_offline_sale_the_host_accepted_is_counted_and_uploaded_as_its_0220(
        tmp_path: pathlib.Path) -> None:
    from firmware.runtime.forwarder import Forwarder

    async def scenario(b: Bench) -> None:
        await b.sale(1000)
        offline = _offline(b.journal, 800)
        forwarder = Forwarder(b.journal, b.link, b.cfg)
        task = asyncio.create_task(forwarder.run())
        for _ in range(100):  # the advice goes out and is accepted
            if not b.journal.close_blockers():
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await forwarder.stop()
        assert b.journal.batch_totals(1) == BatchTotals(2, 1800, 0, 0)
        b.host.force_out_of_balance(1)
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=True)
        items = b.journal.upload_items(1, pending_only=False)
        assert [(i.sale_id, i.orig_mti) for i in items][-1] == (offline, "0220")
        assert [u["status"] for u in _batch_record(b.host, 1)["uploads"]] == ["matched"] * 2

    run(scenario, tmp_path)
