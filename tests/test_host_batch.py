"""The simulated host's merchant day (host interface 1.1): refunds, voids, batch close, upload.

Raw ISO 8583 frames over loopback against `AcquirerHost`, as a terminal would
send them, then the same host driven through hwsim's control socket and CLI.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import iso8583
import pytest

from hwsim.client import HwsimClient, HwsimError
from hwsim.host import AcquirerHost
from tests.test_host_sim import F7, MID, PAN, SPEC, TID, Client, advice, entry, reversal, run, sale
from tests.test_hwsim_control import SimThread

Msg = dict[str, str]


# -- message builders (host-interface.md 1.1, section 4) --------------------------
def void(stan: int, original: Msg, answer: Msg | None = None, mti: str = "0400",
         f7: str = "0102031111") -> Msg:
    """A void: the reversal's fields without 2 and 14, reason 17, field 90, 37 if known."""
    msg = {k: original[k] for k in ("3", "4", "12", "13", "22", "25", "41", "42", "49", "60",
                                    "62")}  # fmt: skip
    first = original["t"][:3] + "0"  # the original's first transmission: 0200 or 0220
    msg.update({"t": mti, "7": f7, "11": f"{stan:06d}", "39": "17",
                "90": first + original["11"] + original["7"] + "0" * 22})
    if answer is not None:
        msg["37"] = answer["37"]
    return msg


def upload(stan: int, original: Msg, answer: Msg, mti: str = "0320",
           f7: str = "0102032222") -> Msg:
    """A batch upload of one transaction: no PAN, found by field 90."""
    msg = {k: original[k] for k in ("3", "4", "12", "13", "41", "42", "49", "60", "62")}
    approval = answer.get("38") or original.get("38", "")
    msg.update({"t": mti, "7": f7, "11": f"{stan:06d}", "37": answer["37"], "38": approval,
                "39": answer["39"],
                "90": original["t"][:3] + "0" + original["11"] + original["7"] + "0" * 22})
    return msg


def close(stan: int, refunds: int, purchases: int, refund_amount: int, purchase_amount: int,
          *, after_upload: bool = False, batch: str = "000001") -> Msg:
    return {"t": "0500", "3": "960000" if after_upload else "920000", "7": f"0102{stan:06d}",
            "11": f"{stan:06d}", "41": TID, "42": MID, "49": "978", "60": batch,
            "74": f"{refunds:010d}", "76": f"{purchases:010d}",
            "86": f"{refund_amount:016d}", "88": f"{purchase_amount:016d}"}


def refund(stan: int, amount: int = 1000, **kw: Any) -> Msg:
    return sale(stan, amount, pcode="200000", **kw)


def money(host: AcquirerHost) -> list[tuple[str, bool, bool]]:
    return [(e["stan"], e["charged"], e["credited"]) for e in host.ledger()]


# -- refunds ------------------------------------------------------------------------
def test_refund_is_credited_not_charged() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        req = refund(1, 2500)
        r = await c.call(req)
        assert (r["t"], r["39"], r["3"], r["4"]) == ("0210", "00", "200000", "000000002500")
        assert len(r["37"]) == 12 and len(r["38"]) == 6
        e = entry(host, 1)
        assert e["kind"] == "refund" and e["credited"] and not e["charged"]
        assert (e["batch"], e["invoice"], e["voided"]) == ("000001", "000001", False)
        assert (await c.call(refund(1, 2500)))["38"] == r["38"]  # replayed, credited once
        assert len(host.ledger()) == 1
        c.close()

    run(scenario)


@pytest.mark.parametrize("cents,code", [("05", "05"), ("51", "51"), ("54", "54")])
def test_refund_follows_the_amount_conventions(cents: str, code: str) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        r = await c.call(refund(2, int("30" + cents)))
        assert r["39"] == code and "38" not in r
        e = entry(host, 2)
        assert not e["credited"] and not e["charged"] and e["code"] == code
        c.close()

    run(scenario)


def test_busy_refund_is_not_recorded_and_is_processed_afresh() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        assert (await c.call(refund(3, 1096)))["39"] == "96"
        assert host.ledger() == []
        host.add_fault("busy", code="91")
        assert (await c.call(refund(4, 1000)))["39"] == "91"
        assert (await c.call(refund(4, 1000)))["39"] == "00"
        assert entry(host, 4)["credited"]
        c.close()

    run(scenario)


def test_refund_advice_is_answered_12_and_never_credited() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.set_default_answer("0220", "00")  # not even a forced approval credits it
        adv = {**advice(5, 700), "3": "200000"}
        r = await c.call(adv)
        assert (r["t"], r["39"]) == ("0230", "12")
        again = await c.call({**adv, "t": "0221"})
        assert (again["t"], again["39"], again["37"]) == ("0230", "12", r["37"])
        e = entry(host, 5)
        assert e["kind"] == "refund" and not e["credited"] and not e["charged"]
        c.close()

    run(scenario)


def test_plain_reversal_of_a_refund_takes_the_credit_back() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        original = refund(6, 900)
        await c.call(original)
        assert (await c.call(reversal(7, original)))["39"] == "00"
        e = entry(host, 6)
        assert not e["credited"] and e["reversed"] and not e["voided"]
        c.close()

    run(scenario)


# -- voids --------------------------------------------------------------------------
def test_void_of_a_purchase_undoes_the_charge_and_repeats_answer_alike() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        original = sale(11, 4200)
        answer = await c.call(original)
        v = void(12, original, answer)
        assert "2" not in v and "14" not in v and "35" not in v
        r = await c.call(v)
        assert (r["t"], r["39"]) == ("0410", "00")
        for f in ("3", "4", "7", "11", "41", "42", "49"):
            assert r[f] == v[f]
        e = entry(host, 11)
        assert not e["charged"] and e["voided"] and not e["reversed"]
        assert (await c.call({**v, "t": "0401"})) == r  # the same answer, nothing more
        assert (await c.call(void(13, original, answer, f7="0102031212")))["39"] == "00"
        assert len(host.ledger()) == 1 and not entry(host, 11)["charged"]
        assert [m["code"] for m in host.messages()] == ["00", "00", "00", "00"]
        c.close()

    run(scenario)


def test_void_of_a_refund_undoes_the_credit() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        original = refund(14, 1500)
        await c.call(original)
        assert (await c.call(void(15, original)))["39"] == "00"  # field 37 is optional
        e = entry(host, 14)
        assert not e["credited"] and not e["charged"] and e["voided"]
        c.close()

    run(scenario)


def test_void_of_an_accepted_advice_even_one_seen_only_as_0221() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        first = advice(16, 800)
        answer = await c.call(first)
        repeat_only = advice(17, 900, mti="0221")  # its 0220 was lost with a connection
        await c.call(repeat_only)
        assert entry(host, 16)["charged"] and entry(host, 17)["charged"]
        assert void(18, first, answer)["90"].startswith("0220000016")
        assert (await c.call(void(18, first, answer)))["39"] == "00"
        assert (await c.call(void(19, repeat_only, f7="0102031919")))["39"] == "00"
        assert not entry(host, 16)["charged"] and entry(host, 16)["voided"]
        assert not entry(host, 17)["charged"] and entry(host, 17)["voided"]
        c.close()

    run(scenario)


def test_void_of_what_was_never_charged_answers_00() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        declined = sale(21, 1051)
        assert (await c.call(declined))["39"] == "51"
        assert (await c.call(void(22, declined)))["39"] == "00"
        reversed_sale = sale(23, 700)
        await c.call(reversed_sale)
        await c.call(reversal(24, reversed_sale))
        assert (await c.call(void(25, reversed_sale, f7="0102032525")))["39"] == "00"
        e = entry(host, 23)
        assert e["reversed"] and e["voided"] and not e["charged"]
        assert money(host) == [("000021", False, False), ("000023", False, False)]
        c.close()

    run(scenario)


def test_void_of_an_unknown_original_then_the_original_is_refused() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        purchase, credit, adv = sale(31, 600), refund(32, 700), advice(33, 800)
        for stan, original in ((34, purchase), (35, credit), (36, adv)):
            r = await c.call(void(stan, original, f7=f"01020300{stan}"))
            assert (r["t"], r["39"]) == ("0410", "25")
        assert (await c.call({**void(34, purchase, f7="0102030034"), "t": "0401"}))["39"] == "25"
        assert host.ledger() == []
        host.set_default_answer("0200", "00")
        for original, mti in ((purchase, "0210"), (credit, "0210"), (adv, "0230")):
            r = await c.call(original)
            assert (r["t"], r["39"]) == (mti, "12") and "38" not in r
        for stan in (31, 32, 33):
            e = entry(host, stan)
            assert not e["charged"] and not e["credited"] and e["voided"] and e["code"] == "12"
        c.close()

    run(scenario)


@pytest.mark.parametrize("change,why", [
    ({"2": PAN}, "a void carries no card data, got field(s) 2"),
    ({"14": "3012"}, "a void carries no card data, got field(s) 14"),
    ({"90": "0400000041" + F7 + "0" * 22}, "names MTI 0400"),
    ({"90": "0200000041" + F7 + "1" * 22}, "field 90 is not MTI + STAN + field 7 + 22 zeros"),
])
def test_malformed_void_is_a_format_error_and_undoes_nothing(
        change: Msg, why: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        original = sale(41, 1200)
        await c.call(original)
        bad = {**void(42, original), **change}
        r = await c.call(bad)
        assert (r["t"], r["39"]) == ("0410", "30")
        assert entry(host, 41)["charged"]
        assert (await c.call(void(42, original)))["39"] == "00"  # a 30 is not stored
        assert not entry(host, 41)["charged"]
        c.close()

    run(scenario)
    assert why in caplog.text and PAN not in caplog.text


# -- batch close ----------------------------------------------------------------------
async def a_day(c: Client) -> dict[int, tuple[Msg, Msg]]:
    """A mixed batch 000001: what each request was and how the host answered."""
    sent: dict[int, tuple[Msg, Msg]] = {}
    for req in (sale(51, 1000), sale(52, 2000), sale(53, 3005), refund(54, 250),
                sale(55, 999, batch="000002"), advice(56, 400), sale(57, 5000),
                refund(58, 300), {**advice(59, 10), "3": "200000"}, sale(60, 70)):
        sent[int(req["11"])] = (req, await c.call(req))
    await c.call(reversal(61, sent[57][0]))  # purchase 5000 reversed
    await c.call(void(62, sent[58][0], sent[58][1]))  # refund 300 voided
    await c.call(void(63, sent[60][0], sent[60][1]))  # purchase 70 voided
    # counted in batch 000001: purchases 1000 + 2000 + 400 (advice), refund 250
    return sent


def test_close_in_balance_is_00_and_moves_no_money() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await a_day(c)
        before = host.ledger()
        req = close(70, 1, 3, 250, 3400)
        r = await c.call(req)
        assert (r["t"], r["39"]) == ("0510", "00")
        for f in ("3", "7", "11", "41", "42", "49"):
            assert r[f] == req[f]
        assert not {"74", "76", "86", "88", "60"} & set(r)
        assert (await c.call(close(71, 0, 1, 0, 999, batch="000002")))["39"] == "00"
        assert host.ledger() == before
        (b1, b2) = host.batches()
        assert (b1["batch"], b1["closed"], b2["batch"], b2["closed"]) == (
            "000001", True, "000002", True)
        (c1,) = b1["closes"]
        assert c1["terminal"] == c1["host"] == {"refunds": 1, "purchases": 3,
                                                "refund_amount": 250, "purchase_amount": 3400}
        assert (c1["code"], c1["forced"], c1["upload"], c1["differences"]) == ("00", False,
                                                                              None, [])
        c.close()

    run(scenario)


@pytest.mark.parametrize("totals", [
    (1, 4, 250, 3400),  # a purchase the host does not count
    (1, 3, 250, 3401),  # an amount one cent off
    (0, 3, 0, 3400),  # the refund forgotten
    (2, 3, 550, 3400),  # the voided refund still counted
])
def test_close_out_of_balance_is_95(totals: tuple[int, int, int, int]) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await a_day(c)
        before = host.ledger()
        r = await c.call(close(70, *totals))
        assert (r["t"], r["39"]) == ("0510", "95")
        assert host.ledger() == before
        (b,) = host.batches()
        (record,) = b["closes"]
        assert not b["closed"] and record["code"] == "95" and not record["forced"]
        assert tuple(record["terminal"].values()) == totals
        assert tuple(record["host"].values()) == (1, 3, 250, 3400)
        assert "differ from the host's" in record["differences"][0]
        c.close()

    run(scenario)


def test_each_close_is_compared_afresh() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        first = sale(81, 1000)
        answer = await c.call(first)
        await c.call(sale(82, 500))
        assert (await c.call(close(83, 0, 1, 0, 500)))["39"] == "95"
        assert (await c.call(close(84, 0, 2, 0, 1500)))["39"] == "00"
        await c.call(void(85, first, answer))  # the host does not refuse a later void
        assert (await c.call(close(86, 0, 2, 0, 1500)))["39"] == "95"
        assert (await c.call(close(87, 0, 1, 0, 500)))["39"] == "00"
        assert (await c.call(close(87, 0, 9, 0, 9)))["39"] == "00"  # same key: first answer
        assert [x["code"] for x in host.batches()[0]["closes"]] == ["95", "00", "95", "00"]
        c.close()

    run(scenario)


@pytest.mark.parametrize("change,why", [
    ({"3": "000000"}, "field 3 of a 0500 is '000000'"),
    ({"74": "00000000x1"}, "field 74 is not numeric"),
    ({"60": "1"}, "missing field(s) 60"),
])
def test_malformed_close_is_a_format_error(change: Msg, why: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        bad = {**close(90, 0, 0, 0, 0), **change}
        if change.get("60") == "1":
            del bad["60"]
        assert (await c.call(bad))["39"] == "30"
        assert host.batches() == []
        c.close()

    run(scenario)
    assert why in caplog.text


def test_batch_number_must_be_six_digits() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        assert (await c.call(close(91, 0, 0, 0, 0, batch="12")))["39"] == "30"
        assert (await c.call(sale(92, batch="12")))["39"] == "30"
        assert host.ledger() == []
        c.close()

    run(scenario)


# -- batch upload and the close after it ------------------------------------------------
async def upload_all(c: Client, sent: dict[int, tuple[Msg, Msg]], stans: list[int],
                     first: int = 100) -> None:
    for n, stan in enumerate(stans):
        req = upload(first + n, *sent[stan], f7=f"01020{first + n:05d}")
        r = await c.call(req)
        assert (r["t"], r["39"]) == ("0330", "00")
        for f in ("3", "4", "7", "11", "41", "42", "49"):
            assert r[f] == req[f]
        assert "2" not in req and "35" not in req


def test_forced_95_then_upload_then_960000_is_00() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        sent = await a_day(c)
        before = host.ledger()
        host.force_out_of_balance(1)
        assert (await c.call(close(70, 1, 3, 250, 3400)))["39"] == "95"
        assert host.out_of_balance_pending() == 0
        await upload_all(c, sent, [51, 52, 54, 56])
        r = await c.call(close(71, 1, 3, 250, 3400, after_upload=True))
        assert (r["t"], r["3"], r["39"]) == ("0510", "960000", "00")
        assert host.ledger() == before
        (b,) = host.batches()
        assert b["closed"]
        assert [(u["original"][:10], u["status"]) for u in b["uploads"]] == [
            ("0200000051", "matched"), ("0200000052", "matched"), ("0200000054", "matched"),
            ("0220000056", "matched")]
        forced, after = b["closes"]
        assert forced["forced"] and forced["code"] == "95" and forced["differences"] == []
        assert after["upload"] == after["terminal"] == after["host"]
        c.close()

    run(scenario)


def test_upload_of_a_transaction_the_host_never_counted_leaves_960000_at_95() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        sent = await a_day(c)
        # the terminal believes sale 90 was approved; the host never saw it (and voided
        # it unknown), and it also counts the reversed sale 57
        ghost = sale(90, 4000)
        assert (await c.call(void(91, ghost)))["39"] == "25"
        sent[90] = (ghost, {"37": "000000000090", "38": "123456", "39": "00"})
        before = host.ledger()
        assert (await c.call(close(92, 1, 5, 250, 12400)))["39"] == "95"
        await upload_all(c, sent, [51, 52, 54, 56, 57, 90])
        assert host.ledger() == before  # an upload never charges or credits
        assert (await c.call(close(93, 1, 5, 250, 12400, after_upload=True)))["39"] == "95"
        (b,) = host.batches()
        assert b["closed"]  # a 960000 closes the batch, in balance or not
        status = {u["original"][4:10]: u["status"] for u in b["uploads"]}
        assert status["000090"] == "unknown to the host"
        assert status["000057"].startswith("not charged at the host (reversed)")
        assert status["000051"] == "matched"
        assert any("uploaded 0200000090" in d for d in b["closes"][-1]["differences"])
        c.close()

    run(scenario)


def test_960000_is_95_when_a_counted_transaction_was_not_uploaded() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        sent = await a_day(c)
        host.force_out_of_balance(1)
        await c.call(close(70, 1, 3, 250, 3400))
        await upload_all(c, sent, [51, 52, 54])  # the advice 56 left out
        assert (await c.call(close(71, 1, 3, 250, 3400, after_upload=True)))["39"] == "95"
        diffs = host.batches()[0]["closes"][-1]["differences"]
        assert any("stan=000056" in d and "never uploaded" in d for d in diffs)
        c.close()

    run(scenario)


def test_upload_is_idempotent_and_a_repeat_may_come_first() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        sent = await a_day(c)
        up = upload(100, *sent[51])
        first = await c.call(up)
        again = await c.call({**up, "t": "0321"})
        assert first == again and first["t"] == "0330" and first["39"] == "00"
        only_repeat = await c.call(upload(101, *sent[52], mti="0321"))
        assert (only_repeat["t"], only_repeat["39"]) == ("0330", "00")
        (b,) = host.batches()
        assert [u["stan"] for u in b["uploads"]] == ["000100", "000101"]
        assert [m["mti"] for m in host.messages()][-3:] == ["0320", "0321", "0321"]
        c.close()

    run(scenario)


@pytest.mark.parametrize("change,why", [
    ({"2": PAN}, "a batch upload carries no card data"),
    ({"90": "0400000051" + F7 + "0" * 22}, "field 90 is not MTI 0200/0220"),
    ({"3": "310000"}, "not a purchase (000000) or a refund (200000)"),
])
def test_malformed_upload_is_a_format_error(change: Msg, why: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        sent = await a_day(c)
        r = await c.call({**upload(100, *sent[51]), **change})
        assert (r["t"], r["39"]) == ("0330", "30")
        assert host.batches() == []
        c.close()

    run(scenario)
    assert why in caplog.text and PAN not in caplog.text


# -- control: forced out of balance, faults on 0500 and 0320 ------------------------------
def test_forced_out_of_balance_counts_and_clears() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        with pytest.raises(ValueError, match="count must be 0"):
            host.force_out_of_balance(-1)
        host.force_out_of_balance(2)
        codes = [(await c.call(close(stan, 0, 0, 0, 0)))["39"] for stan in (1, 2, 3)]
        assert codes == ["95", "95", "00"]
        host.force_out_of_balance(0)
        assert host.out_of_balance_pending() is None
        codes = [(await c.call(close(stan, 0, 0, 0, 0)))["39"] for stan in (4, 5, 6)]
        assert codes == ["95", "95", "95"]
        host.clear_faults()  # clears the forced answers too
        assert (await c.call(close(7, 0, 0, 0, 0)))["39"] == "00"
        host.force_out_of_balance(1)
        host.add_fault("busy", mti="0500")  # not processed: the forced 95 waits
        assert (await c.call(close(8, 0, 0, 0, 0)))["39"] == "91"
        assert host.out_of_balance_pending() == 1
        assert (await c.call(close(8, 0, 0, 0, 0)))["39"] == "95"
        assert [x["forced"] for x in host.batches()[0]["closes"]] == [
            True, True, False, True, True, True, False, True]
        c.close()

    run(scenario)


def test_message_faults_apply_to_0500_and_0320() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        sent = await a_day(c)
        host.add_fault("swallow", mti="0500")
        await c.send(close(70, 1, 3, 250, 3400))
        assert await c.silent(0.2)
        assert host.batches()[0]["closes"][0]["code"] == "00"  # processed, answer lost
        host.add_fault("drop_before_read", mti="0500")
        await c.send(close(71, 1, 3, 250, 3400))
        assert await c.closed_by_peer()
        assert len(host.batches()[0]["closes"]) == 1
        c = await Client.connect(port)
        host.add_fault("malformed", mti="0500")
        await c.send(close(72, 1, 3, 250, 3400))
        with pytest.raises(iso8583.DecodeError):
            iso8583.decode(bytearray(await c.recv_raw()), SPEC)
        host.add_fault("decline", mti="0500", code="96")
        assert (await c.call(close(73, 1, 3, 250, 3400)))["39"] == "96"

        up = upload(100, *sent[51])
        host.add_fault("drop_after_post", mti="0320")
        await c.send(up)
        assert await c.closed_by_peer()
        assert [u["stan"] for u in host.batches()[0]["uploads"]] == ["000100"]
        c = await Client.connect(port)
        host.add_fault("delay", mti="0321", seconds=0.3)  # the class: 0320 and 0321
        await c.send({**up, "t": "0321"})
        await c.send(upload(101, *sent[52]))
        assert (await c.recv())["11"] == "000101"  # the delayed one does not hold it back
        assert (await c.recv())["11"] == "000100"
        host.add_fault("decline", mti="0320", code="12")
        assert (await c.call(upload(102, *sent[54])))["39"] == "12"
        host.add_fault("busy", mti="0320", code="96")
        assert (await c.call(upload(103, *sent[56])))["39"] == "96"
        assert len(host.batches()[0]["uploads"]) == 2  # refused and busy uploads not kept
        host.add_fault("late", mti="0500", seconds=0.2)
        await c.send(close(74, 1, 3, 250, 3400))
        assert (await c.recv())["39"] == "00"
        faults = [m["fault"] for m in host.messages() if m["mti"] in ("0500", "0320", "0321")]
        assert faults == ["swallow", "drop_before_read", "malformed", "decline",
                          "drop_after_post", "delay", None, "decline", "busy", "late"]
        c.close()

    run(scenario)


# -- the same through hwsim's control socket and CLI -------------------------------------
@pytest.fixture(scope="module")
def hwsim_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimThread]:
    sim = SimThread(str(tmp_path_factory.mktemp("hwsim")), seed=3)
    yield sim
    sim.stop()


def _call(port: int, msg: Msg) -> Msg:
    raw, _ = iso8583.encode(dict(msg), SPEC)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))
        f = sock.makefile("rb")
        (length,) = struct.unpack(">H", f.read(2))
        doc, _ = iso8583.decode(bytearray(f.read(length)), SPEC)
    return doc


def test_control_and_cli(hwsim_running: SimThread) -> None:
    port = hwsim_running.info["host_port"]
    client = HwsimClient(hwsim_running.sim.socket_path, timeout=5)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hwsim", "ctl", "--dir",
                               hwsim_running.sim.dir, *args],
                              capture_output=True, text=True, timeout=15)  # fmt: skip

    purchase, credit = sale(1, 1000), refund(2, 300)
    answer = _call(port, purchase)
    _call(port, credit)
    _call(port, void(3, credit))
    assert client.host_out_of_balance(1) == 1
    assert _call(port, close(4, 0, 1, 0, 1000))["39"] == "95"
    assert _call(port, upload(5, purchase, answer))["39"] == "00"
    assert _call(port, close(6, 0, 1, 0, 1000, after_upload=True))["39"] == "00"

    ledger = ctl("ledger")
    assert ledger.returncode == 0
    lines = ledger.stdout.splitlines()
    assert "kind=purchase" in lines[0] and "charged=True" in lines[0] and "batch=000001" in lines[0]
    assert "kind=refund" in lines[1] and "credited=False" in lines[1] and "voided=True" in lines[1]
    assert "invoice=000002" in lines[1] and PAN not in ledger.stdout

    shown = ctl("batches")
    assert shown.returncode == 0, shown.stderr
    assert "terminal 'TERM0001' batch 000001: CLOSED" in shown.stdout
    assert "0500 920000 stan=000004: answered 95 (forced)" in shown.stdout
    assert "0500 960000 stan=000006: answered 00" in shown.stdout
    assert "uploaded: 1 purchases 1000, 0 refunds 0" in shown.stdout
    assert "0320 stan=000005 of 0200 stan=000001: purchase 1000 invoice 000001: matched" in (
        shown.stdout)
    as_json = json.loads(ctl("--json", "batches").stdout)
    assert as_json["batches"] == client.batches()

    assert ctl("out-of-balance", "--count", "0").stdout.strip() == (
        "every batch close answered 95 until cleared")
    assert _call(port, close(7, 0, 1, 0, 1000))["39"] == "95"
    assert ctl("out-of-balance", "--clear").returncode == 0
    assert _call(port, close(8, 0, 1, 0, 1000))["39"] == "00"
    assert ctl("out-of-balance", "--count", "2").stdout.strip() == (
        "next 2 batch close(s) answered 95")
    client.host_clear()
    assert _call(port, close(9, 0, 1, 0, 1000))["39"] == "00"

    assert ctl("fault", "busy", "--mti", "0500").returncode == 0
    assert _call(port, close(10, 0, 1, 0, 1000))["39"] == "91"
    assert ctl("fault", "decline", "--mti", "0320", "--code", "12").returncode == 0
    assert _call(port, upload(11, purchase, answer))["39"] == "12"
    bad = ctl("fault", "swallow", "--mti", "0510")
    assert bad.returncode == 1 and "fault MTI must be a request class" in bad.stderr
    with pytest.raises(HwsimError, match="unknown colour; known: count, clear"):
        client.request("host_out_of_balance", colour="red")
    with pytest.raises(HwsimError, match="'count' must be int"):
        client.request("host_out_of_balance", count="two")
    client.host_out_of_balance(0)
    client.host_out_of_balance_clear()
    assert _call(port, close(12, 0, 1, 0, 1000))["39"] == "00"
