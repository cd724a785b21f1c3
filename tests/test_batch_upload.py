"""The batch upload pipelined (host-interface.md 4, 0320: "pipelined like advices, up to
the advice window outstanding"), against the simulated acquirer host in-process.

Sales are made through the real Authorizer and HostLink (tests/test_batch.py's
`Bench`), the host is told to answer the first 0500 95, and the close uploads
through the real engine. What the host saw is read from its message log (each
request with the time it arrived) and its settlement records (one upload claim per
original transaction, whatever the repeats).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import pytest

from firmware.core.events import CloseFinished
from tests.test_batch import Bench, _batch_record, run

UPLOADS = ("0320", "0321")


def _most_in_flight(messages: list[dict[str, Any]], latency: float) -> int:
    """The most 0320s the host held unanswered at once. Every answer leaves the host
    `latency` seconds after its request came in, at the earliest, so a request that came
    in less than `latency` after another was written before that other's answer could
    have reached the terminal: both were outstanding together."""
    times = [m["time"] for m in messages if m["mti"] in UPLOADS]
    return max(sum(1 for t in times if now - latency < t <= now) for now in times)


def _after_every_upload(b: Bench) -> None:
    """The 960000 came after every 0320 / 0321 the host received."""
    messages = b.host.messages()
    last_upload = max(n for n, m in enumerate(messages) if m["mti"] in UPLOADS)
    after = [m for m in messages[last_upload:] if m["mti"] == "0500"]
    assert [m["fields"]["3"] for m in after] == ["960000"], after


def _each_once(b: Bench, sale_ids: list[int]) -> None:
    """The host holds one upload claim per counted sale, every one matched, and the
    journal every item answered."""
    items = b.journal.upload_items(1, pending_only=False)
    assert [i.sale_id for i in items] == sale_ids
    assert all(i.state == "answered" for i in items)
    uploads = _batch_record(b.host, 1)["uploads"]
    assert len(uploads) == len(sale_ids)
    assert [u["status"] for u in uploads] == ["matched"] * len(sale_ids)
    # each item its own STAN, its original (0320) sent at most once; an original written
    # when the connection broke may reach the host only as its repeat (host-interface 1)
    assert len({i.stan for i in items}) == len(items)
    assert {m["stan"] for m in b.sent(*UPLOADS)} == {i.stan for i in items}
    firsts = [m["stan"] for m in b.sent("0320")]
    assert len(firsts) == len(set(firsts))


def test_the_upload_keeps_up_to_the_window_outstanding(tmp_path: pathlib.Path) -> None:
    """With a round trip of 0.2 s and a window of 4, the host holds more than one 0320
    unanswered at once and never more than 4; each sale is uploaded once, and the
    960000 comes after every 0330."""
    latency, window = 0.2, 4

    async def scenario(b: Bench) -> None:
        ids = [await b.sale(1000 + 100 * n) for n in range(20)]
        b.host.force_out_of_balance(1)
        b.host.set_latency(latency)
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=True)
        most = _most_in_flight(b.host.messages(), latency)
        assert 1 < most <= window, most
        assert [m["mti"] for m in b.sent(*UPLOADS)] == ["0320"] * 20
        _each_once(b, ids)
        _after_every_upload(b)
        assert b.progress()[0] == "SENDING TOTALS" and b.progress()[-1] == "CHECKING TOTALS"
        assert b.progress()[1] == "UPLOADING 4 OF 20"

    run(scenario, tmp_path, window=window)


def test_a_connection_lost_mid_upload_resumes_without_duplicates_or_gaps(
        tmp_path: pathlib.Path) -> None:
    """The host drops the connection on the 11th 0320 (its answer decided, never sent):
    the answers in flight are lost with it, those items go again as 0321 on a new
    connection, and the host's books end with every transaction uploaded exactly once,
    in balance."""
    async def scenario(b: Bench) -> None:
        ids = [await b.sale(2000 + 100 * n) for n in range(30)]
        b.host.force_out_of_balance(1)
        for _ in range(10):  # the first ten 0320s pass untouched (a delay of 0 s)
            b.host.add_fault("delay", count=1, mti="0320", seconds=0.0)
        b.host.add_fault("drop_after_post", count=1, mti="0320")
        attempts = b.host.connection_attempts()
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=True)
        assert b.host.connection_attempts() > attempts  # a new connection for the rest
        sent = b.sent(*UPLOADS)
        repeats = [m for m in sent if m["mti"] == "0321"]
        assert repeats, "the items in flight when the connection dropped were repeated"
        _each_once(b, ids)
        _after_every_upload(b)

    run(scenario, tmp_path, window=8)


def test_an_error_code_mid_pipeline_is_logged_and_the_upload_goes_on(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 0330 with 39 = 12 for the 4th item: logged, never repeated, the other items
    go on; the 960000 follows every answer, and the host (which did not record that
    claim) answers 95: the batch closes OUT OF BALANCE, as the contract says. A busy
    0330 (91) for the 7th is repeated as 0321 and the upload goes on as well."""
    caplog.set_level(logging.INFO, logger="posterm.batch")

    async def scenario(b: Bench) -> None:
        ids = [await b.sale(3000 + 100 * n) for n in range(10)]
        b.host.force_out_of_balance(1)
        for n in range(10):
            if n == 3:
                b.host.add_fault("decline", count=1, mti="0320", code="12")
            elif n == 6:
                b.host.add_fault("busy", count=1, mti="0320", code="91")
            else:
                b.host.add_fault("delay", count=1, mti="0320", seconds=0.0)
        done = await b.close()
        assert done == CloseFinished(True, 1, balanced=False, message="OUT OF BALANCE")
        sent = b.sent(*UPLOADS)
        assert [m["mti"] for m in sent].count("0320") == 10
        assert [m["mti"] for m in sent].count("0321") == 1  # only the busy one again
        items = b.journal.upload_items(1, pending_only=False)
        assert [i.code for i in items] == ["00"] * 3 + ["12"] + ["00"] * 6
        assert [i.sale_id for i in items] == ids
        assert f"the host answered 12 to the upload of sale {ids[3]}" in caplog.text
        assert "the upload goes on" in caplog.text
        _after_every_upload(b)
        closes = _batch_record(b.host, 1)["closes"]
        assert [c["processing_code"] for c in closes] == ["920000", "960000"]

    run(scenario, tmp_path)


def test_an_item_never_answered_stops_the_upload_and_the_next_close_resumes_it(
        tmp_path: pathlib.Path) -> None:
    """The 2nd item's answer is lost three times (UPLOAD_TRIES): the close stops with NO
    ANSWER once the others in flight are answered, no 960000 is sent; the next close
    sends only that item, as a 0321, then the 960000."""
    async def scenario(b: Bench) -> None:
        ids = [await b.sale(4000 + 100 * n) for n in range(6)]
        b.host.force_out_of_balance(1)
        # in the order the host receives them: the six 0320s, then the 2nd's repeats
        for fault in ["delay", "swallow", "delay", "delay", "delay", "delay", "swallow",
                      "swallow"]:
            b.host.add_fault(fault, count=1, mti="0320",
                             **({"seconds": 0.0} if fault == "delay" else {}))
        first = await b.close()
        assert first == CloseFinished(False, 1, message="NO ANSWER")
        close = b.journal.batch_close(1)
        assert close is not None and close.state == "uploading"
        assert not [m for m in b.sent("0500") if m["fields"]["3"] == "960000"]
        pending = b.journal.upload_items(1)
        assert pending, "an item is still to be uploaded"
        before = len(b.sent(*UPLOADS))
        again = await b.close()
        assert again == CloseFinished(True, 1, balanced=True)
        resent = b.sent(*UPLOADS)[before:]
        assert {m["mti"] for m in resent} == {"0321"}
        assert {m["stan"] for m in resent} == {i.stan for i in pending}
        _each_once(b, ids)
        _after_every_upload(b)

    run(scenario, tmp_path, response_timeout=0.3)
