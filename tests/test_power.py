"""The power monitor on its own: the gauge (hwsim's model through the real driver) and a
power-fail line, with short intervals; no processes. End to end: test_e2e_power.py."""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from drivers.gauge import Max17048
from firmware.config import BatteryConfig, PowerConfig
from firmware.core.events import BatteryRead, ConditionChanged, Event
from firmware.errors import GpioError, PostermError
from firmware.runtime import status
from firmware.runtime import power as power_mod
from firmware.runtime.power import PowerMonitor
from hwsim.gauge import Max17048Sim
from tests import vtime
from tests.test_gauge import ModelBus


class Harness:
    def __init__(self, *, low: int = 10, grace: float = 0.6, command: tuple[str, ...] = (),
                 gauge: bool = True, pin: bool = True) -> None:
        self.model = Max17048Sim(percent=50.0)
        self.events: list[Event] = []
        self.level = True
        self.script: list[bool | Exception] = []  # readings to give before `level`
        self.checkpoints = 0
        self.stops = 0
        self.shown: list[tuple[str, ...]] = []

        async def power_ok() -> bool:
            if self.script:
                value = self.script.pop(0)
                if isinstance(value, Exception):
                    raise value
                return value
            return self.level

        self.monitor = PowerMonitor(
            BatteryConfig(backend="hwsim", interval=0.02, low_percent=low),
            PowerConfig(grace=grace, shutdown_command=command),
            gauge=Max17048(ModelBus(self.model)) if gauge else None,
            power_ok=power_ok if pin else None, emit=self.events.append,
            checkpoint=self._checkpoint, request_stop=self._stop, changed=lambda: None,
            clock=lambda: asyncio.get_running_loop().time())

    def _checkpoint(self) -> None:
        self.checkpoints += 1

    def _stop(self) -> None:
        self.stops += 1

    async def show(self, rows: tuple[str, str, str, str]) -> None:
        self.shown.append(rows)

    def conditions(self, source: str) -> list[tuple[str, bool]]:
        return [(e.text, e.blocks_sales) for e in self.events
                if isinstance(e, ConditionChanged) and e.source == source]

    async def until(self, what: Callable[[], Any], timeout: float = 3.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not what():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; events: {self.events}")
            await asyncio.sleep(0.01)

    async def settle(self) -> None:
        """Let the gauge task read the model a few more times."""
        before = self.model.reads
        await self.until(lambda: self.model.reads >= before + 9)  # 3 reads of 3 registers


def run(coro: Any) -> Any:
    """On virtual time (tests/vtime.py): the grace, debounce and poll periods pass at once
    unless a gauge read (a thread) is under way."""
    return vtime.run(asyncio.wait_for(coro, 20))[0]


def test_low_battery_blocks_with_hysteresis_and_charging_lifts_it() -> None:
    async def scenario() -> None:
        h = Harness(low=10)
        task = asyncio.create_task(h.monitor.run_gauge())
        await h.until(lambda: BatteryRead(50, charging=False) in h.events)
        assert h.conditions("battery") == []
        h.model.set(percent=8.0, rate=-3.0)
        await h.until(lambda: h.conditions("battery") == [("BATTERY LOW", True)])
        assert BatteryRead(8, charging=False) in h.events
        h.model.set(percent=12.0)  # above 10 but not 3 points above: still low
        await h.settle()
        assert h.conditions("battery") == [("BATTERY LOW", True)] and h.monitor.low
        h.model.set(rate=2.5)  # charging: on mains, it cannot run flat mid-sale
        await h.until(lambda: h.conditions("battery")[-1] == ("", False))
        assert BatteryRead(12, charging=True) in h.events
        h.model.set(percent=9.5, rate=-1.0)
        await h.until(lambda: h.conditions("battery")[-1] == ("BATTERY LOW", True))
        h.model.set(percent=13.0)
        await h.until(lambda: h.conditions("battery")[-1] == ("", False))
        assert len(h.conditions("battery")) == 4
        task.cancel()

    run(scenario())


def test_low_percent_zero_never_blocks() -> None:
    async def scenario() -> None:
        h = Harness(low=0)
        h.model.set(percent=1.0, rate=-5.0)
        task = asyncio.create_task(h.monitor.run_gauge())
        await h.until(lambda: BatteryRead(1, charging=False) in h.events)
        await h.settle()
        assert h.conditions("battery") == [] and h.monitor.facts()["battery"]["percent"] == 1.0
        task.cancel()

    run(scenario())


def test_a_failing_gauge_is_logged_once_and_never_blocks_sales(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness(low=10)
        h.model.set(percent=5.0, rate=-1.0)
        task = asyncio.create_task(h.monitor.run_gauge())
        await h.until(lambda: h.conditions("battery") == [("BATTERY LOW", True)])
        h.model.set(failing=True)
        await h.until(lambda: h.conditions("battery")[-1] == ("BATTERY GAUGE FAULT", False))
        await asyncio.sleep(0.2)  # about ten more failed reads
        assert h.conditions("battery") == [("BATTERY LOW", True), ("BATTERY GAUGE FAULT", False)]
        facts = h.monitor.facts()["battery"]
        assert facts["percent"] is None and "no I2C device answers" in facts["error"]
        assert status.power_words(h.monitor.facts()) == ["battery gauge fault"]
        h.model.set(failing=False, percent=60.0)
        await h.until(lambda: h.conditions("battery")[-1] == ("", False))
        assert h.events[-1] == BatteryRead(60, charging=False) or BatteryRead(60) in h.events
        task.cancel()

    with caplog.at_level(logging.INFO, logger="posterm.power"):
        run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "failed: no I2C device answers" in
                r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "sales go on" in warnings[0]
    assert any("battery gauge answers again: 60 %" in r.getMessage() for r in caplog.records)


def test_mains_lost_then_back_within_grace_cancels() -> None:
    async def scenario() -> None:
        h = Harness(gauge=False, grace=1.0)
        task = asyncio.create_task(h.monitor.run_mains())
        await asyncio.sleep(0.3)
        assert h.events == [] and h.monitor.mains
        h.level = False
        await h.until(lambda: h.conditions("power") == [("MAINS POWER LOST", True)])
        assert h.checkpoints == 1  # the journal's WAL folded in at once
        facts = h.monitor.facts()["mains"]
        assert facts["ok"] is False and 0 < facts["shutdown_in"] <= 1.0
        assert status.power_words(h.monitor.facts()) == ["MAINS POWER LOST, on battery"]
        h.level = True
        await h.until(lambda: h.conditions("power")[-1] == ("", False))
        await asyncio.sleep(1.2)  # past the grace: nothing happens
        assert h.stops == 0 and not h.monitor.shutdown_requested
        assert await h.monitor.finish(h.show) is False and h.shown == []
        task.cancel()

    run(scenario())


def test_a_glitch_shorter_than_the_debounce_and_an_unreadable_pin_change_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        h = Harness(gauge=False)
        err = GpioError("gpio: cannot read pin 25 (power-fail): hwsim not reachable")
        h.script = [True, False, True, False, err, err, err, True]
        task = asyncio.create_task(h.monitor.run_mains())
        await h.until(lambda: not h.script)
        await asyncio.sleep(0.5)
        assert h.events == [] and h.monitor.mains
        task.cancel()

    with caplog.at_level(logging.INFO, logger="posterm.power"):
        run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("power-fail input cannot be read" in m for m in messages) == 1
    assert "power-fail input can be read again" in messages


def test_grace_over_asks_for_a_stop_then_shuts_down(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "powered-off"

    async def scenario() -> None:
        h = Harness(gauge=False, grace=0.3, command=("touch", str(marker)))
        task = asyncio.create_task(h.monitor.run_mains())
        h.level = False
        await h.until(lambda: h.stops == 1)
        assert h.monitor.shutdown_requested and h.monitor.facts()["mains"]["stopping"]
        await asyncio.sleep(0.5)
        assert h.stops == 1  # asked once
        task.cancel()
        assert not marker.exists()
        assert await h.monitor.finish(h.show) is False
        assert marker.exists() and h.shown == [("MAINS POWER LOST", "SHUTTING DOWN", "", "")]
        assert h.checkpoints == 2

    run(scenario())


@pytest.mark.parametrize("command,needle", [
    (("false",), r"shutdown command failed \(exit status 1\)"),
    (("/nonexistent/poweroff",), r"failed \(/nonexistent/poweroff: no such program\)"),
])
def test_a_failing_shutdown_command_is_an_error(command: tuple[str, ...], needle: str) -> None:
    async def scenario() -> None:
        h = Harness(gauge=False, grace=0.0, command=command)
        task = asyncio.create_task(h.monitor.run_mains())
        h.level = False
        await h.until(lambda: h.stops == 1)
        task.cancel()
        with pytest.raises(PostermError, match=needle):
            await h.monitor.finish(h.show)

    run(scenario())


def test_mains_back_while_stopping_starts_again_instead(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "powered-off"

    async def scenario() -> None:
        h = Harness(gauge=False, grace=0.0, command=("touch", str(marker)))
        task = asyncio.create_task(h.monitor.run_mains())
        h.level = False
        await h.until(lambda: h.stops == 1)
        task.cancel()
        h.level = True  # back after the stop was asked for, before the shutdown
        assert await h.monitor.finish(h.show) is True
        assert not marker.exists() and h.shown == []

    run(scenario())


def test_no_gauge_and_no_pin_facts() -> None:
    h = Harness(gauge=False, pin=False)
    assert h.monitor.facts() == {"battery": None, "mains": None}
    assert status.power_words(h.monitor.facts()) == []
    assert power_mod.run_command(("true",)) == ""
