"""The simulated acquirer host over loopback: protocol, ledger, faults, TLS."""

from __future__ import annotations

import asyncio
import random
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import iso8583
import iso8583.specs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.host import AcquirerHost, server_tls_context
from hwsim.hostfaults import FaultPlan
from hwsim import testca as tlsutil
from hwsim.ledger import Books

SPEC = iso8583.specs.default
PAN = "4761739001010010"
TRACK2 = f"{PAN}=30122011000000000000"
TID = "TERM0001"
MID = "MERCHANT0000001"
F7 = "0102030405"
T = 2.0  # generous read timeout; only reached when a test fails


# -- a small terminal-side client ------------------------------------------
class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, **kw: Any) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kw)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, msg: dict[str, str]) -> None:
        raw, _ = iso8583.encode(dict(msg), SPEC)
        await self.send_raw(struct.pack(">H", len(raw)) + bytes(raw))

    async def recv_raw(self, timeout: float = T) -> bytes:
        header = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        (length,) = struct.unpack(">H", header)
        return await asyncio.wait_for(self.reader.readexactly(length), timeout)

    async def recv(self, timeout: float = T) -> dict[str, str]:
        doc, _ = iso8583.decode(bytearray(await self.recv_raw(timeout)), SPEC)
        return doc

    async def call(self, msg: dict[str, str]) -> dict[str, str]:
        await self.send(msg)
        return await self.recv()

    async def silent(self, seconds: float) -> bool:
        """True when nothing arrives for `seconds` (and the connection stays open)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except asyncio.TimeoutError:
            return True
        raise AssertionError(f"expected silence, got {data!r}")

    async def closed_by_peer(self) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(100), T)
        except ConnectionResetError:
            return True
        return data == b""

    def close(self) -> None:
        self.writer.close()


def run(scenario: Callable[[AcquirerHost, int], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        host = AcquirerHost(rng_seed=7, **kw)
        port = await host.start()
        try:
            await scenario(host, port)
        finally:
            await host.stop()

    asyncio.run(main())


# -- message builders --------------------------------------------------------
def sale(stan: int, amount: int = 1000, pcode: str = "000000", f7: str = F7,
         batch: str = "000001") -> dict[str, str]:
    return {
        "t": "0200", "2": PAN, "3": pcode, "4": f"{amount:012d}", "7": f7,
        "11": f"{stan:06d}", "12": "120000", "13": "0102", "14": "3012", "22": "901",
        "25": "00", "35": TRACK2, "41": TID, "42": MID, "49": "978", "60": batch,
        "62": f"{stan:06d}",
    }


def advice(stan: int, amount: int = 1000, mti: str = "0220") -> dict[str, str]:
    msg = sale(stan, amount)
    del msg["35"]
    msg.update({"t": mti, "38": "Y31234", "22": "011"})
    return msg


def reversal(stan: int, original: dict[str, str], mti: str = "0400",
             reason: str = "68") -> dict[str, str]:
    msg = {k: original[k] for k in ("2", "3", "4", "12", "13", "14", "22", "25", "41", "42",
                                    "49", "60", "62")}
    msg.update({"t": mti, "7": "0102030999", "11": f"{stan:06d}", "39": reason,
                "90": original["t"] + original["11"] + original["7"] + "0" * 22})
    return msg


def signon(stan: int, code: str = "001") -> dict[str, str]:
    return {"t": "0800", "7": F7, "11": f"{stan:06d}", "41": TID, "70": code}


def reconcile(stan: int, refunds: int, purchases: int, refund_amount: int,
              purchase_amount: int, batch: str = "000001") -> dict[str, str]:
    return {"t": "0500", "3": "920000", "7": F7, "11": f"{stan:06d}", "41": TID, "42": MID,
            "49": "978",
            "60": batch, "74": f"{refunds:010d}", "76": f"{purchases:010d}",
            "86": f"{refund_amount:016d}", "88": f"{purchase_amount:016d}"}


def entry(host: AcquirerHost, stan: int) -> dict[str, Any]:
    found = [e for e in host.ledger() if e["stan"] == f"{stan:06d}"]
    assert len(found) == 1, found
    return found[0]


# -- network management and sales --------------------------------------------
def test_signon_and_echo_are_answered_00() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        for stan, code in ((1, "001"), (2, "301")):
            r = await c.call(signon(stan, code))
            assert r["t"] == "0810" and r["39"] == "00"
            assert (r["7"], r["11"], r["41"], r["70"]) == (F7, f"{stan:06d}", TID, code)
        assert host.ledger() == []
        c.close()

    run(scenario)


def test_sale_is_approved_echoed_and_charged() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        req = sale(11, 2345)
        r = await c.call(req)
        assert r["t"] == "0210" and r["39"] == "00"
        for f in ("3", "4", "7", "11", "41", "42", "49"):
            assert r[f] == req[f]
        assert len(r["37"]) == 12 and len(r["38"]) == 6
        assert "2" not in r and "35" not in r
        e = entry(host, 11)
        assert e["charged"] and not e["reversed"]
        assert (e["amount"], e["currency"], e["mti"], e["tid"]) == (2345, "978", "0200", TID)
        assert (e["approval"], e["rrn"], e["code"]) == (r["38"], r["37"], "00")
        assert e["pan"] == "476173******0010" and e["processing_code"] == "000000"
        assert e["offline_approval"] is None
        assert PAN not in repr(host.ledger()) + repr(host.messages())
        (m,) = host.messages()
        assert (m["mti"], m["tid"], m["stan"], m["f7"], m["code"]) == ("0200", TID, "000011",
                                                                       F7, "00")
        c.close()

    run(scenario)


def test_rrns_are_unique_and_seeded_host_is_reproducible() -> None:
    answers: list[list[tuple[str, str]]] = []

    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        got = []
        for stan in range(1, 6):
            r = await c.call(sale(stan))
            got.append((r["37"], r["38"]))
        answers.append(got)
        c.close()

    run(scenario)
    run(scenario)
    assert answers[0] == answers[1]
    assert len({rrn for rrn, _ in answers[0]}) == 5


@pytest.mark.parametrize("cents,code,recorded", [
    ("05", "05", True), ("51", "51", True), ("54", "54", True),
    ("91", "91", False), ("96", "96", False), ("00", "00", True), ("55", "00", True),
])
def test_amount_conventions(cents: str, code: str, recorded: bool) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        r = await c.call(sale(5, int("12" + cents)))
        assert r["39"] == code and len(r["37"]) == 12
        assert ("38" in r) == (code == "00")
        ledger = host.ledger()
        if recorded:
            assert ledger[0]["code"] == code and ledger[0]["charged"] == (code == "00")
        else:
            assert ledger == []
        c.close()

    run(scenario)


def test_conventions_do_not_apply_to_advices() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        r = await c.call(advice(3, 1205))
        assert r["t"] == "0230" and r["39"] == "00"
        assert entry(host, 3)["charged"]
        c.close()

    run(scenario)


def test_refund_is_recorded_as_refund() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        r = await c.call(sale(8, 500, pcode="200000"))
        assert r["39"] == "00" and r["3"] == "200000"
        e = entry(host, 8)
        assert e["credited"] and not e["charged"] and e["kind"] == "refund"
        assert e["processing_code"] == "200000"
        r = await c.call(sale(9, 500, pcode="310000"))
        e = entry(host, 9)
        assert r["39"] == "12" and not e["charged"] and not e["credited"]
        c.close()

    run(scenario)


def test_repeat_gets_the_first_answer_and_charges_once() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        first = await c.call(sale(21))
        again = await c.call(sale(21))
        assert first == again
        assert len(host.ledger()) == 1 and host.ledger()[0]["charged"]
        # a declined answer is stored too
        d1 = await c.call(sale(22, 1005))
        host.set_default_answer("0200", "00")
        d2 = await c.call(sale(22, 1005))
        assert d1["39"] == d2["39"] == "05" and d1["37"] == d2["37"]
        c.close()

    run(scenario)


def test_busy_answers_are_not_stored() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("busy", code="96")
        r = await c.call(sale(31))
        assert r["39"] == "96" and host.ledger() == []
        r = await c.call(sale(31))  # same key: processed afresh
        assert r["39"] == "00" and entry(host, 31)["charged"]
        # the 91 convention: a repeat is processed again, never recorded
        assert (await c.call(sale(32, 1091)))["39"] == "91"
        assert (await c.call(sale(32, 1091)))["39"] == "91"
        assert len(host.ledger()) == 1
        c.close()

    run(scenario)


# -- reversals ---------------------------------------------------------------
def test_reversal_of_charged_sale_uncharges_it_and_is_idempotent() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        original = sale(41, 777)
        assert (await c.call(original))["39"] == "00"
        rev = reversal(42, original)
        r = await c.call(rev)
        assert r["t"] == "0410" and r["39"] == "00"
        for f in ("3", "4", "7", "11", "41", "42", "49"):
            assert r[f] == rev[f]
        e = entry(host, 41)
        assert not e["charged"] and e["reversed"]
        r = await c.call(reversal(42, original, mti="0401"))
        assert r["t"] == "0410" and r["39"] == "00"
        assert len(host.ledger()) == 1 and not entry(host, 41)["charged"]
        c.close()

    run(scenario)


def test_reversal_of_declined_sale_answers_00() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        original = sale(43, 1051)
        assert (await c.call(original))["39"] == "51"
        assert (await c.call(reversal(44, original, reason="06")))["39"] == "00"
        assert not entry(host, 43)["charged"]
        c.close()

    run(scenario)


def test_reversal_of_unknown_original_then_original_is_never_charged() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        original = sale(51, 900)
        r = await c.call(reversal(52, original))
        assert r["39"] == "25" and host.ledger() == []
        host.set_default_answer("0200", "00")  # not even a forced approval charges it
        r = await c.call(original)
        assert r["39"] == "12" and "38" not in r
        e = entry(host, 51)
        assert not e["charged"] and e["code"] == "12"
        # same STAN, other field 7: a different message, charged normally
        assert (await c.call(sale(51, 900, f7="0102039999")))["39"] == "00"
        c.close()

    run(scenario)


# -- advices -------------------------------------------------------------------
def test_advice_accepted_and_repeat_charges_once() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        first = await c.call(advice(61, 4200))
        assert first["t"] == "0230" and first["39"] == "00"
        again = await c.call(advice(61, 4200, mti="0221"))
        assert again["t"] == "0230" and again["39"] == "00"
        (e,) = host.ledger()
        assert e["charged"] and e["offline_approval"] == "Y31234" and e["mti"] == "0220"
        assert e["amount"] == 4200
        c.close()

    run(scenario)


def test_refused_advice_is_recorded_not_charged() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.set_default_answer("0221", "05")  # the class: 0220 and 0221
        assert (await c.call(advice(62)))["39"] == "05"
        e = entry(host, 62)
        assert not e["charged"] and e["code"] == "05"
        host.set_default_answer("0220", "91")  # not processed: nothing recorded
        assert (await c.call(advice(63)))["39"] == "91"
        host.set_default_answer("0220", None)
        assert (await c.call(advice(63, mti="0221")))["39"] == "00"
        assert entry(host, 63)["charged"]
        c.close()

    run(scenario)


# -- reconciliation --------------------------------------------------------------
def test_reconciliation_balances_against_the_ledger() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await c.call(sale(71, 1000))
        await c.call(sale(72, 2000))
        await c.call(sale(73, 3005))  # declined: not counted
        await c.call(sale(74, 250, pcode="200000"))
        await c.call(sale(75, 999, batch="000002"))  # other batch
        await c.call(advice(76, 400))
        await c.call(reversal(77, sale(72, 2000)))
        r = await c.call(reconcile(78, 1, 2, 250, 1400))
        assert r["t"] == "0510" and r["39"] == "00"
        assert (r["7"], r["11"], r["41"], r["42"], r["49"]) == (F7, "000078", TID, MID, "978")
        assert (await c.call(reconcile(79, 1, 3, 250, 3400)))["39"] == "95"
        assert (await c.call(reconcile(80, 0, 1, 0, 999, batch="000002")))["39"] == "00"
        c.close()

    run(scenario)


# -- several requests outstanding -------------------------------------------------
def test_delayed_answer_does_not_block_others() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("delay", seconds=0.4)
        await c.send(sale(81))
        await c.send(sale(82))
        first = await c.recv()
        assert first["11"] == "000082"
        assert entry(host, 81)["charged"]  # processed before it is answered
        second = await c.recv()
        assert second["11"] == "000081" and second["39"] == "00"
        c.close()

    run(scenario)


def test_late_answer_arrives_after_the_reversal_was_processed() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("late", seconds=0.3)
        original = sale(83)
        await c.send(original)
        r = await c.call(reversal(84, original))
        assert r["t"] == "0410" and r["39"] == "00"
        late = await c.recv()
        assert late["t"] == "0210" and late["39"] == "00"
        assert not entry(host, 83)["charged"]
        c.close()

    run(scenario)


# -- faults ------------------------------------------------------------------------
def test_swallow_posts_but_never_answers() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("swallow")
        await c.send(sale(91))
        assert await c.silent(0.3)
        assert entry(host, 91)["charged"]
        assert host.messages()[-1]["code"] is None
        assert (await c.call(sale(92)))["39"] == "00"  # only one request swallowed
        c.close()

    run(scenario)


def test_drop_after_post_closes_with_the_charge_posted() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("drop_after_post")
        await c.send(sale(93))
        assert await c.closed_by_peer()
        assert entry(host, 93)["charged"]
        c2 = await Client.connect(port)
        assert (await c2.call(reversal(94, sale(93))))["39"] == "00"
        assert not entry(host, 93)["charged"]
        c.close()
        c2.close()

    run(scenario)


def test_drop_before_read_closes_unprocessed() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("drop_before_read")
        await c.send(sale(95))
        assert await c.closed_by_peer()
        assert host.ledger() == []
        c2 = await Client.connect(port)
        assert (await c2.call(reversal(96, sale(95))))["39"] == "25"
        c.close()
        c2.close()

    run(scenario)


def test_malformed_answer_after_posting() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("malformed")
        await c.send(sale(97))
        raw = await c.recv_raw()
        assert 0 < len(raw) <= 2048
        with pytest.raises(iso8583.DecodeError):
            iso8583.decode(bytearray(raw), SPEC)
        assert entry(host, 97)["charged"]
        assert (await c.call(sale(98)))["39"] == "00"
        c.close()

    run(scenario)


def test_decline_fault_is_stored_and_not_charged() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("decline", code="57")
        assert (await c.call(sale(99)))["39"] == "57"
        assert (await c.call(sale(99)))["39"] == "57"  # the stored first answer
        e = entry(host, 99)
        assert not e["charged"] and e["code"] == "57"
        c.close()

    run(scenario)


def test_fault_matching_by_class_and_count() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("busy", count=2, mti="0400")
        host.add_fault("decline", count=1, mti="*", code="05")
        original = sale(101)
        assert (await c.call(signon(100)))["39"] == "05"  # '*' takes the first request
        assert (await c.call(original))["39"] == "00"
        assert (await c.call(reversal(102, original)))["39"] == "91"
        assert (await c.call(reversal(102, original, mti="0401")))["39"] == "91"
        assert (await c.call(reversal(102, original, mti="0401")))["39"] == "00"
        host.add_fault("busy", count=0, mti="0800")  # until cleared
        for stan in (103, 104, 105):
            assert (await c.call(signon(stan, "301")))["39"] == "91"
        host.clear_faults()
        assert (await c.call(signon(106, "301")))["39"] == "00"
        c.close()

    run(scenario)


def test_fault_requests_are_validated() -> None:
    plan = FaultPlan()
    for kind, kw in (("explode", {}), ("delay", {}), ("busy", {"code": "05"}),
                     ("swallow", {"seconds": 1}), ("late", {"seconds": -1})):
        with pytest.raises(ValueError):
            plan.add(kind, **kw)
    with pytest.raises(ValueError):
        plan.add("swallow", count=-1)
    with pytest.raises(ValueError):
        plan.add("swallow", mti="02")
    assert plan.pending() == []


def test_refuse_resets_the_next_connection_attempts() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        host.add_fault("refuse", count=2)
        for _ in range(2):
            c = await Client.connect(port)
            with pytest.raises(ConnectionResetError):
                await c.recv()
            c.close()
        c = await Client.connect(port)
        assert (await c.call(signon(2)))["39"] == "00"
        assert host.connection_attempts() == 3
        c.close()

    run(scenario)


def test_blackhole_discards_then_answers() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        host.add_fault("blackhole", count=1)
        await c.send(signon(1))
        assert await c.silent(0.2)
        assert (await c.call(signon(2)))["11"] == "000002"
        host.add_fault("blackhole", count=0)
        await c.send(sale(3))
        await c.send(signon(4))
        assert await c.silent(0.2)
        assert host.ledger() == []
        host.clear_faults()
        assert (await c.call(signon(5)))["39"] == "00"
        codes = [(m["stan"], m["code"], m["fault"]) for m in host.messages()]
        assert codes == [("000001", None, "blackhole"), ("000002", "00", None),
                         ("000003", None, "blackhole"), ("000004", None, "blackhole"),
                         ("000005", "00", None)]
        c.close()

    run(scenario)


@pytest.mark.parametrize("data", [
    struct.pack(">H", 2049) + b"0200",  # refused from its header: no waiting for the rest
    struct.pack(">H", 0),
    struct.pack(">H", 10) + b"garbage!!!",
])
def test_protocol_errors_close_the_connection(data: bytes) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await c.send_raw(data)
        assert await c.closed_by_peer()
        c.close()

    run(scenario)


def test_decodable_request_without_its_fields_is_a_format_error() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await c.send_raw(struct.pack(">H", 12) + b"0200" + b"\x00" * 8)  # MTI, empty bitmap
        r = await c.recv()
        assert (r["t"], r["39"]) == ("0210", "30")
        assert host.ledger() == []
        assert (await c.call(signon(1)))["39"] == "00"  # the connection stays usable
        c.close()

    run(scenario)


def test_unknown_mti_closes_the_connection() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await c.send({"t": "0100", "11": "000001", "41": TID})
        assert await c.closed_by_peer()
        assert host.messages() == []
        c.close()

    run(scenario)


def test_set_down_refuses_then_up_listens_on_the_same_port() -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await c.call(signon(1))
        started = asyncio.get_running_loop().time()
        await host.set_down(True)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert await c.closed_by_peer()
        with pytest.raises(ConnectionRefusedError):
            await Client.connect(port)
        await host.set_down(False)
        c2 = await Client.connect(port)
        assert (await c2.call(signon(2)))["39"] == "00"
        c.close()
        c2.close()

    run(scenario)


# -- TLS -----------------------------------------------------------------------
def test_tls_with_a_test_ca(tmp_path: Any) -> None:
    ca_cert, ca_key = tlsutil.make_ca(tmp_path / "ca")
    cert, key = tlsutil.make_server_cert(tmp_path / "srv", ca_cert, ca_key)
    rogue_cert, rogue_key = tlsutil.make_self_signed(tmp_path / "rogue")

    assert server_tls_context(cert, key).minimum_version == ssl.TLSVersion.TLSv1_2
    client_ctx = ssl.create_default_context(cafile=ca_cert)
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED and client_ctx.check_hostname

    async def good(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port, ssl=client_ctx, server_hostname="localhost")
        assert c.writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        assert (await c.call(signon(1)))["39"] == "00"
        assert (await c.call(sale(2)))["39"] == "00"
        c.close()
        with pytest.raises(ssl.SSLCertVerificationError):  # wrong host name
            await Client.connect(port, ssl=client_ctx, server_hostname="bank.example")
        plain = await Client.connect(port)  # a plain client gets no answer
        await plain.send(signon(3))
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await plain.recv()
        plain.close()

    async def rogue(host: AcquirerHost, port: int) -> None:
        with pytest.raises(ssl.SSLCertVerificationError):
            await Client.connect(port, ssl=client_ctx, server_hostname="localhost")

    run(good, tls_cert=cert, tls_key=key)
    run(rogue, tls_cert=rogue_cert, tls_key=rogue_key)


def test_logs_never_carry_card_data(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(host: AcquirerHost, port: int) -> None:
        c = await Client.connect(port)
        await c.call(sale(1))
        host.add_fault("malformed")
        await c.send(sale(2))
        await c.recv_raw()
        await c.call(advice(3))
        raw, _ = iso8583.encode(sale(4), SPEC)
        await c.send_raw(struct.pack(">H", len(raw) + 1) + bytes(raw) + b"x")  # undecodable
        assert await c.closed_by_peer()
        c.close()

    with caplog.at_level("DEBUG"):
        run(scenario)
    assert "<<< 0200 stan=000001" in caplog.text and ">>> 0210 stan=000001" in caplog.text
    assert "closing connection" in caplog.text
    assert PAN not in caplog.text and TRACK2 not in caplog.text


# -- the decision rules without a network (property-based) --------------------------
@settings(max_examples=60, deadline=None)
@given(amount=st.integers(min_value=0, max_value=10**12 - 1), reverse=st.booleans())
def test_books_follow_the_conventions(amount: int, reverse: bool) -> None:
    books = Books(random.Random(1))
    req = sale(1, amount)
    answer = books.answer(req)
    expected = {"05": "05", "51": "51", "54": "54", "91": "91", "96": "96"}.get(
        f"{amount % 100:02d}", "00")
    assert answer["39"] == expected and answer["t"] == "0210"
    if reverse:
        assert books.answer(reversal(2, req))["39"] in ("00", "25")
    charged = [e["charged"] for e in books.entries()]
    assert charged == ([] if expected in ("91", "96") else [expected == "00" and not reverse])
