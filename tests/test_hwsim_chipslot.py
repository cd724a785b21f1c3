"""hwsim's chip card slot (hwsim.chipslot) with a fake card and a fake vpcd link, and
its controls: the ops registry lists insert, remove, cards and the host's chip
controls (chip-wrong-arpc, chip-scripts), `hwsim ctl` and the page reach them.

The slot keeps 1 s between a removal and the next insertion, because pcscd polls a
virtual reader every 400 ms (hardware.md, "Chip card reader"; EMV 4.4 Book 1 is the
card's side, untouched here). Time is a fake clock: no test waits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hwsim import ops
from hwsim.__main__ import build_parser, request_for
from hwsim.chipslot import SETTLE, ChipSlot, SlotError
from hwsim.control import ControlServer
from hwsim.host import AcquirerHost
from hwsim.web import PAGE_OPS


class FakeLink:
    def __init__(self, card: Any, port: int, host: str, log: list[str],
                 is_async: bool) -> None:
        self.card, self.port, self.host, self.log = card, port, host, log
        self.is_async = is_async

    def start(self) -> Any:
        self.log.append(f"start {self.card} {self.host}:{self.port}")
        return self._done() if self.is_async else None

    def stop(self) -> Any:
        self.log.append(f"stop {self.card}")
        return self._done() if self.is_async else None

    async def _done(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def make_slot(is_async: bool = False) -> tuple[ChipSlot, list[str], Clock]:
    log: list[str] = []
    clock = Clock()

    def make_card(profile: str) -> str:
        if profile not in ("dda_online_pin", "offline_y1"):
            raise KeyError(profile)
        return f"card:{profile}"

    slot = ChipSlot(35963, make_card=make_card,
                    make_link=lambda card, port, host: FakeLink(card, port, host, log, is_async),
                    clock=clock, sleep=clock.sleep)
    return slot, log, clock


@pytest.mark.parametrize("is_async", [False, True])
def test_insert_connects_the_card_to_vpcd_and_remove_stops_it(is_async: bool) -> None:
    slot, log, _ = make_slot(is_async)

    async def run() -> None:
        assert slot.state() == {"port": 35963, "host": "127.0.0.1", "card": None}
        assert await slot.insert("dda_online_pin") == {"port": 35963, "host": "127.0.0.1",
                                                       "card": "dda_online_pin"}
        assert slot.occupied
        assert (await slot.remove())["card"] is None
        assert not slot.occupied

    asyncio.run(run())
    assert log == ["start card:dda_online_pin 127.0.0.1:35963", "stop card:dda_online_pin"]


def test_one_card_at_a_time_and_specific_errors() -> None:
    slot, log, _ = make_slot()

    async def run() -> None:
        with pytest.raises(SlotError, match="empty"):
            await slot.remove()
        with pytest.raises(SlotError, match="no chip card profile 'nope'"):
            await slot.insert("nope")
        await slot.insert("dda_online_pin")
        with pytest.raises(SlotError, match="already in the slot"):
            await slot.insert("offline_y1")

    asyncio.run(run())
    assert log == ["start card:dda_online_pin 127.0.0.1:35963"]


def test_insertion_waits_out_one_second_after_a_removal() -> None:
    slot, log, clock = make_slot()

    async def run() -> None:
        await slot.insert("dda_online_pin")  # nothing removed yet: no wait
        await slot.remove()
        clock.now += 0.3
        await slot.insert("offline_y1")
        assert clock.slept == [round(SETTLE - 0.3, 6)]
        await slot.remove()
        clock.now += 5.0
        await slot.insert("dda_online_pin")  # long enough ago: no wait
        assert clock.slept == [round(SETTLE - 0.3, 6)]

    asyncio.run(run())
    assert SETTLE >= 1.0
    assert [line.split()[0] for line in log] == ["start", "stop", "start", "stop", "start"]


def test_close_stops_a_card_still_in_and_change_is_told() -> None:
    slot, log, _ = make_slot()
    told: list[int] = []
    slot.on_change = lambda: told.append(1)

    async def run() -> None:
        await slot.insert("offline_y1")
        await slot.close()
        await slot.close()  # nothing in: nothing to do

    asyncio.run(run())
    assert log[-1] == "stop card:offline_y1" and not slot.occupied
    assert told == [1]


def test_a_card_that_left_by_itself_empties_the_slot() -> None:
    slot, _, clock = make_slot()

    async def run() -> None:
        await slot.insert("offline_y1")
        slot.card_left()
        assert not slot.occupied
        await slot.insert("offline_y1")  # 1 s after it left
        assert clock.slept == [SETTLE]

    asyncio.run(run())


# -- the controls ---------------------------------------------------------------

CHIP_OPS = {"chip_insert": "insert", "chip_remove": "remove", "chip_cards": "cards",
            "chip_wrong_arpc": "chip-wrong-arpc", "chip_scripts": "chip-scripts"}


def test_the_registry_lists_the_chip_ops_for_ctl_and_the_page() -> None:
    for name, command in CHIP_OPS.items():
        assert ops.OPS[name].command == command
        assert name in PAGE_OPS
    parser = build_parser()
    cases: list[tuple[list[str], Any, dict[str, Any]]] = [
        (["insert", "dda_online_pin"], ops.chip_insert, {"profile": "dda_online_pin"}),
        (["remove"], ops.chip_remove, {}), (["cards"], ops.chip_cards, {}),
        (["chip-wrong-arpc"], ops.chip_wrong_arpc, {}),
        (["chip-scripts", "put-data", "unblock", "--templates", "both"], ops.chip_scripts,
         {"commands": ["put-data", "unblock"], "templates": "both"}),
    ]
    for argv, op, params in cases:
        chosen, sent = request_for(parser.parse_args(["ctl", "--dir", "d", *argv]))
        assert (chosen, sent) == (op, params), argv


class FakeSim:
    def __init__(self, slot: ChipSlot | None) -> None:
        self.chip_slot = slot
        self.host = AcquirerHost(rng_seed=1)
        self.external = None


def _dispatch(sim: FakeSim, request: dict[str, Any]) -> dict[str, Any]:
    server = ControlServer(ops.OPS, sim, keypad=None)  # type: ignore[arg-type]
    return asyncio.run(server.dispatch(request))


def test_the_ops_drive_the_slot_and_the_host() -> None:
    slot, log, _ = make_slot()
    sim = FakeSim(slot)
    assert _dispatch(sim, {"op": "chip_insert", "profile": "offline_y1"}) == {
        "ok": True, "port": 35963, "host": "127.0.0.1", "card": "offline_y1"}
    answer = _dispatch(sim, {"op": "chip_insert", "profile": "dda_online_pin"})
    assert answer["ok"] is False and "already in the slot" in answer["error"]
    assert _dispatch(sim, {"op": "chip_remove"})["card"] is None
    assert _dispatch(sim, {"op": "chip_wrong_arpc"}) == {"ok": True}
    assert _dispatch(sim, {"op": "chip_scripts", "templates": "both"})["bytes"] <= 128
    too_big = _dispatch(sim, {"op": "chip_scripts", "commands": ["put-data"] * 5,
                              "templates": "both"})
    assert too_big["ok"] is False and "at most 128" in too_big["error"]
    kinds = [f["kind"] for f in sim.host.faults()]
    assert kinds == ["chip_wrong_arpc", "chip_scripts"]
    no_slot = _dispatch(FakeSim(None), {"op": "chip_insert", "profile": "offline_y1"})
    assert no_slot["ok"] is False and "--vpcd-port 0" in no_slot["error"]


def test_a_pulled_card_leaves_the_slot_free() -> None:
    slot, _, _ = make_slot()

    async def run() -> None:
        await slot.insert("offline_y1")
        slot._link.pulled = True  # what vpcd.VpcdLink says after the card's CardPulled
        assert slot.state()["card"] is None
        await slot.insert("dda_online_pin")
        assert slot.state()["card"] == "dda_online_pin"

    asyncio.run(run())


class FakeCard:
    ATR = bytes.fromhex("3B6500002063CBA000")

    def power_on(self) -> bytes:
        return self.ATR

    def reset(self) -> bytes:
        return self.ATR

    def power_off(self) -> None:
        pass

    def apdu(self, command: bytes) -> bytes:
        return b"\x90\x00"


def test_the_slot_with_the_real_vpcd_link_against_a_fake_vpcd() -> None:
    """vpcd's side (hardware.md): the card connects; 01 then 04 gets the ATR; an APDU
    its answer; remove closes the connection."""
    import socket
    import struct

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(10)

    def exchange(conn: socket.socket, payload: bytes | None) -> bytes:
        if payload is not None:
            conn.sendall(struct.pack(">H", len(payload)) + payload)
        header = conn.recv(2, socket.MSG_WAITALL)
        if len(header) < 2:
            return b""
        (n,) = struct.unpack(">H", header)
        return conn.recv(n, socket.MSG_WAITALL)

    slot = ChipSlot(port, make_card=lambda profile: FakeCard())

    async def run() -> None:
        await slot.insert("any")
        conn, _ = await asyncio.to_thread(server.accept)
        conn.settimeout(10)
        with conn:
            conn.sendall(struct.pack(">H", 1) + b"\x01")  # power on: not answered
            assert await asyncio.to_thread(exchange, conn, b"\x04") == FakeCard.ATR
            apdu = bytes.fromhex("00A404000E315041592E5359532E444446303100")
            assert await asyncio.to_thread(exchange, conn, apdu) == b"\x90\x00"
            await slot.remove()
            assert await asyncio.to_thread(conn.recv, 10) == b""  # the card left

    try:
        asyncio.run(run())
    finally:
        server.close()


def test_profiles_come_from_chipprofiles(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from hwsim import chipslot

    fake = types.ModuleType("hwsim.chipprofiles")
    fake.PROFILES = {"dda_online_pin": object(), "offline_y1": object()}  # type: ignore[attr-defined]
    fake.describe = lambda name: f"about {name}"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hwsim.chipprofiles", fake)
    monkeypatch.setattr(sys.modules["hwsim"], "chipprofiles", fake, raising=False)
    assert chipslot.profiles() == [{"name": "dda_online_pin", "describe": "about dda_online_pin"},
                                   {"name": "offline_y1", "describe": "about offline_y1"}]
