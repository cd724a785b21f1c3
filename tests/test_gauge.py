"""The MAX17048 gauge driver: datasheet decoding, its errors, and the hwsim register model."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from drivers.gauge import (
    REG_CONFIG, REG_CRATE, REG_SOC, REG_VCELL, REG_VERSION, Max17048, decode_crate, decode_soc,
    decode_vcell,
)
from firmware.errors import DeviceError, GaugeError
from hwsim.gauge import GaugeNotAnswering, Max17048Sim, ocv_volts


class RegisterBus:
    """smbus2.SMBus-shaped: fixed register contents, MSB first, at one address."""

    def __init__(self, regs: dict[int, bytes], address: int = 0x36) -> None:
        self.regs = dict(regs)
        self.address = address
        self.calls: list[tuple[int, int, int]] = []
        self.fail: OSError | None = None
        self.closed = False

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        self.calls.append((i2c_addr, register, length))
        if self.fail is not None:
            raise self.fail
        if i2c_addr != self.address:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        return list(self.regs[register][:length])

    def close(self) -> None:
        self.closed = True


class ModelBus:
    """smbus2.SMBus-shaped: reads and writes reach hwsim's MAX17048 model."""

    def __init__(self, model: Max17048Sim) -> None:
        self.model = model

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        try:
            return self.model.read(register, length)
        except GaugeNotAnswering as exc:
            raise OSError(errno.EREMOTEIO, str(exc)) from None

    def close(self) -> None:
        pass


def regs(vcell: int = 0xCB20, soc: int = 0x3A80, crate: int = 0xFFEF,
         version: int = 0x0012) -> dict[int, bytes]:
    return {REG_VCELL: vcell.to_bytes(2, "big"), REG_SOC: soc.to_bytes(2, "big"),
            REG_CRATE: crate.to_bytes(2, "big"), REG_VERSION: version.to_bytes(2, "big"),
            REG_CONFIG: b"\x97\x1c"}


def test_decoding_follows_the_datasheet() -> None:
    # 0xCB20 = 52000 bits x 78.125 uV = 4.0625 V
    assert decode_vcell(0xCB20) == pytest.approx(4.0625)
    assert decode_vcell(0xFFFF) == pytest.approx(5.11992, abs=1e-5)
    # high byte whole percent, low byte 1/256: 0x3A80 = 58 + 128/256
    assert decode_soc(0x3A80) == 58.5
    assert decode_soc(0x0C40) == 12.25
    assert decode_soc(0x6400) == 100.0
    # signed, 0.208 %/h per bit: 0x0019 = +25, 0xFFEF = -17, 0x8000 = -32768
    assert decode_crate(0x0019) == pytest.approx(5.2)
    assert decode_crate(0xFFEF) == pytest.approx(-3.536)
    assert decode_crate(0x8000) == pytest.approx(-6815.744)
    assert decode_crate(0x0000) == 0.0


def test_read_uses_two_byte_block_reads_most_significant_byte_first() -> None:
    bus = RegisterBus(regs())
    gauge = Max17048(bus)
    assert gauge.open() == 0x0012
    reading = gauge.read()
    assert reading.voltage == pytest.approx(4.0625)
    assert reading.percent == 58.5
    assert reading.rate == pytest.approx(-3.536)
    assert not reading.charging and reading.version == 0x0012
    assert {call[2] for call in bus.calls} == {2} and {call[0] for call in bus.calls} == {0x36}
    assert [call[1] for call in bus.calls] == [REG_VERSION, REG_VCELL, REG_SOC, REG_CRATE]
    # the same bytes read as a little-endian SMBus word would be 0x203A: 8224 / 256 = 32.1 %
    assert reading.percent != decode_soc(0x803A)
    gauge.close()
    assert bus.closed


def test_read_opens_first_when_open_failed_at_start() -> None:
    bus = RegisterBus(regs(crate=0x0019))
    bus.fail = OSError(errno.EREMOTEIO, "Remote I/O error")
    gauge = Max17048(bus)
    with pytest.raises(GaugeError, match=r"gauge at 0x36: reading VERSION failed: Remote I/O"):
        gauge.open()
    bus.fail = None
    reading = gauge.read()  # checks VERSION first, then reads
    assert bus.calls[-4][1] == REG_VERSION and reading.charging
    assert reading.rate == pytest.approx(5.2)


@pytest.mark.parametrize("registers,needle", [
    (regs(version=0x0003), r"VERSION reads 0x0003, not a MAX17048/MAX17049 \(0x001X\)"),
    (regs(vcell=0x0000), r"cell voltage 0.000 V is outside 2.5-4.5 V \(no cell connected"),
    (regs(vcell=0xF000), r"cell voltage 4.800 V is outside"),
    (regs(soc=0xC800), r"state of charge 200.0 % is over 105 %"),
])
def test_values_no_battery_can_show_are_errors(registers: dict[int, bytes], needle: str) -> None:
    with pytest.raises(GaugeError, match=needle) as err:
        Max17048(RegisterBus(registers)).read()
    assert isinstance(err.value, DeviceError) and err.value.device == "battery"


def test_bus_errors_name_the_register_and_force_a_new_version_check() -> None:
    bus = RegisterBus(regs())
    gauge = Max17048(bus)
    gauge.open()
    bus.fail = OSError(errno.ETIMEDOUT, "Connection timed out")
    with pytest.raises(GaugeError, match=r"reading VCELL failed: Connection timed out"):
        gauge.read()
    assert gauge.version is None
    bus.fail = None
    bus.regs[REG_VERSION] = b"\x00\x11"  # another chip answers now
    assert gauge.read().version == 0x0011


def test_wrong_address_and_short_answers() -> None:
    with pytest.raises(GaugeError, match=r"gauge at 0x37: reading VERSION failed"):
        Max17048(RegisterBus(regs()), address=0x37).open()
    short = RegisterBus({**regs(), REG_SOC: b"\x3a"})
    with pytest.raises(GaugeError, match=r"reading SOC gave \[58\], not two bytes"):
        Max17048(short).read()


# -- the hwsim model, read through the real driver ------------------------------------


def test_model_reads_back_what_was_set_with_the_datasheet_encoding() -> None:
    model = Max17048Sim()
    gauge = Max17048(ModelBus(model))
    model.set(percent=12.25, voltage=3.7, rate=-3.5)
    reading = gauge.read()
    assert reading.percent == 12.25
    assert reading.voltage == pytest.approx(3.7, abs=78.125e-6)
    assert reading.rate == pytest.approx(-17 * 0.208)  # quantised to whole bits
    assert model.register(REG_CRATE) == 0xFFEF and model.register(REG_SOC) == 0x0C40
    model.set(rate=5.2)
    assert gauge.read().charging and model.register(REG_CRATE) == 0x0019


def test_model_voltage_follows_percent_unless_given() -> None:
    model = Max17048Sim()
    model.set(percent=5)
    assert model.voltage == pytest.approx(ocv_volts(5)) == pytest.approx(3.55)
    model.set(percent=50, voltage=3.9)
    assert model.voltage == 3.9
    assert ocv_volts(0) < ocv_volts(20) < ocv_volts(80) < ocv_volts(100)


def test_model_register_pointer_runs_on_and_config_is_writable() -> None:
    model = Max17048Sim(percent=58.5)
    model.set(voltage=4.0625)
    assert model.read(REG_VCELL, 4) == [0xCB, 0x20, 0x3A, 0x80]  # VCELL then SOC
    assert model.read(REG_VERSION, 2) == [0x00, 0x12]
    model.write([REG_CONFIG, 0x97, 0x00])
    assert model.read(REG_CONFIG, 2) == [0x97, 0x00]
    model.write([REG_VCELL, 0x00, 0x00])  # read-only: ignored
    assert model.read(REG_VCELL, 2) == [0xCB, 0x20]


def test_model_refuses_impossible_settings_and_can_stop_answering() -> None:
    model = Max17048Sim()
    for bad in ({"percent": 101.0}, {"percent": -1.0}, {"voltage": 6.0}, {"rate": 1e6}):
        with pytest.raises(ValueError, match="battery: "):
            model.set(**bad)  # type: ignore[arg-type]
    model.set(failing=True)
    gauge = Max17048(ModelBus(model))
    with pytest.raises(GaugeError, match="no I2C device answers at 0x36"):
        gauge.read()
    model.set(failing=False)
    assert gauge.read().percent == 87.5
    state: dict[str, Any] = model.state()
    assert state["reads"] == 4 and not state["failing"]  # VERSION, VCELL, SOC, CRATE
