"""The outbox (outbox.py, journal_queues.py): reversals, voids, advices and batch uploads
follow one protocol, are keyed by a typed `OutboxKey`, share one queue code in the
journal and one send path (`Outbox.transmit`)."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from firmware.core import iso
from firmware.core.iso import MessageError
from firmware.errors import HostUnreachableError
from firmware.runtime.journal import Journal
from firmware.runtime.outbox import (URGENT, Answer, Kind, Outbox, OutboxItem, OutboxKey,
                                     PendingAdvice, PendingReversal, PendingVoid, Sent,
                                     UploadItem)
from tests.test_journal_void import CARD, LOCAL, base, offline, online, open_journal


@pytest.fixture()
def j(tmp_path: pathlib.Path) -> Iterator[Journal]:
    journal = open_journal(tmp_path)
    yield journal
    journal.close()


def reversal(journal: Journal, amount: int = 700) -> int:
    """A sale sent and never answered: a reversal is queued."""
    attempt, _ = journal.start_attempt(None, fields=base(amount), card=CARD, kind="purchase",
                                       amount=amount, currency="978", local=LOCAL,
                                       f7="0304100000")
    journal.attempt_unknown(attempt, "68")
    return attempt.sale_id


def test_keys_are_typed_and_name_their_table() -> None:
    assert {k: k.table for k in Kind} == {
        Kind.REVERSAL: "reversals", Kind.VOID: "reversals", Kind.ADVICE: "advices",
        Kind.UPLOAD: "batch_uploads"}
    key = OutboxKey(Kind.VOID, 12)
    assert key == OutboxKey(Kind.VOID, 12) and key != OutboxKey(Kind.REVERSAL, 12)
    assert (key.kind, key.id) == (Kind.VOID, 12) and key.kind in URGENT
    assert Kind.ADVICE not in URGENT and Kind.UPLOAD not in URGENT


def test_each_kind_builds_its_message_and_knows_its_final_answers(j: Journal) -> None:
    sold, _ = online(j)
    j.record_void(sold.sale_id)
    reversed_ = reversal(j)
    queued = offline(j)
    urgent = j.pending(*URGENT)
    assert [type(i) for i in urgent] == [PendingVoid, PendingReversal]  # queue order
    void, rev = urgent
    (adv,) = j.pending(Kind.ADVICE)
    assert isinstance(adv, PendingAdvice)
    assert [i.key for i in (void, rev, adv)] == [
        OutboxKey(Kind.VOID, void.id), OutboxKey(Kind.REVERSAL, rev.id),
        OutboxKey(Kind.ADVICE, adv.id)]
    assert (void.what, rev.what, adv.what) == (
        f"void of sale {sold.sale_id}", f"reversal of sale {reversed_}",
        f"advice of sale {queued.sale_id}")
    assert void.is_void and not rev.is_void

    docs = {i.key.kind: i.message(42, "0304110000") for i in (void, rev, adv)}
    assert (docs[Kind.VOID]["t"], docs[Kind.VOID]["39"]) == ("0400", "17")
    assert "2" not in docs[Kind.VOID]  # a void carries no card data
    assert (docs[Kind.REVERSAL]["t"], docs[Kind.REVERSAL]["39"]) == ("0400", "68")
    assert docs[Kind.REVERSAL]["2"] == CARD.pan  # unsealed for the 0400
    assert docs[Kind.ADVICE]["t"] == "0220" and docs[Kind.ADVICE]["11"] == "000042"

    for item in (void, rev):
        assert [c for c in ("00", "25", "05", "91", "") if item.is_final(c)] == ["00", "25"]
    assert [c for c in ("00", "05", "91", "96", "") if adv.is_final(c)] == ["00", "05"]


def test_one_queue_code_for_every_kind(j: Journal) -> None:
    """Identities, written marks and answers of reversals, voids, advices and uploads,
    each in one transaction whatever the kinds."""
    sold, _ = online(j)
    reversal(j)
    offline(j)
    keys = j.pending_keys(*URGENT) + j.pending_keys(Kind.ADVICE)
    assert [k.kind for k in keys] == [Kind.REVERSAL, Kind.ADVICE]
    ids = j.identities(keys, "0304110000")
    assert sorted(int(i.stan) for i in ids.values()) == [3, 4]  # the 0200s had 1 and 2
    assert not any(i.written for i in ids.values())
    assert j.identities(keys, "0304119999") == ids  # fixed at the first send
    j.mark_written(keys)
    assert all(i.written for i in j.identities(keys, "0304119999").values())
    assert all(i.written for i in j.pending_items(keys))

    lost = j.record_answers([Answer(k, "", final=False) for k in keys])
    assert lost == [Answer(k, "", final=False) for k in keys]
    assert [j.tries(k) for k in keys] == [1, 1] and j.pending_items(keys) != []
    done = [Answer(keys[0], "00", final=True), Answer(keys[1], "00", True, "000000000077")]
    assert set(j.record_answers(done)) == set(done)  # accepted advices come first
    assert j.pending_items(keys) == [] and j.pending_keys(*Kind) == []

    # a batch upload goes through the same code
    close = j.begin_close(scheduled=False, now=LOCAL)
    assert close is not None
    assert j.close_out_of_balance(close.batch) == 2
    items = j.upload_items(close.batch)
    assert [type(i) for i in items] == [UploadItem, UploadItem]
    assert {i.key.kind for i in items} == {Kind.UPLOAD}
    first = items[0]
    assert first.sale_id == sold.sale_id and "2" not in first.fields
    stan, f7, written = j.identities([first.key], "0304120000")[first.key]
    assert not written
    doc = first.message(int(stan), f7)
    assert doc["t"] == "0320" and doc["90"].startswith("0200") and "2" not in doc
    j.mark_written([first.key])
    assert j.identities([first.key], "0304129999")[first.key] == (stan, f7, True)
    assert j.record_answers([Answer(first.key, "91", final=False)]) == []  # no tries kept
    assert j.record_answers([Answer(first.key, "00", final=True)]) != []
    assert [i.id for i in j.upload_items(close.batch)] == [items[1].id]


class FakeLink:
    """The part of HostLink the send path uses; the `fail_at`-th write finds the
    connection gone."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.written: list[dict[str, str]] = []
        self.fail_at = fail_at

    def _write(self, doc: dict[str, str]) -> str:
        if len(self.written) + 1 == self.fail_at:
            raise HostUnreachableError("connection lost")
        iso.encode(doc)  # raises MessageError for a message that cannot go on the wire
        self.written.append(doc)
        return f"pending {doc['11']}"

    async def send(self, doc: dict[str, str]) -> Any:
        return self._write(doc)

    def write_batch(self, doc: dict[str, str]) -> Any:
        return self._write(doc)

    async def flushed(self) -> None:
        pass


def transmit(j: Journal, link: FakeLink, items: list[OutboxItem]
             ) -> tuple[list[OutboxItem], list[Sent], list[OutboxItem]]:
    sent: list[Sent] = []
    unsendable: list[OutboxItem] = []
    outbox = Outbox(j, link, 1.0, lambda ok, why: None)  # type: ignore[arg-type]

    def cannot(item: OutboxItem, exc: Exception) -> None:
        assert isinstance(exc, MessageError | ValueError | KeyError)
        unsendable.append(item)

    unwritten = asyncio.run(outbox.transmit(items, cannot, sent.append))
    return unwritten, sent, unsendable


def test_the_send_path_marks_only_what_was_written(j: Journal) -> None:
    for amount in (1000, 2000, 3000):
        offline(j, amount)
    items = j.pending(Kind.ADVICE)
    unwritten, sent, _ = transmit(j, FakeLink(fail_at=3), items)
    assert [s.item.key for s in sent] == [i.key for i in items[:2]]
    assert [s.doc["t"] for s in sent] == ["0220", "0220"]
    assert unwritten == items[2:]
    marks = [r[0] for r in j.db.execute("SELECT written FROM advices ORDER BY id")]
    assert marks == [1, 1, 0]  # the third has its identity, but was never written
    # the next transmission of a written one is a repeat, of the other an original
    unwritten, sent, _ = transmit(j, FakeLink(), j.pending(Kind.ADVICE))
    assert [s.doc["t"] for s in sent] == ["0221", "0221", "0220"] and unwritten == []
    assert len({s.stan for s in sent}) == 3


def test_nothing_written_raises_and_an_unsendable_entry_is_handed_back(j: Journal) -> None:
    offline(j)
    with pytest.raises(HostUnreachableError):
        transmit(j, FakeLink(fail_at=1), j.pending(Kind.ADVICE))
    j.db.execute("UPDATE sales SET fields=json_set(fields, '$.41', 'TÉRM0001')")
    unwritten, sent, unsendable = transmit(j, FakeLink(), j.pending(Kind.ADVICE))
    assert (unwritten, sent) == ([], []) and [i.key.kind for i in unsendable] == [Kind.ADVICE]
    assert j.db.execute("SELECT written FROM advices").fetchone()[0] == 0


def test_unsendable_entries_leave_the_queue_and_are_counted(j: Journal) -> None:
    reversal(j)
    offline(j)
    for key in j.pending_keys(*Kind):
        j.unsendable(key, "MessageError: field 41")
    assert j.pending_keys(*Kind) == [] and j.queue_stats().unsendable == 2


def test_the_forwarder_has_one_send_path() -> None:
    """No reversal- or advice-specific copy of the send code is left in the forwarder, and
    the forwarder and the batch upload write through the one pipeline (pipeline.py)."""
    from firmware.runtime import batch, forwarder, pipeline

    text = pathlib.Path(forwarder.__file__).read_text()
    for gone in ("_send_reversals", "_send_advice_batch", 'k[0] == "r"', 'f"r{', 'f"a{'):
        assert gone not in text, gone
    assert text.count("self.pipe.send(") == 1 and "transmit(" not in text
    assert pathlib.Path(pipeline.__file__).read_text().count("self.outbox.transmit(") == 1
    close = pathlib.Path(batch.__file__).read_text()
    assert close.count("self.pipe.send(") == 1 and "transmit(" not in close
