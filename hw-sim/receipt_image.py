"""Printed receipts drawn as a 58 mm thermal printer would put them on paper, as PNG.

What is drawn, in an 8-bit greyscale image:

* the paper: a white strip `PAPER_WIDTH` (432) pixels wide, one pixel per printer dot:
  the printable width of 384 dots with a `MARGIN` of 24 on each side, and `TOP` (24)
  blank pixels above the first line;
* the print, in pure black (a thermal head burns dots: no anti-aliasing, no grey), one
  line under the other, text cell by cell on the printer's grid from the left margin:
  font A cells are 12 x 24 dots (32 columns), font B cells 9 x 17 (42 columns), so
  columns line up whatever glyphs the font has. Bold uses the bold font file, or is
  struck twice one dot apart when there is none. Double width and double height scale
  the normal cell 2x in that direction, nearest neighbour, as the printer does: a
  double-height font A line takes 48 dots. Blank lines keep their height; text beyond
  the printable width is not drawn. Alignment is already in the text (leading spaces,
  see `hwsim.printer.PrintedLine`);
* below the last line, for a receipt that was cut (`cut=True`): a feed gap, then the cut
  mark across the paper in mid grey (`CUT_GREY`, never print): a dashed line with a small
  pair of scissors drawn at the left edge. A receipt still on the roll (`cut=False`) has
  no mark: the paper just goes on below it, blank.

The glyphs are DejaVu Sans Mono (`FONT`, `FONT_BOLD`) when the files are there, else
Pillow's built-in default font: a missing font file never fails a render, and a
character the font lacks is drawn as Pillow draws it (a "?" when the font cannot even
encode it). The same lines give the same image and, on the same machine, the same PNG
bytes.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Mapping, Sequence
from PIL import Image, ImageDraw, ImageFont

from hwsim.printer import PrintedLine

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"

PRINT_WIDTH = 384  # dots the head prints across
MARGIN = 24  # blank paper left and right of the printable width
PAPER_WIDTH = PRINT_WIDTH + 2 * MARGIN
TOP = 24  # blank paper above the first line
FEED = 48  # paper fed between the last line and the cut
BELOW_CUT = 12  # paper shown below the cut mark
BOTTOM = 24  # blank paper shown below the last line of an uncut receipt
CELL_A = (12, 24)  # font A cell, dots (width, height)
CELL_B = (9, 17)  # font B cell
FONT_SIZE = {CELL_A: 20, CELL_B: 14}  # DejaVu Sans Mono sizes whose lines fit the cells
PAPER = 255
INK = 0
CUT_GREY = 128

AnyFont = ImageFont.FreeTypeFont | ImageFont.ImageFont
LineLike = PrintedLine | Mapping[str, object]


def render_receipt(lines: Sequence[LineLike], *, cut: bool) -> Image.Image:
    """The receipt `lines` (PrintedLine, or dicts with the same keys: text required, the
    styles default to False) on paper, with the cut mark below them if `cut`."""
    printed = [_as_line(line) for line in lines]
    body = sum(_line_height(line) for line in printed)
    tail = FEED + BELOW_CUT if cut else BOTTOM
    paper = Image.new("L", (PAPER_WIDTH, TOP + body + tail), PAPER)
    y = TOP
    for line in printed:
        strip = _draw_line(line)
        if strip is not None:
            paper.paste(strip, (MARGIN, y))
        y += _line_height(line)
    if cut:
        _draw_cut_mark(paper, y + FEED)
    return paper


def receipt_png(lines: Sequence[LineLike], *, cut: bool) -> bytes:
    """`render_receipt` as PNG bytes (no metadata: the same lines give the same bytes)."""
    out = io.BytesIO()
    render_receipt(lines, cut=cut).save(out, format="PNG")
    return out.getvalue()


# -- lines ----------------------------------------------------------------------


def _as_line(line: LineLike) -> PrintedLine:
    if isinstance(line, PrintedLine):
        return line
    if isinstance(line, Mapping):
        return PrintedLine(
            str(line["text"]), bold=bool(line.get("bold", False)),
            double_height=bool(line.get("double_height", False)),
            double_width=bool(line.get("double_width", False)),
            font_b=bool(line.get("font_b", False)),
        )  # fmt: skip
    raise TypeError(f"a receipt line is a PrintedLine or a dict, not {type(line).__name__}")


def _cell(line: PrintedLine) -> tuple[int, int]:
    return CELL_B if line.font_b else CELL_A


def _line_height(line: PrintedLine) -> int:
    return _cell(line)[1] * (2 if line.double_height else 1)


def _draw_line(line: PrintedLine) -> Image.Image | None:
    """The line's print, from its first column; None for a blank line."""
    width, height = _cell(line)
    scale_x, scale_y = (2 if line.double_width else 1), (2 if line.double_height else 1)
    text = line.text[:PRINT_WIDTH // (width * scale_x)].rstrip()
    if not text:
        return None
    strip = Image.new("L", (len(text) * width, height), PAPER)
    for column, char in enumerate(text):
        if not char.isspace():
            strip.paste(_glyph(char, (width, height), line.bold, FONT, FONT_BOLD),
                        (column * width, 0))  # fmt: skip
    if scale_x > 1 or scale_y > 1:
        strip = strip.resize((strip.width * scale_x, height * scale_y),
                             Image.Resampling.NEAREST)  # fmt: skip
    return strip


# -- glyphs ---------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _font(path: str, size: int) -> tuple[AnyFont, bool]:
    """The font at `path`, or Pillow's default when it cannot be loaded; and whether it
    is the file asked for."""
    if os.path.exists(path):
        try:
            return ImageFont.truetype(path, size), True
        except OSError:
            pass
    return ImageFont.load_default(size=size), False


@functools.lru_cache(maxsize=4096)
def _glyph(char: str, cell: tuple[int, int], bold: bool, regular: str,
           bold_path: str) -> Image.Image:
    """One character in its cell, black on white, clipped to the cell."""
    width, height = cell
    size = FONT_SIZE.get(cell, height * 5 // 6)
    font, real = _font(bold_path, size) if bold else _font(regular, size)
    if bold and not real:
        font, _ = _font(regular, size)
    strike_twice = bold and not real
    image = Image.new("L", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"  # dots are burnt or not: no anti-aliasing
    top = (height - _font_height(font)) // 2
    for shown in (char, "?"):
        try:
            for dx in (0, 1) if strike_twice else (0,):
                draw.text((dx, top), shown, font=font, fill=INK)
            break
        except (UnicodeError, ValueError, OSError):  # a font that cannot encode it
            continue
    return image


def _font_height(font: AnyFont) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return ascent + descent
    return int(font.getbbox("Ag")[3])


# -- the cut --------------------------------------------------------------------


def _draw_cut_mark(paper: Image.Image, y: int) -> None:
    """A dashed line across the paper at `y`, scissors at its left end, in mid grey."""
    draw = ImageDraw.Draw(paper)
    # scissors: two finger rings on the left, the blades crossing towards the line
    for ring_y in (y - 6, y + 6):
        draw.ellipse((3, ring_y - 4, 11, ring_y + 4), outline=CUT_GREY, width=2)
    draw.line((10, y - 4, 26, y + 3), fill=CUT_GREY, width=2)
    draw.line((10, y + 4, 26, y - 3), fill=CUT_GREY, width=2)
    for x in range(30, PAPER_WIDTH, 12):
        draw.line((x, y, min(x + 7, PAPER_WIDTH - 1), y), fill=CUT_GREY, width=2)
