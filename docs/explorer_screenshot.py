"""The README's explorer screenshot: a committed baseline circuit's page, one node clicked, in headless Chromium.

    python docs/explorer_screenshot.py [UNIT] [--node SITE:CHANNEL] [--out docs/explorer.png]

Writes the page with `circuitbench circuit explore` (into a temporary folder), opens it in Debian's Chromium
through Selenium, clicks the node (default: the one whose ablation costs the circuit most), and saves a PNG.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "baselines/results/tiny-sparse/single_double_quote.learned_mask.seed0.parquet"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("unit", type=Path, nargs="?", default=DEFAULT)
    p.add_argument("--node", default=None)
    p.add_argument("--out", type=Path, default=REPO / "docs/explorer.png")
    args = p.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from circuitbench.cli import main as cli
    from circuitbench.results.nodes import node_table_path, read_node_table, strongest_nodes

    with tempfile.TemporaryDirectory() as tmp:
        if cli(["circuit", "explore", str(args.unit), "--out", tmp]) != 0:
            return 1
        page = Path(tmp) / (args.unit.name.removesuffix(".parquet") + ".html")
        node = args.node or strongest_nodes(read_node_table(node_table_path(args.unit)), 1)[0]["node"]
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,950",
                     "--hide-scrollbars"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(page.as_uri())
            driver.find_element(By.CSS_SELECTOR, f'[data-node="{node}"] circle').click()
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(f"{args.out}: {args.unit.name}, node {node} clicked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
