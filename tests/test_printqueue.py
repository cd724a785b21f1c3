"""The print spooler and its durable queue, with the real printer driver against the
printer model (in this process) and a real journal."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from drivers.printer import EscposPrinter
from firmware.config import parse
from firmware.core.card import CardData
from firmware.core.events import ConditionChanged, Event
from firmware.core.model import SaleRecord
from firmware.core.receipt import sale_receipt
from firmware.errors import ConfigError
from firmware.runtime.journal import Attempt, Journal
from firmware.runtime.journal_base import SCHEMA
from firmware.runtime.printqueue import DELAYED, PrintResult, PrintSpooler, Settings
from firmware.runtime.vault import Vault
from tests.test_config import with_tables
from tests.test_printer import SimThread

PAN = "4761739001010010"
TRACK2 = f"{PAN}=30121011000000000000"
CARD = CardData(pan=PAN, expiry="3012", service_code="101", track2=TRACK2)
FAST = Settings(status_interval=5.0, retry_max=1.0, job_timeout=10.0)


@pytest.fixture()
def served() -> Iterator[SimThread]:
    st_ = SimThread()
    yield st_
    st_.close()


class Bench:
    """A journal with sales, the driver on the model, a spooler and what it emitted."""

    def __init__(self, tmp: Path, port: int, settings: Settings = FAST) -> None:
        self.journal = Journal(tmp / "journal.sqlite3", Vault.open(tmp / "card.key",
                                                                  create=True))
        self.printer = EscposPrinter("network", host="127.0.0.1", port=port,
                                     cache_dir=str(tmp / "escpos"))
        self.events: list[Event] = []
        self.errors: list[BaseException] = []
        self.spooler = PrintSpooler(self.printer, self.journal, self.events.append, settings,
                                    on_error=self.errors.append)
        self.cfg = parse(with_tables()).core

    def approved_sale(self, amount: int = 1250) -> SaleRecord:
        attempt, _ = self.journal.start_attempt(
            None, fields={"3": "000000", "4": f"{amount:012d}"}, card=CARD, kind="purchase",
            amount=amount, currency="978", local=datetime(2026, 3, 4, 10, 20, 30),
            f7="0304102030")
        return self.journal.record_answer(
            Attempt(attempt.sale_id, attempt.attempt_id, attempt.stan, attempt.f7),
            code="00", approval="123456", rrn="000000000042")

    def receipt(self, rec: SaleRecord) -> tuple[str, ...]:
        return tuple(sale_receipt(self.cfg, rec))

    def conditions(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, ConditionChanged)]

    def printed_flags(self, sale_id: int) -> tuple[int, int]:
        row = self.journal.db.execute("SELECT receipt_printed, copy_printed FROM sales "
                                      "WHERE id=?", (sale_id,)).fetchone()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self.spooler.close()
        self.printer.close()
        self.journal.close()


def run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.05)


async def timed_print(b: Bench, job: str, lines: tuple[str, ...],
                      sale_id: int | None) -> tuple[PrintResult, float]:
    start = time.monotonic()
    result = await b.spooler.print(job, lines, sale_id)
    return result, time.monotonic() - start


def test_paper_out_queues_the_receipt_and_it_prints_late_once_paper_is_loaded(
        served: SimThread, tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port)
    first, second = b.approved_sale(1250), b.approved_sale(990)

    async def scenario() -> None:
        watch = asyncio.create_task(b.spooler.run())
        served.sim.set_fault(paper_out=True)
        result, took = await timed_print(b, "sale", b.receipt(first), first.sale_id)
        assert result == PrintResult(False, "PAPER OUT", queued=True)
        assert took < 2.5  # the driver asked, the printer said: at once
        # now known: the next receipt is not even tried, and answered at once
        result, took = await timed_print(b, "sale", b.receipt(second), second.sale_id)
        assert result == PrintResult(False, "PAPER OUT", queued=True) and took < 0.1
        queued = b.journal.queued_prints()
        assert [(q.kind, q.sale_id) for q in queued] == [("sale", first.sale_id),
                                                          ("sale", second.sale_id)]
        assert queued[0].lines == b.receipt(first)  # exactly the rendered lines
        assert b.printed_flags(first.sale_id) == (0, 0)
        assert served.sim.receipts() == [] and served.sim.discarded() == (0, 0)
        await until(lambda: "PAPER OUT" in b.conditions(), 3, "PAPER OUT told")
        served.sim.load_paper()
        await until(lambda: len(served.sim.receipts()) == 2, 6, "both printed late")
        await until(lambda: not b.journal.queued_prints(), 2, "queue emptied")
        watch.cancel()

    run(scenario)
    receipts = served.sim.receipts()
    assert all(r.startswith(DELAYED.center(32).rstrip()) for r in receipts), receipts
    assert "NOT PRINTED AT" in receipts[0]
    assert "EUR 12.50" in receipts[0] and "EUR 9.90" in receipts[1]  # in order
    assert b.printed_flags(first.sale_id) == (1, 0)
    assert b.printed_flags(second.sale_id) == (1, 0)
    assert b.conditions()[-1] == ""  # told: all is well again
    assert b.journal.recover().unprinted == []
    assert b.errors == []
    b.close()


def test_recovery_copies_only_what_is_neither_printed_nor_queued(served: SimThread,
                                                                tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port)
    queued, lost = b.approved_sale(1000), b.approved_sale(2000)
    served.sim.set_fault(cover_open=True)

    async def scenario() -> None:
        result = await b.spooler.print("sale", b.receipt(queued), queued.sale_id)
        assert result == PrintResult(False, "PRINTER COVER OPEN", queued=True)

    run(scenario)
    # `lost` stands for a sale whose print was under way when the power went
    assert [r.sale_id for r in b.journal.recover().unprinted] == [lost.sale_id]
    b.close()


def test_a_print_that_outlives_the_job_timeout_is_queued_and_never_printed_twice(
        served: SimThread, tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port, Settings(status_interval=5.0, retry_max=1.0,
                                              job_timeout=0.6))
    rec = b.approved_sale()
    served.sim.set_fault(slow_seconds=0.08)  # about 2.5 s for a receipt

    async def scenario() -> None:
        watch = asyncio.create_task(b.spooler.run())
        result, took = await timed_print(b, "sale", b.receipt(rec), rec.sale_id)
        assert result == PrintResult(False, "PRINTER OFFLINE", queued=True)
        assert 0.5 < took < 1.0  # the sale went on at the timeout
        assert [q.sale_id for q in b.journal.queued_prints()] == [rec.sale_id]
        # meanwhile the next receipt is not sent behind the stuck one: answered at once
        other = b.approved_sale(700)
        result, took = await timed_print(b, "sale", b.receipt(other), other.sale_id)
        assert result.queued and took < 0.1
        await until(lambda: not b.journal.queued_prints(), 12, "queue emptied")
        await asyncio.sleep(1.5)  # the watch had its chance to print it again: it must not
        watch.cancel()

    run(scenario)
    receipts = served.sim.receipts()
    assert len(receipts) == 2, receipts
    assert not receipts[0].startswith(DELAYED.center(32).rstrip())  # the slow one, as it was
    assert "EUR 12.50" in receipts[0]
    assert receipts[1].startswith(DELAYED.center(32).rstrip()) and "EUR 7.00" in receipts[1]
    assert b.printed_flags(rec.sale_id) == (1, 0)
    b.close()


def test_conditions_cover_open_near_end_and_a_printer_that_does_not_answer(
        served: SimThread, tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port)
    rec = b.approved_sale()

    async def scenario() -> None:
        watch = asyncio.create_task(b.spooler.run())
        await asyncio.sleep(0.3)
        assert b.conditions() == []  # all well from the start: nothing to say
        served.sim.set_fault(paper_near_end=True)
        await b.spooler.print("copy", b.receipt(rec), rec.sale_id)  # prints: near end warns
        b.spooler._soon(0)
        await until(lambda: b.conditions() == ["PAPER LOW"], 3, "PAPER LOW")
        served.sim.set_fault(cover_open=True)
        await until(lambda: b.conditions()[-1:] == ["PRINTER COVER OPEN"], 3, "cover open")
        served.sim.set_fault(cover_open=False, mute=True)
        await until(lambda: b.conditions()[-1:] == ["PRINTER OFFLINE"], 6, "offline")
        served.sim.clear_faults()
        await until(lambda: b.conditions()[-1:] == [""], 6, "back")
        watch.cancel()

    run(scenario)
    assert served.sim.receipts()[0].endswith("THANK YOU")
    assert b.printed_flags(rec.sale_id) == (1, 1)  # the menu copy counts as printed
    assert all(isinstance(e, ConditionChanged) and e.source == "printer"
               and not e.blocks_sales for e in b.events)
    b.close()


def test_copies_and_reports_are_refused_not_queued_while_the_printer_is_stopped(
        served: SimThread, tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port)
    rec = b.approved_sale()
    served.sim.set_fault(paper_out=True)

    async def scenario() -> None:
        await b.spooler.print("sale", b.receipt(rec), rec.sale_id)
        for job in ("copy", "report"):
            result, took = await timed_print(b, job, ("REPORT",), None)
            assert result == PrintResult(False, "PAPER OUT") and took < 0.1

    run(scenario)
    assert [q.kind for q in b.journal.queued_prints()] == ["sale"]
    b.close()


def test_a_menu_copy_takes_the_queued_receipt_with_it(served: SimThread,
                                                     tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port)
    rec = b.approved_sale()
    served.sim.set_fault(offline=True)

    async def scenario() -> None:
        await b.spooler.print("sale", b.receipt(rec), rec.sale_id)
        served.sim.clear_faults()
        b.spooler._condition = ""  # as the watch would find it
        copy = tuple(sale_receipt(b.cfg, rec, copy=True))
        assert await b.spooler.print("copy", copy, rec.sale_id) == PrintResult(True)

    run(scenario)
    assert b.journal.queued_prints() == []  # the customer has the copy: no late print
    assert len(served.sim.receipts()) == 1 and "*** COPY ***" in served.sim.receipts()[0]
    b.close()


def test_a_refused_sale_slip_is_queued_once_and_marks_the_refusal_told(
        served: SimThread, tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port)
    rec = b.approved_sale()
    b.journal.db.execute("INSERT INTO advices (sale_id, approval, state) VALUES (?, 'Y3', "
                         "'refused')", (rec.sale_id,))
    served.sim.set_fault(paper_out=True)
    slip = ("OFFLINE SALE REFUSED", f"SALE #{rec.sale_id}")

    async def scenario() -> None:
        watch = asyncio.create_task(b.spooler.run())
        assert (await b.spooler.print("refused", slip, rec.sale_id)).queued
        # after a restart the refusal is announced again: the same slip is not queued twice
        assert (await b.spooler.print("refused", slip, rec.sale_id)).queued
        assert len(b.journal.queued_prints()) == 1
        served.sim.load_paper()
        await until(lambda: not b.journal.queued_prints(), 6, "slip printed")
        watch.cancel()

    run(scenario)
    assert len(served.sim.receipts()) == 1
    assert b.journal.unannounced_refusals() == []
    b.close()


def test_the_journal_never_holds_a_full_card_number_or_track_data(served: SimThread,
                                                                 tmp_path: Path) -> None:
    b = Bench(tmp_path, served.port)
    rec = b.approved_sale()
    served.sim.set_fault(paper_out=True)

    async def scenario() -> None:
        await b.spooler.print("sale", b.receipt(rec), rec.sale_id)

    run(scenario)
    assert b.journal.queued_prints()[0].lines[0]  # something is stored
    assert any("476173******0010" in line for line in b.journal.queued_prints()[0].lines)
    b.journal.close()
    for path in tmp_path.glob("journal.sqlite3*"):
        data = path.read_bytes()
        assert PAN.encode() not in data, path.name
        assert TRACK2.encode() not in data and b"=3012101" not in data, path.name
    b.spooler.close()
    b.printer.close()


def test_an_older_journal_gets_the_print_queue_at_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # the tables of a release without the print queue
    db.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='print_queue'"
                      ).fetchone()[0] == 0
    db.close()
    j = Journal(path, Vault.open(tmp_path / "card.key", create=True))
    assert j.queued_prints() == []
    j.queue_print("sale", None, ("A",), datetime(2026, 1, 1), "PAPER OUT")
    assert [q.lines for q in j.queued_prints()] == [("A",)]
    j.close()


def test_printer_settings_are_read_and_bounded() -> None:
    opts = parse(with_tables(printer={"status_interval": 60, "retry_max": 5.5,
                                      "job_timeout": 30})).printer.options
    assert Settings.from_options(opts) == Settings(60.0, 5.5, 30.0)
    assert Settings.from_options(parse(with_tables()).printer.options) == Settings()
    with pytest.raises(ConfigError, match=r"\[printer\] job_timeout: must be a number of "
                                          r"seconds from 10 to 300"):
        parse(with_tables(printer={"job_timeout": 5}))
