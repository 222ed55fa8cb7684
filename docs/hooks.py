"""MkDocs hooks (mkdocs.yml, `hooks:`): what the site shows that lives outside docs/, generated at build time.

- `<!-- readme -->` in a page becomes the README, its `docs/` links made relative to the site: the front page
  is written once, for GitHub and for the site;
- `<!-- cli-reference -->` becomes every `circuitbench` command's `--help`, from the parser itself, so the CLI
  reference cannot drift from the code;
- the plots the generated tables sit beside (`baselines/results*/*.png`) are published under the same paths,
  so a page links `../baselines/results/compare-tiny-sparse-seed0.png` and the file is stored once.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLOTS = ("baselines/results/*.png", "baselines/results-edges/*.png", "baselines/results-seeds/*.png")


def on_files(files, config):  # noqa: ANN001, ANN201 (MkDocs' hook signature)
    """Publish the plots under baselines/ at their repository paths."""
    from mkdocs.structure.files import File

    for pattern in PLOTS:
        for path in sorted(REPO.glob(pattern)):
            files.append(File.generated(config, str(path.relative_to(REPO)), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201 (MkDocs' hook signature)
    """Fill the `<!-- readme -->` and `<!-- cli-reference -->` markers."""
    if "<!-- readme -->" in markdown:
        readme = (REPO / "README.md").read_text().replace("](docs/", "](")
        markdown = markdown.replace("<!-- readme -->", readme.split("\n", 1)[1])
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown


def cli_reference() -> str:
    """Every command's and subcommand's `--help`, in the parser's order, 100 columns wide."""
    from circuitbench.cli import build_parser

    os.environ["COLUMNS"] = "100"
    out: list[str] = []
    seen: set[int] = set()

    def walk(parser: argparse.ArgumentParser, name: str, depth: int) -> None:
        out.append(f"{'#' * depth} `{name}`\n\n```text\n{parser.format_help()}```\n")
        for action in parser._actions:  # noqa: SLF001 (argparse has no public walk over subcommands)
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for sub, child in action.choices.items():
                    if id(child) not in seen:
                        seen.add(id(child))
                        walk(child, f"{name} {sub}", min(depth + 1, 4))

    walk(build_parser(), "circuitbench", 2)
    return "\n".join(out)
