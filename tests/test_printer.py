"""The real EscposPrinter driver against the printer model, over TCP and over a pty."""

from __future__ import annotations

import asyncio
import os
import pty
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.printer import BIG, EscposPrinter, _load_escpos
from firmware.errors import PrinterError
from firmware.ports import PrinterStatus
from hwsim.escpos_stream import EscPosDecoder
from hwsim.printer import PrintedLine, PrinterSim

RECEIPT = [
    "        POSTERM TEST SHOP",
    "12 HIGH STREET",
    "",
    "VISA          476173******0010",
    BIG + "SALE        EUR 12.50",
    "AUTH 123456   RRN 000000000042",
    "",
    "      THANK YOU",
]
EXPECTED = "\n".join(line.removeprefix(BIG).rstrip() for line in RECEIPT)


class SimThread:
    """A PrinterSim served by an event loop in a background thread."""

    def __init__(self) -> None:
        self.sim = PrinterSim()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(self.sim.start("127.0.0.1", 0))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def restart(self) -> None:
        self.call(self.sim.stop())
        self.call(self.sim.start("127.0.0.1", self.port))

    def close(self) -> None:
        self.call(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture()
def served() -> Iterator[SimThread]:
    st_ = SimThread()
    yield st_
    st_.close()


def driver(port: int, tmp_path: Path, **kw: Any) -> EscposPrinter:
    return EscposPrinter("network", host="127.0.0.1", port=port, cache_dir=str(tmp_path / "c"),
                         **kw)


def test_printed_lines_come_back_as_a_receipt(served: SimThread, tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    p.open()
    assert p.status().ready
    p.print_lines(RECEIPT)
    # print_lines returns only once the printer confirmed: no waiting needed.
    assert served.sim.receipts() == [EXPECTED]
    assert served.sim.partial() == ""
    lines = served.sim.receipt_lines()[0]
    assert lines[4] == PrintedLine("SALE        EUR 12.50", bold=True, double_height=True)
    assert not any(line.bold or line.double_height for i, line in enumerate(lines) if i != 4)
    p.print_lines(["SECOND"])
    assert served.sim.receipts() == [EXPECTED, "SECOND"]
    p.close()


def test_print_opens_the_connection_itself(served: SimThread, tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    p.print_lines(["NO EXPLICIT OPEN"])
    assert served.sim.receipts() == ["NO EXPLICIT OPEN"]
    p.close()


def test_a_receipt_goes_out_in_one_write_with_no_delay(served: SimThread,
                                                       tmp_path: Path) -> None:
    """The whole job (both copies and the cut between them, the last cut, GS r) is one
    write: the model receives it as one piece. Written command by command on a socket
    without TCP_NODELAY it came in several, the later ones after a delayed ACK."""
    p = driver(served.port, tmp_path)
    p.open()
    assert p._link is not None
    sock = p._link._device
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    chunks, size = served.sim.received()
    p.print_lines(RECEIPT + ["\f", "CUSTOMER COPY"])
    assert served.sim.receipts() == [EXPECTED, "CUSTOMER COPY"]
    after_chunks, after_size = served.sim.received()
    assert after_chunks - chunks == 1
    assert after_size - size > sum(map(len, RECEIPT))  # text, styles, feeds, cuts, GS r
    assert served.sim.state()["received_chunks"] == after_chunks
    p.close()


def test_without_confirmation_the_job_still_goes_out_whole(served: SimThread,
                                                           tmp_path: Path) -> None:
    p = driver(served.port, tmp_path, confirm_print=False)
    p.print_lines(["NO GS R", BIG + "BIG ONE"])
    deadline = time.monotonic() + 5
    while not served.sim.receipts() and time.monotonic() < deadline:
        time.sleep(0.01)  # nothing to wait on but the paper itself
    assert served.sim.receipts() == ["NO GS R\nBIG ONE"]
    assert served.sim.receipt_lines()[0][1] == PrintedLine("BIG ONE", bold=True,
                                                           double_height=True)
    assert served.sim.received()[0] == 1
    p.close()


def test_a_stale_print_confirmation_does_not_confirm_the_next_job(tmp_path: Path) -> None:
    """A GS r answer that overtook the status requests belongs to an earlier job: the
    driver waits for the answer to the one it has just sent."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    answered = threading.Event()
    jobs: list[bytes] = []

    def printer() -> None:
        conn, _ = server.accept()
        with conn:
            asked = 0
            while data := conn.recv(4096):
                if data.startswith(b"\x10\x04"):
                    asked += 1
                    if asked == 3:
                        conn.sendall(b"\x00")  # an old GS r answer, just before this one
                    conn.sendall(b"\x12")
                    continue
                jobs.append(data)
                time.sleep(0.3)  # printing
                answered.set()
                conn.sendall(b"\x00")

    t = threading.Thread(target=printer, daemon=True)
    t.start()
    p = driver(port, tmp_path)
    p.print_lines(["ONE"])
    assert answered.is_set()  # it returned on the real answer, not on the stale one
    assert len(jobs) == 1 and jobs[0].startswith(b"\x1b@") and jobs[0].endswith(b"\x1dr\x01")
    p.close()
    server.close()
    t.join(2)


def test_escpos_is_loaded_by_the_first_receipt_not_by_open_or_status(
        served: SimThread, tmp_path: Path) -> None:
    """python-escpos (with PIL, qrcode, barcode) is not needed to connect or ask the status,
    so a terminal does not pay for it before it is ready."""
    code = textwrap.dedent(f"""
        import sys
        from drivers.printer import EscposPrinter
        heavy = ("escpos", "PIL", "qrcode", "barcode")
        def loaded():
            return sorted(m for m in heavy if m in sys.modules)
        p = EscposPrinter("network", host="127.0.0.1", port={served.port},
                          cache_dir={str(tmp_path / "c")!r})
        p.open()
        assert p.status().ready
        assert loaded() == [], loaded()
        p.warm_up()
        assert loaded() == sorted(heavy), loaded()
        p.print_lines(["LOADED LATE"])
        p.close()
    """)
    env = {**os.environ}
    env.pop("ESCPOS_CAPABILITIES_PICKLE_DIR", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60,
                   cwd=Path(__file__).resolve().parent.parent)
    assert served.sim.receipts() == ["LOADED LATE"]


@pytest.mark.parametrize(
    ("fault", "message"),
    [("paper_out", "PAPER OUT"), ("cover_open", "PRINTER COVER OPEN"),
     ("offline", "PRINTER OFFLINE")],
)
def test_faults_refuse_to_print(served: SimThread, tmp_path: Path, fault: str,
                                message: str) -> None:
    p = driver(served.port, tmp_path)
    served.sim.set_fault(**{fault: True})
    status = p.status()
    assert not status.ready and status.problem() == message
    with pytest.raises(PrinterError, match=f"^{message}$"):
        p.print_lines(RECEIPT)
    assert served.sim.receipts() == [] and served.sim.partial() == ""
    served.sim.clear_faults()
    p.print_lines(["AFTER"])
    assert served.sim.receipts() == ["AFTER"]
    p.close()


def test_paper_near_end_still_prints(served: SimThread, tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    served.sim.set_fault(paper_near_end=True)
    status = p.status()
    assert status.ready and status.paper_near_end
    p.print_lines(["LOW PAPER"])
    assert served.sim.receipts() == ["LOW PAPER"]
    p.close()


def test_mute_printer_is_offline_within_2_seconds(served: SimThread, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    p = driver(served.port, tmp_path)
    p.open()
    served.sim.set_fault(mute=True)
    start = time.monotonic()
    with pytest.raises(PrinterError, match="^PRINTER OFFLINE$"):
        p.print_lines(RECEIPT)
    assert 1.5 < time.monotonic() - start < 3.0
    assert "no status answer within 2 s" in caplog.text  # the log says why
    start = time.monotonic()
    assert p.status() == PrinterStatus(online=False)
    assert time.monotonic() - start < 2.5  # one request's timeout, not three
    assert served.sim.receipts() == [] and served.sim.discarded() == (0, 0)
    served.sim.clear_faults()
    p.print_lines(["BACK"])
    assert served.sim.receipts() == ["BACK"]
    p.close()


def test_printer_not_listening_names_the_address(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    p = driver(port, tmp_path)
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        with pytest.raises(PrinterError, match="^PRINTER OFFLINE$"):
            p.print_lines(["X"])
    assert f"cannot connect to 127.0.0.1:{port}" in caplog.text
    with pytest.raises(PrinterError, match=f"cannot connect to 127.0.0.1:{port}"):
        p.open()
    assert time.monotonic() - start < 2


def test_a_broken_connection_is_reopened_on_the_next_call(served: SimThread,
                                                         tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    p.print_lines(["ONE"])
    served.restart()  # the printer was power-cycled: the connection is gone
    assert p.status() == PrinterStatus(online=False)  # the log says it closed the connection
    p.print_lines(["TWO"])
    assert served.sim.receipts() == ["ONE", "TWO"]
    p.close()


def test_slow_printing_is_waited_for_and_paper_out_midway_is_reported(
        served: SimThread, tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    served.sim.set_fault(slow_seconds=0.05)
    start = time.monotonic()
    p.print_lines([f"LINE {i}" for i in range(6)])
    # 6 lines and the 6-line feed before the cut, 0.05 s each
    assert time.monotonic() - start >= 0.55
    assert served.sim.receipts()[-1] == "\n".join(f"LINE {i}" for i in range(6))

    served.sim.set_fault(slow_seconds=0.2)
    timer = threading.Timer(0.5, lambda: served.sim.set_fault(paper_out=True))
    timer.start()
    with pytest.raises(PrinterError, match="^PAPER OUT$"):
        p.print_lines([f"ROW {i}" for i in range(20)])
    timer.join()
    assert len(served.sim.receipts()) == 1  # never cut
    assert served.sim.partial().startswith("ROW 0\nROW 1")
    served.sim.load_paper()  # the cut-short receipt leaves with the old roll
    assert served.sim.partial() == "" and served.sim.torn_off()[0].startswith("ROW 0\nROW 1")
    served.sim.set_fault(slow_seconds=0.0)
    p.print_lines(["NEW ROLL"])
    assert served.sim.receipts()[-1] == "NEW ROLL"
    p.close()


def test_lines_wider_than_32_columns_wrap_on_paper(served: SimThread, tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    p.print_lines(["A" * 40])
    assert served.sim.receipts() == ["A" * 32 + "\n" + "A" * 8]
    p.close()


def test_unknown_backend_and_missing_serial_port(tmp_path: Path) -> None:
    with pytest.raises(PrinterError, match="unknown backend"):
        EscposPrinter("usb", cache_dir=str(tmp_path))
    p = EscposPrinter("serial", device="/dev/ttyNOPE9", cache_dir=str(tmp_path))
    with pytest.raises(PrinterError, match="/dev/ttyNOPE9"):
        p.open()


def test_serial_backend_through_a_pty(served: SimThread, tmp_path: Path) -> None:
    """A pty stands in for the serial cable; a relay joins it to the TCP model."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    tcp = socket.create_connection(("127.0.0.1", served.port))
    tcp.setblocking(False)
    stop = threading.Event()

    def relay() -> None:
        sel = selectors.DefaultSelector()
        sel.register(master, selectors.EVENT_READ)
        sel.register(tcp, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(0.05):
                try:
                    if key.fileobj == master:
                        tcp.sendall(os.read(master, 4096))
                    else:
                        os.write(master, tcp.recv(4096))
                except (BlockingIOError, OSError):
                    pass

    t = threading.Thread(target=relay, daemon=True)
    t.start()
    try:
        p = EscposPrinter("serial", device=os.ttyname(slave), baudrate=19200,
                          cache_dir=str(tmp_path))
        p.print_lines(["OVER SERIAL"])
        assert served.sim.receipts() == ["OVER SERIAL"]
        served.sim.set_fault(cover_open=True)
        with pytest.raises(PrinterError, match="PRINTER COVER OPEN"):
            p.print_lines(["NO"])
        p.close()
    finally:
        stop.set()
        t.join(2)
        tcp.close()
        os.close(master)
        os.close(slave)


def _escpos_bytes(tmp_path: Path) -> bytes:
    printers = _load_escpos(str(tmp_path / "c"))
    d = printers.Dummy()
    d.hw("INIT")
    d.set(align="center", font="a", bold=True, double_height=True, underline=1)
    d.textln("Grüße — 12,50 €")
    d.set_with_default()
    d.block_text("some text that is long enough to need wrapping here", columns=20)
    d.control("HT")
    d.line_spacing(30)
    d.line_spacing()
    d.barcode("4006381333931", "EAN13")
    d.cut()
    d.cut(mode="PART")
    d.cut(feed=False)
    return bytes(d.output)


@pytest.fixture(scope="module")
def escpos_stream(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _escpos_bytes(tmp_path_factory.mktemp("escpos"))


def test_decoder_consumes_what_python_escpos_emits(escpos_stream: bytes) -> None:
    commands = EscPosDecoder().feed(escpos_stream)
    names = [c.name for c in commands]
    assert names.count("GS V") == 3
    assert names[-1] == "GS V"
    text = "".join(c.text for c in commands if c.name == "text")
    assert "Grüße" in text and "€" in text
    # A wrong parameter length would turn parameter bytes into bogus commands.
    assert set(names) == {
        "ESC !", "ESC -", "ESC 2", "ESC 3", "ESC @", "ESC D", "ESC E", "ESC M", "ESC a",
        "ESC d", "ESC t", "ESC {", "GS B", "GS H", "GS V", "GS b", "GS f", "GS h", "GS k",
        "GS w", "lf", "text",
    }
    assert [c.args for c in commands if c.name == "GS V"] == [b"\x00", b"\x01", b"B\x00"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), max_size=12))
def test_decoder_is_independent_of_how_the_stream_is_split(escpos_stream: bytes,
                                                           cuts: list[int]) -> None:
    data = escpos_stream
    whole = EscPosDecoder().feed(data)
    split = EscPosDecoder()
    pieces, pos = [], 0
    for cut in sorted(cuts):
        pieces.append(data[pos:cut])
        pos = max(pos, cut)
    pieces.append(data[pos:])
    got = [c for piece in pieces for c in split.feed(piece)]
    merged: list[Any] = []
    for c in got:  # a text run split in two arrives as two text commands
        if merged and c.name == "text" and merged[-1].name == "text":
            merged[-1] = type(c)("text", merged[-1].args + c.args, merged[-1].text + c.text)
        else:
            merged.append(c)
    assert merged == whole


def test_escpos_import_keeps_its_files_in_the_cache_folder(tmp_path: Path) -> None:
    """python-escpos 3.1 calls mkdtemp() on import even with the cache folder set."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cache = tmp_path / "cache"
    code = textwrap.dedent(f"""
        import logging, tempfile
        from drivers.printer import _load_escpos
        _load_escpos({str(cache)!r})
        assert tempfile.tempdir is None or tempfile.tempdir == {str(tmp)!r}, tempfile.tempdir
        assert not logging.getLogger().handlers, logging.getLogger().handlers
    """)
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("ESCPOS_CAPABILITIES_PICKLE_DIR", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    assert list(tmp.iterdir()) == []
    assert [f.name.endswith(".capabilities.pickle") for f in cache.iterdir()] == [True]


# -- character code tables ----------------------------------------------------------------

EURO_RECEIPT = ["€ 12,50", "Café Müller", "TOTAL € 12,50"]


@pytest.mark.parametrize("receipts", [
    # Ends in the table escpos picked for "€" (15) and the next one starts with "€".
    [EURO_RECEIPT, EURO_RECEIPT],
    # Ends in WPC1252 (picked for the dash), where "é" and "ü" are other bytes than in PC437.
    [["Grüße — € 12,50"], ["Café Müller"], ["€ 12,50 Café Müller"]],
])
def test_receipts_in_a_row_keep_their_characters(served: SimThread, tmp_path: Path,
                                                 receipts: list[list[str]]) -> None:
    """Every receipt starts with ESC @, which puts the printer back to table 0."""
    p = driver(served.port, tmp_path)
    for lines in receipts:
        p.print_lines(lines)
    assert served.sim.receipts() == ["\n".join(lines) for lines in receipts]
    p.close()


def test_a_reconnect_selects_the_code_table_again(served: SimThread, tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    p.print_lines(EURO_RECEIPT)
    served.restart()  # power-cycled: back to table 0, and a new connection
    assert not p.status().online
    p.print_lines(EURO_RECEIPT)
    p.open()  # an explicit reconnect too
    p.print_lines(EURO_RECEIPT)
    assert served.sim.receipts() == ["\n".join(EURO_RECEIPT)] * 3
    p.close()


_LETTERS = "€éüÜßçÇñ£—ØøÅæÆ¿ΩЖ"


@pytest.fixture(scope="module")
def served_module() -> Iterator[SimThread]:
    st_ = SimThread()
    yield st_
    st_.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.text(_LETTERS + "AZ ,.", min_size=1, max_size=12).map(str.strip)
                         .filter(bool), min_size=1, max_size=3), min_size=2, max_size=4))
def test_any_run_of_receipts_prints_what_was_sent(served_module: SimThread, tmp_path_factory:
                                                  pytest.TempPathFactory,
                                                  receipts: list[list[str]]) -> None:
    before = len(served_module.sim.receipts())
    p = driver(served_module.port, tmp_path_factory.getbasetemp())
    try:
        for lines in receipts:
            p.print_lines(lines)
    finally:
        p.close()
    assert served_module.sim.receipts()[before:] == ["\n".join(lines) for lines in receipts]


def test_decoder_uses_the_selected_table_until_esc_at() -> None:
    d = EscPosDecoder()
    texts = [c.text for c in d.feed(b"\x1bt\x13\xd5\n\x1b@\xd5\n\x1bt\x10\x80\xe9\n"
                                    b"\x1bt\x0f\xa4\n") if c.name == "text"]
    # ESC t 19 (PC858): 0xD5 is the euro sign; after ESC @ the same byte is PC437's.
    assert texts == ["€", "╒", "€é", "€"]
    assert d.codepage == 15


def test_decoder_shows_an_unknown_table_as_replacement_characters(
        caplog: pytest.LogCaptureFixture) -> None:
    d = EscPosDecoder()
    texts = [c.text for c in d.feed(b"\x1bt\x63Caf\xe9\n\xd5\n") if c.name == "text"]
    assert texts == ["Caf\ufffd", "\ufffd"]
    assert [r.message for r in caplog.records if "table 99" in r.message] != []
    assert len([r for r in caplog.records if "unknown character code table" in r.message]) == 1


def test_decoder_tables_are_those_of_the_escpos_profile(tmp_path: Path) -> None:
    """Every table escpos may select reads back, byte for byte, as escpos meant it."""
    _load_escpos(str(tmp_path / "c"))
    from escpos.capabilities import get_profile
    from escpos.magicencode import Encoder

    from hwsim.escpos_stream import CODE_TABLES, code_table

    pages = get_profile("default").get_code_pages()
    encoder = Encoder(pages)
    usable = set()
    for name, number in pages.items():
        try:
            chars = encoder._get_codepage_char_list(name)  # what escpos encodes, byte 128 up
        except LookupError:
            continue  # escpos cannot encode with it, so never selects it
        usable.add(int(number))
        table = code_table(int(number))
        if table is None:
            continue
        for byte, char in enumerate(chars, 128):
            if char != " ":  # escpos's placeholder for "no character here"
                assert table[byte] == char, (name, hex(byte))
    # Tables escpos can select that the model lacks: TCVN-3 (Vietnamese), no Python codec.
    assert usable - set(CODE_TABLES) == {30, 31}
    assert set(CODE_TABLES) <= usable


# -- real-time status and a stopped printer ---------------------------------------------

def _ask(port: int, requests: bytes) -> bytes:
    """Send raw bytes to the model and collect its answers, as a bare client would."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(requests)
        answers = b""
        deadline = time.monotonic() + 2
        s.settimeout(0.5)
        while len(answers) < requests.count(b"\x10\x04") and time.monotonic() < deadline:
            try:
                answers += s.recv(16)
            except TimeoutError:
                pass  # a muted printer: nothing comes
        return answers


_ALL = b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04"


@pytest.mark.parametrize(("fault", "answers", "status"), [
    # answers to DLE EOT 1, 2, 3, 4 (ESC/POS: printer, offline cause, error, paper sensor)
    ({}, b"\x12\x12\x12\x12", PrinterStatus(online=True)),
    ({"paper_near_end": True}, b"\x12\x12\x12\x1e",
     PrinterStatus(online=True, paper_near_end=True)),
    ({"paper_out": True}, b"\x1a\x32\x12\x7e",
     PrinterStatus(online=False, paper_out=True, paper_near_end=True)),
    ({"cover_open": True}, b"\x1a\x16\x12\x12", PrinterStatus(online=False, cover_open=True)),
    ({"offline": True}, b"\x1a\x52\x52\x12", PrinterStatus(online=False)),
    ({"mute": True}, b"", PrinterStatus(online=False)),
])
def test_status_answers_as_the_escpos_reference_and_the_driver_reads_them(
        served: SimThread, tmp_path: Path, fault: dict[str, bool], answers: bytes,
        status: PrinterStatus) -> None:
    served.sim.set_fault(**fault)
    assert _ask(served.port, _ALL) == answers
    p = driver(served.port, tmp_path)
    assert p.status() == status
    p.close()


def test_stale_bytes_are_drained_before_each_status_request(tmp_path: Path) -> None:
    """A late answer to an earlier request (here "offline", twice) waits in the input
    when the next request goes out: it must not be read as the new answer."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    asked: list[bytes] = []

    def printer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"\x1a\x1a")  # stale: answers nobody is waiting for any more
            time.sleep(0.2)
            while data := conn.recv(64):
                for i in range(len(data) - 2):
                    if data[i:i + 2] == b"\x10\x04":
                        asked.append(data[i + 2:i + 3])
                        conn.sendall(b"\x12")

    t = threading.Thread(target=printer, daemon=True)
    t.start()
    p = driver(port, tmp_path)
    p.open()
    time.sleep(0.4)  # the stale bytes are in the socket's buffer now
    assert p.status() == PrinterStatus(online=True)
    assert asked == [b"\x01", b"\x02", b"\x04"]
    p.close()
    server.close()
    t.join(2)


@pytest.mark.parametrize("fault", ["paper_out", "cover_open", "offline"])
def test_a_stopped_printer_prints_nothing_and_the_model_counts_what_it_lost(
        served: SimThread, fault: str) -> None:
    served.sim.set_fault(**{fault: True})
    with socket.create_connection(("127.0.0.1", served.port), timeout=2) as s:
        s.sendall(b"\x1b@ONE\nTWO\n\x1dV\x00")
        time.sleep(0.3)
    assert served.sim.receipts() == [] and served.sim.partial() == ""
    assert served.sim.discarded() == (2, 1)
    assert served.sim.state()["discarded_cuts"] == 1
    served.sim.load_paper()
    served.sim.set_fault(cover_open=False, offline=False)
    with socket.create_connection(("127.0.0.1", served.port), timeout=2) as s:
        s.sendall(b"\x1b@THREE\n\x1dV\x00")
        time.sleep(0.3)
    assert served.sim.receipts() == ["THREE"]


def test_loading_paper_ends_paper_out_and_near_end(served: SimThread, tmp_path: Path) -> None:
    served.sim.set_fault(paper_out=True, paper_near_end=True)
    p = driver(served.port, tmp_path)
    assert p.status().problem() == "PAPER OUT"
    served.sim.load_paper()
    assert p.status() == PrinterStatus(online=True)
    p.close()
