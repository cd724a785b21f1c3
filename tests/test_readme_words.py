"""Every display word the README promises is one the terminal can show.

The README's tables that say what the terminal shows (a column headed "rows", "what the
terminal shows" or "what the merchant sees ...") are read, the capitalised words of
each cell taken out phrase by phrase (split at "/", ",", ";", " or ", " then ",
" else ", ": " and parentheses), and each phrase must occur in a string of the firmware
or its drivers: a plain literal, or an f-string whose placeholders stand for any text
("LAST {kind} REVERSED" gives LAST SALE REVERSED and LAST REFUND REVERSED). A word the
README states and no code produces (HOST OFFLINE written for a case that shows HOST
UNAVAILABLE, a screen renamed in the code alone) fails here, with its table row.

What it cannot see: which of two existing words a case shows; the end-to-end tests
assert those (tests/test_e2e_readme_words.py and the others per case).
"""

from __future__ import annotations

import ast
import pathlib
import re
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORD_COLUMNS = ("rows", "what the terminal shows", "what the merchant sees")
# Examples the README gives that come from outside the firmware's texts: a chip card's
# application labels (the card's own data) and the currency code (the configuration)
FROM_OUTSIDE = {"CREDIT", "DEBIT"}
PHRASE = re.compile(r"(?<![\w`])([A-Z][A-Z0-9%#=*.'\-]*(?:[ ][A-Z0-9%#=*.'\-]+)*)(?![\w`])")
SPLIT = re.compile(r"\s*/\s*|,\s*|;\s*|\s+or\s+|\s+then\s+|\s+else\s+|:\s+|\(|\)")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def readme_cells() -> Iterator[tuple[str, str]]:
    """(the row's first cell, the words cell) of every table that says what is shown."""
    column: int | None = None
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = _cells(line)
        if column is None:  # a header, or a table not about the display
            heads = [c.lower() for c in cells]
            column = next((i for i, h in enumerate(heads)
                           if any(h.startswith(w) for w in WORD_COLUMNS)), -1)
            continue
        if column < 0 or set(line) <= set("|-: ") or len(cells) <= column:
            continue
        yield cells[0], cells[column]


def phrases(cell: str) -> list[str]:
    cell = re.sub(r"`[^`]*`", " ", cell)  # code: configuration keys, commands
    cell = re.sub(r"\bEUR n\b", " ", cell)  # an amount in the configured currency
    found: list[str] = []
    for part in SPLIT.split(cell):
        for match in PHRASE.finditer(part):
            word = match.group(1).strip(" .")
            if len(word) >= 2 and word not in FROM_OUTSIDE:
                found.append(word)
    return found


def firmware_texts() -> tuple[str, list[re.Pattern[str]]]:
    """Every string literal of firmware/ and drivers/, and each f-string's lines as a
    pattern whose placeholders match any text."""
    plain: list[str] = []
    patterns: list[re.Pattern[str]] = []
    for folder in ("firmware", "drivers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    plain.append(node.value)
                elif isinstance(node, ast.JoinedStr):
                    text = "".join(re.escape(str(v.value)) if isinstance(v, ast.Constant)
                                   else "\x00" for v in node.values)
                    for line in text.split("\\\n"):
                        fixed = re.sub(r"\\.|\x00|[^A-Z]", "", line)
                        if "\x00" in line and len(fixed) >= 3:
                            patterns.append(re.compile(line.replace("\x00", ".*")))
    return "\n".join(plain), patterns


def test_the_readme_tables_of_what_is_shown_are_found() -> None:
    rows = list(readme_cells())
    firsts = {first for first, _cell in rows}
    # the tables this test reads: the screens, what goes wrong, the offline rules, devices
    assert {"idle", "refund", "batch close"} <= firsts, sorted(firsts)
    assert any(first.startswith("The bank stays busy") for first in firsts)
    assert any(first.startswith("amount at most") for first in firsts)
    assert sum(len(phrases(cell)) for _first, cell in rows) > 200


def test_every_display_word_in_the_readme_is_produced_by_the_firmware() -> None:
    plain, patterns = firmware_texts()
    missing: list[str] = []
    for first, cell in readme_cells():
        for word in phrases(cell):
            if word in plain or any(p.search(word) for p in patterns):
                continue
            missing.append(f"{word!r} (README row {first!r})")
    assert missing == [], "README words no code produces:\n" + "\n".join(missing)


def test_a_word_no_code_produces_is_caught() -> None:
    plain, patterns = firmware_texts()
    for word in phrases("NOT COMPLETED / HOST DOWNTIME / REFUND NEEDS HOST"):
        produced = word in plain or any(p.search(word) for p in patterns)
        assert produced == (word != "HOST DOWNTIME"), word
