"""Logs an operator can read with journalctl: one line per sale with journal fields.

No journald runs here, so the test owns the journal's datagram socket and points
posterm at it (POSTERM_JOURNAL_SOCKET); posterm decides to use it exactly as
under systemd, because its stderr is the stream JOURNAL_STREAM names.
"""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import struct
import threading
import time

from firmware.runtime import journald
from tests.rig import Rig

PAN = "4761739001010010"


def decode(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, sep, tail = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = tail
        else:  # KEY \n <u64 le length> <data> \n
            size = struct.unpack("<Q", tail[:8])[0]
            fields[line.decode()] = tail[8:8 + size].decode()
            rest = tail[8 + size + 1:]
    return fields


def test_encoding_priorities_and_fields(tmp_path: pathlib.Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(2)
    handler = journald.JournalHandler(str(tmp_path / "journal.sock"))
    logger = logging.getLogger("posterm.test.journald")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("two\nlines", extra={"journal": {"sale_id": 42, "PAN": "476173******0010"}})
        got = decode(sock.recv(65536))
        assert got["MESSAGE"] == "two\nlines" and got["PRIORITY"] == "3"
        assert got["SALE_ID"] == "42" and got["SYSLOG_IDENTIFIER"] == "posterm"
        assert got["LOGGER"] == "posterm.test.journald"
    finally:
        logger.removeHandler(handler)
        handler.close()
        sock.close()
    assert [journald.priority(x) for x in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]
    assert not journald.stderr_is_journal({"JOURNAL_STREAM": "1:2"})
    assert not journald.stderr_is_journal({})


def test_each_sale_outcome_is_one_journal_entry_with_fields(tmp_path: pathlib.Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "journal.sock"
    sock.bind(str(path))
    sock.settimeout(0.2)
    entries: list[dict[str, str]] = []
    done = threading.Event()

    def read() -> None:  # journald's part: drain the socket as entries come
        while not done.is_set():
            try:
                entries.append(decode(sock.recv(65536)))
            except TimeoutError:
                continue

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with Rig(tmp_path) as rig:
            rig.start_sim()
            rig.log_path.touch()
            st = os.stat(rig.log_path)
            rig.start_fw(wait=False, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                                          "POSTERM_JOURNAL_SOCKET": str(path)})
            rig.sale("1500", PAN)
            rig.hw.wait_display("APPROVED")
            rig.hw.host_fault("busy", count=0)
            rig.hw.press("CANCEL")
            rig.sale("9900", PAN)  # busy, then over the floor limit: not charged
            rig.hw.wait_display("NOT COMPLETED", timeout=20)
            deadline = time.monotonic() + 5
            while sum("OUTCOME" in e for e in entries) < 2:
                assert time.monotonic() < deadline, entries
                time.sleep(0.05)
            outcomes = [e for e in entries if "OUTCOME" in e]
            assert [(e["SALE_ID"], e["OUTCOME"], e["AMOUNT"]) for e in outcomes] == \
                [("1", "APPROVED", "1500"), ("2", "NOT_CHARGED", "9900")]
            assert outcomes[0]["PAN"] == "476173******0010" and outcomes[0]["STAN"]
            assert outcomes[0]["PRIORITY"] == "6" and outcomes[1]["PRIORITY"] == "4"
            assert "sale 1: approved, EUR 15.00" in outcomes[0]["MESSAGE"]
            assert "customer not charged" in outcomes[1]["MESSAGE"]
            assert any(e.get("MESSAGE", "").startswith("posterm ready") for e in entries)
            assert all(PAN not in "".join(e.values()) for e in entries)
            assert "posterm ready" not in rig.log()  # the journal had it, not stderr
    finally:
        done.set()
        reader.join(timeout=2)
        sock.close()


def test_a_journal_that_does_not_read_never_stalls_the_terminal(tmp_path: pathlib.Path) -> None:
    """A full journal socket: the records go to stderr, and sales go on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "journal.sock"
    sock.bind(str(path))  # bound, never read
    try:
        with Rig(tmp_path) as rig:
            rig.start_sim()
            rig.log_path.touch()
            st = os.stat(rig.log_path)
            rig.start_fw(wait=False, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                                          "POSTERM_JOURNAL_SOCKET": str(path)})
            for amount in ("1100", "1200", "1300"):
                rig.hw.press("CANCEL")
                rig.sale(amount, PAN)
                rig.hw.wait_display("APPROVED", timeout=10)
            assert "approved, EUR 13.00" in rig.log()
    finally:
        sock.close()


def test_outside_systemd_plain_lines_on_stderr(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        rig.sale("1600", PAN)
        rig.hw.wait_display("APPROVED")
        deadline = time.monotonic() + 5
        while "sale 1: approved, EUR 16.00" not in rig.log():
            assert time.monotonic() < deadline, rig.log()
            time.sleep(0.05)
        assert " INFO posterm.sale: sale 1: approved" in rig.log()
