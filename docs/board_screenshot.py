"""The README's board screenshot, and the numbers it shows, from the committed board in headless Chromium.

    python docs/board_screenshot.py [--site leaderboard/site] [--out docs/leaderboard.png]

Opens the board's index page from `file://` in Debian's Chromium through Selenium, saves a PNG, and writes
beside it (`docs/leaderboard.json`) the main table's cells as the page shows them. The committed-board test
compares that record with the committed site's table, so the picture is retaken whenever the board's numbers
move (the README never shows a board that is not HEAD's).
"""

from __future__ import annotations

import argparse
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class _Table(HTMLParser):
    """The text of every cell of the table with id `board`, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_table = self._in_cell = False
        self._cell: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "board") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._in_cell, self._cell = True, []
        elif self._in_cell and tag == "br":
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._in_table:
            self._in_table = False
        elif self._in_cell and tag in ("td", "th"):
            self._in_cell = False
            self.rows[-1].append(" ".join("".join(self._cell).split()))

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self._cell.append(data)


def board_table(html: str) -> list[list[str]]:
    """The main table of a board's index page: the header row, then one row per submission, as text."""
    parser = _Table()
    parser.feed(html)
    return [r for r in parser.rows if r]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--site", type=Path, default=REPO / "leaderboard" / "site")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "leaderboard.png")
    args = p.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    index = (args.site / "index.html").resolve()
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--hide-scrollbars"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(index.as_uri())
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    shown = board_table(index.read_text())  # the page as written (its script only sorts and filters the rows)
    record = args.out.with_suffix(".json")
    record.write_text(json.dumps({"source": str(index.relative_to(REPO)), "table": shown}, indent=1) + "\n")
    print(f"{args.out} and {record}: {len(shown) - 1} rows of {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
