"""The modem's AT session, sans I/O (drivers/modemsession.py): no port, no loop, no clock.
Commands go in with a time, bytes come out; bytes go in, events come out."""

from __future__ import annotations

import logging

import pytest

from drivers.modemat import Data, Garbage
from drivers.modemsession import (
    Answered,
    AtSession,
    Command,
    Event,
    Prompted,
    Stray,
    Superseded,
    TimedOut,
    Unsolicited,
    UrcArrived,
    safe,
)

PAN = "4761739001010010"


def csq() -> Command:
    return Command("AT+CSQ", 5.0, prefix="+CSQ:")


def netopen() -> Command:
    return Command("AT+NETOPEN", 5.0, urc="+NETOPEN:", urc_timeout=30.0)


def cipsend(data: bytes) -> Command:
    return Command(f"AT+CIPSEND=0,{len(data)}", 2.0, data=data, urc="+CIPSEND:",
                   urc_timeout=2.0)  # fmt: skip


def test_one_command_in_flight_the_next_written_when_it_ends() -> None:
    session = AtSession()
    first, second = csq(), Command("AT+CREG?", 5.0, prefix="+CREG:")
    assert session.submit(first) == [] and session.submit(second) == []
    assert session.outgoing(0.0) == b"AT+CSQ\r"
    assert session.outgoing(0.1) == b"" and session.current is first and session.queued == 1
    events = session.receive(b"AT+CSQ\r\r\n+CSQ: 20,0\r\n\r\nOK\r\n", 0.2)  # with its echo
    assert events == [Answered(first, "OK", ("+CSQ: 20,0",))]
    assert session.current is None
    assert session.outgoing(0.3) == b"AT+CREG?\r" and session.current is second
    assert session.receive(b"\r\n+CREG: 0,1\r\n\r\nERROR\r\n", 0.4) == [
        Answered(second, "ERROR", ("+CREG: 0,1",))]


def test_the_same_events_whatever_the_split_of_the_stream() -> None:
    stream = b"\r\n+CSQ: 17,0\r\n\r\n+IPD4\r\nOK\r\n\r\nOK\r\n\r\n+IPCLOSE: 0,1\r\n"

    def run(cuts: list[int]) -> list[Event]:
        session = AtSession()
        command = csq()
        session.submit(command)
        session.outgoing(0.0)
        events: list[Event] = []
        start = 0
        for end in [*cuts, len(stream)]:
            events += session.receive(stream[start:end], 1.0)
            start = end
        return [e if not isinstance(e, Answered) else Answered(csq(), e.result, e.lines)
                for e in events]  # compare without the command's identity

    whole = run([])
    assert [type(e) for e in whole] == [Data, Answered, Unsolicited]
    assert whole[0] == Data(b"OK\r\n")  # the payload is never read as an answer
    for cut in range(1, len(stream)):
        assert [repr(e) for e in run([cut])] == [repr(e) for e in whole], cut
    assert [repr(e) for e in run(list(range(1, len(stream))))] == [repr(e) for e in whole]


def test_a_timeout_is_data_the_deadline_says_when() -> None:
    session = AtSession()
    first, second = Command("AT", 1.0, probe=True), csq()
    session.submit(first)
    session.submit(second)
    assert session.deadline() is None  # nothing written yet
    session.outgoing(10.0)
    assert session.deadline() == 11.0
    assert session.tick(10.99) == []
    assert session.tick(11.0) == [TimedOut(first, "answer")]
    assert session.current is None and session.deadline() is None
    assert session.outgoing(11.0) == b"AT+CSQ\r" and session.deadline() == 16.0
    # an answer that comes after its command timed out is taken by the one in flight,
    # as a modem's late answer would be; with none in flight it is a stray
    assert session.receive(b"\r\nOK\r\n", 11.5) == [Answered(second, "OK", ())]
    assert session.receive(b"\r\nOK\r\n", 11.6) == [Stray("OK", final=True)]


def test_a_urc_after_the_ok_is_correlated_and_its_deadline_starts_at_the_ok() -> None:
    session = AtSession()
    command = netopen()
    session.submit(command)
    session.outgoing(0.0)
    assert session.deadline() == 5.0
    assert session.receive(b"\r\nOK\r\n", 2.0) == [Answered(command, "OK", ())]
    assert session.deadline() == 32.0  # urc_timeout from the OK
    assert session.receive(b"\r\n+NETOPEN: 0\r\n", 3.0) == [UrcArrived(command, "+NETOPEN: 0")]
    assert session.deadline() is None
    assert session.receive(b"\r\n+NETOPEN: 0\r\n", 4.0) == [Unsolicited("+NETOPEN: 0")]


def test_a_urc_in_the_same_read_or_before_the_ok_is_not_lost() -> None:
    for stream in (b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n", b"\r\n+NETOPEN: 0\r\n\r\nOK\r\n"):
        session = AtSession()
        command = netopen()
        session.submit(command)
        session.outgoing(0.0)
        events = session.receive(stream, 1.0)
        assert sorted(map(repr, events)) == sorted(map(repr, [
            Answered(command, "OK", ()), UrcArrived(command, "+NETOPEN: 0")]))
        assert session.deadline() is None and session.tick(100.0) == []


def test_no_urc_in_time_times_out_and_an_error_ends_the_wait() -> None:
    session = AtSession()
    command = netopen()
    session.submit(command)
    session.outgoing(0.0)
    session.receive(b"\r\nOK\r\n", 1.0)
    assert session.tick(30.9) == [] and session.tick(31.0) == [TimedOut(command, "urc")]

    refused = netopen()
    session.submit(refused)
    session.outgoing(40.0)
    assert session.receive(b"\r\nERROR\r\n", 41.0) == [Answered(refused, "ERROR", ())]
    assert session.deadline() is None
    assert session.receive(b"\r\n+NETOPEN: 1\r\n", 42.0) == [Unsolicited("+NETOPEN: 1")]


def test_a_command_that_times_out_stops_waiting_for_its_urc() -> None:
    session = AtSession()
    command = netopen()
    session.submit(command)
    session.outgoing(0.0)
    assert session.tick(5.0) == [TimedOut(command, "answer")]
    assert session.receive(b"\r\n+NETOPEN: 0\r\n", 6.0) == [Unsolicited("+NETOPEN: 0")]


def test_data_after_the_prompt_then_ok_then_the_send_urc() -> None:
    session = AtSession()
    block = b"\r\nOK\r\n" + PAN.encode()
    command = cipsend(block)
    session.submit(command)
    assert session.outgoing(0.0) == b"AT+CIPSEND=0,22\r"
    assert session.receive(b"\r\n>", 1.0) == [Prompted(command)]
    assert session.outgoing(1.0) == block and session.deadline() == 3.0  # timeout again
    events = session.receive(b"\r\nOK\r\n\r\n+CIPSEND: 0,22,22\r\n", 1.5)
    assert events == [Answered(command, "OK", (), prompted=True),
                      UrcArrived(command, "+CIPSEND: 0,22,22")]


def test_no_prompt_is_an_answer_and_no_ok_after_the_data_a_timeout() -> None:
    session = AtSession()
    refused = cipsend(b"abc")
    session.submit(refused)
    session.outgoing(0.0)
    assert session.receive(b"\r\nERROR\r\n", 0.5) == [Answered(refused, "ERROR", ())]
    assert session.outgoing(0.5) == b""  # no data without the prompt
    assert session.receive(b"\r\n+CIPSEND: 0,3,3\r\n", 0.6) == [Unsolicited("+CIPSEND: 0,3,3")]

    silent = cipsend(b"abc")
    session.submit(silent)
    session.outgoing(1.0)
    session.receive(b"\r\n>", 1.5)
    assert session.outgoing(1.5) == b"abc"
    assert session.tick(3.4) == [] and session.tick(3.5) == [TimedOut(silent, "data")]


def test_a_prompt_is_only_a_prompt_while_one_is_expected() -> None:
    session = AtSession()
    command = Command("AT+CGDCONT=1", 5.0)
    session.submit(command)
    session.outgoing(0.0)
    assert session.receive(b"\r\n> x\r\n\r\nOK\r\n", 1.0) == [Answered(command, "OK", ("> x",))]


def test_lines_of_a_command_without_prefix_and_known_urcs_in_between() -> None:
    session = AtSession()
    command = Command("ATI", 5.0)
    session.submit(command)
    session.outgoing(0.0)
    events = session.receive(b"\r\nSIM7600E\r\n\r\n+IPCLOSE: 0,1\r\n\r\nRDY\r\n\r\nOK\r\n", 1.0)
    assert events == [Unsolicited("+IPCLOSE: 0,1"), Unsolicited("RDY"),
                      Answered(command, "OK", ("SIM7600E",))]
    # a prefixed answer takes its own prefix even where it is a URC's (+CPIN:)
    cpin = Command("AT+CPIN?", 5.0, prefix="+CPIN:")
    session.submit(cpin)
    session.outgoing(2.0)
    assert session.receive(b"\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\nOK\r\n", 3.0) == [
        Stray("SMS DONE", final=False), Answered(cpin, "OK", ("+CPIN: READY",))]


def test_nothing_in_flight_lines_are_strays_urcs_and_garbage() -> None:
    session = AtSession()
    events = session.receive(b"\r\n+CGEV: ME PDN DEACT 1\r\n\r\nNORMAL POWER DOWN\r\n"
                             b"\r\n\x80\x81\r\n", 0.0)  # fmt: skip
    assert events[:2] == [Stray("+CGEV: ME PDN DEACT 1", final=False),
                          Unsolicited("NORMAL POWER DOWN")]
    assert isinstance(events[2], Garbage) and events[2].length == 2


def test_cancel_forgets_a_command_wherever_it_is() -> None:
    session = AtSession()
    first, queued, waiting = csq(), Command("AT+CREG?", 5.0), netopen()
    for command in (first, queued, waiting):
        session.submit(command)
    session.outgoing(0.0)
    session.cancel(queued)  # queued: never written
    session.cancel(first)  # in flight: the next goes
    assert session.outgoing(1.0) == b"AT+NETOPEN\r"
    session.cancel(waiting)  # and its URC is nobody's
    assert session.deadline() is None
    assert session.receive(b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n", 2.0) == [
        Stray("OK", final=True), Unsolicited("+NETOPEN: 0")]
    assert session.outgoing(3.0) == b"" and session.queued == 0


def test_a_newer_command_supersedes_an_older_one_waiting_for_the_same_urc() -> None:
    session = AtSession()
    old = Command("AT+CIPCLOSE=0", 5.0, urc="+CIPCLOSE:", urc_timeout=5.0)
    new = Command("AT+CIPCLOSE=0", 5.0, urc="+CIPCLOSE:", urc_timeout=5.0)
    session.submit(old)
    assert session.submit(new) == [Superseded(old)]
    session.outgoing(0.0)
    session.receive(b"\r\nOK\r\n", 0.1)  # old's answer: its URC wait is gone already
    session.outgoing(0.1)
    assert session.receive(b"\r\nOK\r\n\r\n+CIPCLOSE: 0,0\r\n", 0.2) == [
        Answered(new, "OK", ()), UrcArrived(new, "+CIPCLOSE: 0,0")]


def test_the_wire_log_shows_lengths_never_payload(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="posterm.wire.modem")
    session = AtSession()
    command = cipsend(PAN.encode())
    session.submit(command)
    session.outgoing(0.0)
    session.receive(b"\r\n>", 0.1)
    session.outgoing(0.1)
    session.receive(b"\r\nOK\r\n\r\n+IPD16\r\n" + PAN.encode(), 0.2)
    assert PAN not in caplog.text and PAN not in repr(command)
    assert ">>> [16 bytes]" in caplog.text and "<<< +IPD16 [16 bytes]" in caplog.text
    assert PAN not in safe(f"x{PAN}") and safe("SMS DONE") == "SMS DONE"
