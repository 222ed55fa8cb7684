"""The README is a front page and the rest is a documentation site whose links, navigation and CLI reference hold.

`mkdocs build --strict` itself runs in the README's test command (and so in CI); these tests hold what it does not
check: the README's size and its links from the repository root, that every page is in the navigation, and that the
generated CLI reference covers every command.
"""

import importlib.util
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)\s#]+)(#[^)]*)?\)")


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [m.group(1) for m in LINK.finditer(text) if not re.match(r"[a-z]+:", m.group(1))]


def test_the_readme_is_a_front_page_whose_links_resolve():
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= 300
    broken = [link for link in _links(readme) if not (REPO / link).is_file()]
    assert not broken, f"README.md links to missing files: {broken}"
    assert {link for link in _links(readme) if link.startswith("docs/")} >= {"docs/tutorials/find-a-circuit.md",
                                                                              "docs/reference/cli.md"}


def test_every_page_links_to_files_that_exist_and_is_in_the_navigation():
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # tolerant of mkdocs tags

    def nav_pages(entries) -> list[str]:
        out = []
        for entry in entries:
            for value in entry.values():
                out += nav_pages(value) if isinstance(value, list) else [value]
        return out

    nav = nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, "every page of docs/ is in mkdocs.yml's nav, and every nav entry is a page"
    broken = []
    for page in DOCS.rglob("*.md"):
        for link in _links(page):
            target = (page.parent / link).resolve()
            if not target.is_file() and not (REPO / target.relative_to(DOCS.resolve())).is_file():
                broken.append(f"{page.relative_to(REPO)} -> {link}")  # baselines/ plots: published by docs/hooks.py
    assert not broken, broken


def test_the_cli_reference_covers_every_command():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    text = hooks.cli_reference()
    for command in ("run", "compare", "report", "train", "val-loss", "submit", "circuit export", "circuit import",
                    "circuit explore", "leaderboard build", "bridge train", "bridge steer"):
        assert f"## `circuitbench {command}`" in text or f"# `circuitbench {command}`" in text, command
    assert "--target-loss" in text and "usage: circuitbench run" in text
    page = hooks.on_page_markdown("<!-- readme -->\n<!-- cli-reference -->", None, None, None)
    assert "](tutorials/find-a-circuit.md)" in page and "](docs/" not in page and "usage: circuitbench" in page


def test_the_readme_opens_with_the_two_commands_and_the_second_is_what_ci_runs():
    block = (REPO / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(block) == 2 and block[0].endswith("circuitbench run")
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert block[1] == ci, "the README's test command and .ci/run differ: keep them identical"
    assert "mkdocs build --strict" in ci and "'.[test,docs]'" in ci
