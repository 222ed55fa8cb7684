"""The committed board is what its submissions build: every baseline passes validation and the site is current."""

import shutil
from pathlib import Path

import pytest

from circuitbench.leaderboard.site import build, load_board
from circuitbench.leaderboard.submit import META_FILE, SubmissionMeta, validate

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / "leaderboard"


@pytest.mark.slow
def test_the_committed_site_is_a_fresh_build_of_the_committed_submissions(tmp_path):
    board = tmp_path / "leaderboard"
    shutil.copytree(BOARD / "submissions", board / "submissions")
    # the committed site comes too: its explorer pages are re-rendered from the data they embed (measuring
    # every circuit again takes about 10 minutes; tests/leaderboard/test_site.py measures a small board's)
    shutil.copytree(BOARD / "site", board / "site")
    site = build(board)
    fresh = {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    committed = {p.relative_to(BOARD / "site").as_posix(): p.read_bytes()
                 for p in (BOARD / "site").rglob("*") if p.is_file()}
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"rebuild the board: circuitbench leaderboard build --board leaderboard ({stale[:3]})"


def test_every_baseline_model_and_method_is_on_the_board_and_still_valid():
    entries = load_board(BOARD)
    on_board = {(e.meta.model.name, e.meta.method.name) for e in entries}
    methods = {"learned_mask", "eap", "eap_ig", "activation_patching", "magnitude", "random"}
    assert on_board == {(m, k) for m in ("tiny-sparse", "tiny-dense") for k in methods}
    for e in entries:  # the accepted copy revalidates against today's task specs
        meta = SubmissionMeta.model_validate_json((e.path / META_FILE).read_text())
        assert meta.model.name in ("tiny-sparse", "tiny-dense")
        report = validate(e.path / "results", e.path / META_FILE)
        assert report.ok, report.problems
        assert len(e.units) == 20


def test_every_pruned_circuit_of_the_committed_board_has_a_measured_explorer_page():
    from circuitbench.leaderboard.explore_data import BOARD_NODES_WITH_DATA, read_page_data
    from circuitbench.leaderboard.site import DRAWN_NODES

    pages = 0
    for e in load_board(BOARD):
        for u in e.pruned:
            page = BOARD / "site" / "explore" / e.content_hash / (u.path.name.removesuffix(".parquet") + ".html")
            if u.summary["nodes"] > DRAWN_NODES:
                assert not page.exists()
                continue
            data = read_page_data(page)
            assert data is not None and data["measured"], page
            assert data["unit"]["nodes"] == u.summary["nodes"] and len(data["nodes"]) == u.summary["nodes"]
            with_data = [n for n in data["nodes"].values() if n["act"] is not None]
            assert len(with_data) == min(len(data["nodes"]), BOARD_NODES_WITH_DATA)  # the highest-scoring ones
            assert all(len(n["act"]) == len(data["examples"]) for n in with_data)
            assert all(data["examples"][r]["tokens"] for n in with_data for r in n["top"])
            pages += 1
    assert pages >= 13  # at least every learned-mask circuit of both models


def test_the_readme_screenshot_shows_the_committed_boards_numbers():
    """docs/leaderboard.png is retaken (python docs/board_screenshot.py) whenever the board's table moves."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("board_screenshot", REPO / "docs" / "board_screenshot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record = json.loads((REPO / "docs" / "leaderboard.json").read_text())
    table = module.board_table((BOARD / "site" / "index.html").read_text())
    assert table[0][:4] == ["model", "kind", "method", "tasks solved"] and len(table) == 13  # 2 models x 6 methods
    assert record["table"] == table, "the board moved: python docs/board_screenshot.py retakes the README's picture"
    png = (REPO / "docs" / "leaderboard.png").read_bytes()  # the script's picture: a PNG of its 1400-px window
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1400
