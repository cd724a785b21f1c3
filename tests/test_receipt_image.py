"""Receipts drawn as PNG images (hwsim.receipt_image), and `hwsim ctl receipts --png`."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys

import pytest
from PIL import Image

from hwsim import receipt_image
from hwsim.printer import PrintedLine
from hwsim.receipt_image import (
    CUT_GREY,
    INK,
    PAPER_WIDTH,
    TOP,
    render_receipt,
    receipt_png,
)
from tests.rig import Rig, _env

PAN = "4761739001010010"


def ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the black print, right and bottom exclusive."""
    mask = image.point(lambda v: 255 if v == INK else 0)
    box = mask.getbbox()
    assert box is not None, "nothing printed"
    return box


def black(image: Image.Image) -> int:
    return image.histogram()[INK]


def one_line(line: PrintedLine) -> Image.Image:
    return render_receipt([line], cut=False)


def test_width_is_constant() -> None:
    widths = {render_receipt(lines, cut=cut).width
              for lines in ([], [PrintedLine("")], [PrintedLine("x" * 60, font_b=True)],
                            [PrintedLine("WIDE", double_width=True)])
              for cut in (True, False)}  # fmt: skip
    assert widths == {PAPER_WIDTH} and PAPER_WIDTH == 384 + 2 * 24


def test_height_grows_with_lines_and_blank_lines_keep_theirs() -> None:
    heights = [render_receipt([PrintedLine("line")] * n, cut=True).height for n in range(4)]
    assert heights == [heights[0] + 24 * n for n in range(4)]
    blank = render_receipt([PrintedLine("a"), PrintedLine(""), PrintedLine("b")], cut=True)
    assert blank.height == heights[3]
    assert render_receipt([PrintedLine("a", font_b=True)], cut=False).height \
        == render_receipt([], cut=False).height + 17
    assert render_receipt([PrintedLine("a", double_height=True)], cut=False).height \
        == render_receipt([], cut=False).height + 48


def test_double_height_ink_is_twice_as_tall() -> None:
    normal = ink_box(one_line(PrintedLine("TOTAL 12.50")))
    tall = ink_box(one_line(PrintedLine("TOTAL 12.50", double_height=True)))
    ratio = (tall[3] - tall[1]) / (normal[3] - normal[1])
    assert 1.9 <= ratio <= 2.1, ratio
    assert tall[2] - tall[0] == normal[2] - normal[0]  # and no wider


def test_double_width_ink_is_twice_as_wide() -> None:
    normal = ink_box(one_line(PrintedLine("TOTAL 12.50")))
    wide = ink_box(one_line(PrintedLine("TOTAL 12.50", double_width=True)))
    ratio = (wide[2] - wide[0]) / (normal[2] - normal[0])
    assert 1.9 <= ratio <= 2.1, ratio
    assert wide[3] - wide[1] == normal[3] - normal[1]  # and no taller


def test_bold_is_heavier() -> None:
    plain = black(one_line(PrintedLine("APPROVED 123456")))
    bold = black(one_line(PrintedLine("APPROVED 123456", bold=True)))
    assert bold > 1.2 * plain, (plain, bold)


def test_bold_without_a_bold_font_is_struck_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipt_image, "FONT_BOLD", "/nonexistent/Bold.ttf")
    plain = black(one_line(PrintedLine("APPROVED 123456")))
    bold = black(one_line(PrintedLine("APPROVED 123456", bold=True)))
    assert bold > 1.2 * plain, (plain, bold)


def test_missing_font_files_do_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipt_image, "FONT", "/nonexistent/Mono.ttf")
    monkeypatch.setattr(receipt_image, "FONT_BOLD", "/nonexistent/Mono-Bold.ttf")
    lines = [PrintedLine("DEMO SHOP", bold=True, double_width=True), PrintedLine("é € ¥ ─ 漢"),
             PrintedLine("small", font_b=True), PrintedLine("TALL", double_height=True)]
    image = render_receipt(lines, cut=True)
    assert image.width == PAPER_WIDTH and black(image) > 0


def test_centred_line_is_centred() -> None:
    text = "*THANKS*"  # symmetric glyphs at both ends
    pad = (32 - len(text)) // 2  # as the printer pads a centred line: 12 columns
    image = one_line(PrintedLine(" " * pad + text))
    left, _, right, _ = ink_box(image)
    assert abs(left - (image.width - right)) <= 2, (left, image.width - right)
    flush = ink_box(one_line(PrintedLine(text)))
    assert left - flush[0] == pad * 12  # on the grid: cells of 12 dots


def test_columns_line_up_across_fonts() -> None:
    a = ink_box(one_line(PrintedLine(" " * 10 + "|")))
    b = ink_box(one_line(PrintedLine(" " * 10 + "|", font_b=True)))
    assert a[0] - ink_box(one_line(PrintedLine("|")))[0] == 10 * 12
    assert b[0] - ink_box(one_line(PrintedLine("|", font_b=True)))[0] == 10 * 9


def grey_rows(image: Image.Image, rows: int) -> int:
    bottom = image.crop((0, image.height - rows, image.width, image.height))
    return bottom.histogram()[CUT_GREY]


def test_cut_receipt_has_the_cut_mark_and_uncut_does_not() -> None:
    lines = [PrintedLine("SALE"), PrintedLine("EUR 12.50", bold=True)]
    cut, uncut = render_receipt(lines, cut=True), render_receipt(lines, cut=False)
    assert grey_rows(cut, 30) > 100  # a dashed line across the paper
    assert grey_rows(uncut, 30) == 0 and uncut.histogram()[CUT_GREY] == 0
    dashed_row = max(range(cut.height), key=lambda y: sum(
        cut.getpixel((x, y)) == CUT_GREY for x in range(cut.width)))
    assert dashed_row > TOP + 2 * 24  # below the print
    # print is only black on white: grey means the cut mark, never text
    assert {v for _, v in cut.getcolors() or []} == {INK, CUT_GREY, 255}
    assert {v for _, v in uncut.getcolors() or []} == {INK, 255}


def test_dicts_draw_the_same_as_printed_lines() -> None:
    lines = [PrintedLine("SHOP", bold=True, double_width=True, double_height=True),
             PrintedLine("small print", font_b=True), PrintedLine(""), PrintedLine("plain")]
    dicts: list[dict[str, object]] = [line.as_dict() for line in lines]
    assert receipt_png(dicts, cut=True) == receipt_png(lines, cut=True)
    sparse = [{"text": "plain"}, {"text": "bold", "bold": True}]
    assert receipt_png(sparse, cut=False) == receipt_png(
        [PrintedLine("plain"), PrintedLine("bold", bold=True)], cut=False)


def test_non_ascii_text_renders() -> None:
    lines = [PrintedLine("Café crème 3,50 €"), PrintedLine("¥ 1200", bold=True),
             PrintedLine("┌──────┐", font_b=True), PrintedLine("│ box  │", double_width=True),
             PrintedLine("└──────┘"), PrintedLine("漢字 \U0001f600 \x00 \ud800 \u0301")]
    image = render_receipt(lines, cut=True)
    assert image.width == PAPER_WIDTH and black(image) > 0


def test_same_input_same_png() -> None:
    lines = [PrintedLine("POSTERM DEMO SHOP", bold=True), PrintedLine("EUR 12.50",
                                                                     double_height=True)]
    first = receipt_png(lines, cut=True)
    assert first.startswith(b"\x89PNG") and receipt_png(list(lines), cut=True) == first
    assert receipt_png(lines, cut=False) != first
    assert Image.open(io.BytesIO(first)).size == render_receipt(lines, cut=True).size


def test_ctl_receipts_png_end_to_end(rig: Rig, tmp_path: pathlib.Path) -> None:
    rig.sale("1250", PAN)
    rig.wait_receipts(1)
    out = tmp_path / "png" / "receipts"  # created by the command
    done = subprocess.run([sys.executable, "-m", "hwsim", "ctl", "--dir", str(rig.sim_dir),
                           "receipts", "--png", str(out)],
                          capture_output=True, text=True, timeout=30, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    path = out / "receipt-1.png"
    assert f"wrote {path}" in done.stdout.splitlines()
    lines = rig.hw.request("receipts", styled=True)["lines"][0]
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == PAPER_WIDTH
        expected = Image.open(io.BytesIO(receipt_png(lines, cut=True)))
        assert image.size == expected.size and image.tobytes() == expected.tobytes()

    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    failed = subprocess.run([sys.executable, "-m", "hwsim", "ctl", "--dir", str(rig.sim_dir),
                             "receipts", "--last", "--png", str(blocked / "sub")],
                            capture_output=True, text=True, timeout=30, env=_env())  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "cannot write the receipt images" in failed.stderr
