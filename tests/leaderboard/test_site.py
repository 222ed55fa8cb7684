"""The static board: built from real accepted submissions, byte-identical, escaped, and working in Chromium."""

import json
import re
import shutil

import pytest

import circuitbench
from circuitbench.cli import main
from circuitbench.errors import CircuitbenchError
from circuitbench.leaderboard.site import build, load_board
from circuitbench.leaderboard.submit import accept
from circuitbench.runs.runner import RunConfig, run
from tests.leaderboard.conftest import console_errors

pytestmark = pytest.mark.slow  # every test here reads an end-to-end pruning run (`-m "not slow"` skips them)

EVIL = "<script>alert(1)</script>"
TASKS = ["while_return_true", "with_as"]


def _submit(root, board, model, method, name, kind, twin=None, **kw):
    adapter = circuitbench.load_model(model, device="cpu")
    results = root / "results"
    run(RunConfig(model=model, tasks=TASKS, method=method, method_kwargs=kw, ablation="zero", out=results,
                  show_progress=False, search_examples=64), adapter)
    meta = {"submission_format": "1",
            "model": {"name": name, "weights_sha256": adapter.provenance["weights_sha256"], "kind": kind,
                      "dense_twin": twin},
            "validation": {"loss": 3.9 if kind == "sparse" else 3.8, "corpus": "pypi"},
            "method": {"name": method, "hyperparameters": kw},
            "submitter": "tests", "description": f"{name} with {method} <i>not italic</i>"}
    path = root / f"{name.replace('/', '_')}-{method}.json"
    path.write_text(json.dumps(meta))
    return accept(results, path, board)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    board = root / "leaderboard"
    board.mkdir()  # a small board of its own: two tasks (one the sparse model solves, one it does not), cheap settings
    (board / "protocol.json").write_text(json.dumps({"tasks": TASKS, "ablation": "zero", "search_examples": 64}))
    # a fast mask (60 steps at lr 3e-2) that still finds a circuit small enough to draw (under 800 nodes)
    _submit(root, board, "tiny-sparse", "learned_mask", "tiny-sparse", "sparse", "tiny-dense", steps=60, lr=0.03)
    _submit(root, board, "tiny-sparse", "eap", EVIL, "sparse")  # a hostile model name
    _submit(root, board, "tiny-dense", "learned_mask", "tiny-dense", "dense", steps=5)
    build(board)
    return board


def test_one_compare_folder_gives_one_submission_per_model_and_method(board):
    entries = load_board(board)
    assert sorted((e.meta.model.name, e.meta.method.name) for e in entries) == sorted(
        [("tiny-sparse", "learned_mask"), (EVIL, "eap"), ("tiny-dense", "learned_mask")])
    for e in entries:  # each holds only its own model's and method's units (the shared folder had all three)
        assert len(e.units) == len(TASKS) and {u.summary["method"] for u in e.units} == {e.meta.method.name}


def test_the_site_has_every_page_and_is_byte_identical_when_rebuilt(board):
    site = board / "site"
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert {"index.html", "style.css", "board.js", *(f"tasks/{t}.html" for t in TASKS)} <= set(pages)
    assert len([p for p in pages if p.startswith("submissions/")]) == 3
    before = {rel: (site / rel).read_bytes() for rel in pages}
    assert build(board) == site
    assert {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*") if p.is_file()} == before


def test_every_submitted_value_is_escaped_and_nothing_is_fetched(board):
    for page in (board / "site").rglob("*.html"):
        text = page.read_text()
        assert EVIL not in text and "<i>not italic</i>" not in text, page
        # no external request: every src/href is relative or inline data (the SVG namespace URI is a name, not a
        # fetch); the empty inline icon keeps the browser from looking for a favicon.ico beside the page
        for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
            assert ref.startswith("data:") or (not re.match(r"[a-z]+:", ref) and not ref.startswith("//")), (page, ref)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (board / "site" / "index.html").read_text()


def test_task_pages_draw_the_circuit_and_show_the_example_pair(board):
    text = (board / "site" / "tasks" / "while_return_true.html").read_text()
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="circuit"' in text and "<circle" in text
    assert 'class="prompt"' in text and "correct: <code>" in text
    entries = load_board(board)
    unit = next(u for e in entries if e.meta.model.name == "tiny-sparse" for u in e.units
                if u.summary["task"] == "while_return_true")
    assert f"{unit.summary['nodes']} nodes, {unit.summary['edges']} edges" in text


def test_task_pages_link_every_pruned_circuit_to_its_explorer_page(board):
    site = board / "site"
    pruned = [(e, u) for e in load_board(board) for u in e.pruned]
    assert pruned
    from circuitbench.leaderboard.site import DRAWN_NODES

    for e, u in pruned:
        rel = f"explore/{e.content_hash}/{u.path.name.removesuffix('.parquet')}.html"
        task_page = (site / "tasks" / f"{u.summary['task']}.html").read_text()
        if u.summary["nodes"] > DRAWN_NODES:  # too large for the site: it says how to write one instead
            assert not (site / rel).exists() and f"circuitbench circuit explore {u.path.name}" in task_page
            continue
        assert f'href="../{rel}"' in task_page
        page = (site / rel).read_text()
        assert 'id="node-detail"' in page and "data-node=" in page and f'href="../../tasks/{u.summary["task"]}.html"' in page
        assert '"measured":true' in page  # the bundled models are here, so every node was measured


def test_the_index_states_the_protocol_and_counts_every_task(board):
    text = (board / "site" / "index.html").read_text()
    assert ("<b>Protocol</b>, enforced by <code>circuitbench submit</code>: the tasks while_return_true, "
            "with_as") in text
    # tiny-sparse solves while_return_true, not with_as (its card: 0.922 and 0.844): 1 of the board's 2 tasks
    from circuitbench.models.hub import bundled_models

    card = {r["task"]: r["accuracy"] for r in json.loads((bundled_models()["tiny-sparse"] / "task_eval.json").read_text())}
    assert card["with_as"] < 0.9 <= card["while_return_true"]
    assert '<td class="num" data-v="1">1 / 2</td>' in text
    assert "<th>loss measured by</th>" in text and "<td>reported</td>" in text


def test_build_refuses_an_empty_board_and_a_broken_submission(tmp_path, board, capsys):
    with pytest.raises(CircuitbenchError, match="no accepted submissions"):
        build(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(board / "submissions", broken / "submissions")
    victim = sorted((broken / "submissions").iterdir())[0]
    (victim / "submission.json").write_text("{not json")
    assert main(["leaderboard", "build", "--board", str(broken)]) == 1
    err = capsys.readouterr().err
    assert str(victim / "submission.json") in err and "resubmit" in err
    assert not (broken / "site").exists()  # nothing half-built


# --- in a real browser (the `browser` fixture: tests/leaderboard/conftest.py) ---------------------------------

def test_pages_load_from_file_with_no_console_errors(board, browser, tmp_path):
    site = board / "site"
    for page in sorted(site.rglob("*.html")):
        browser.get(page.as_uri())
        assert browser.execute_script("return document.readyState") == "complete"
        assert console_errors(browser) == [], page
    browser.get((site / "index.html").as_uri())
    browser.save_screenshot(str(tmp_path / "board.png"))
    assert (tmp_path / "board.png").stat().st_size > 10_000


def test_sorting_and_the_kind_filter_work(board, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((board / "site" / "index.html").as_uri())
    heads = browser.find_elements(By.CSS_SELECTOR, "#board thead th")
    col = [h.text for h in heads].index("geomean edges")

    def column():
        return [r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-v")
                for r in browser.find_elements(By.CSS_SELECTOR, "#board tbody tr")]

    heads[col].click()
    up = [float(v) for v in column() if v]
    assert up == sorted(up) and len(up) >= 2
    heads[col].click()
    down = [float(v) for v in column() if v]
    assert down == sorted(down, reverse=True)
    Select(browser.find_element(By.ID, "kind-filter")).select_by_value("dense")
    visible = [r for r in browser.find_elements(By.CSS_SELECTOR, "#board tbody tr") if r.is_displayed()]
    assert visible and all(r.get_attribute("data-kind") == "dense" for r in visible)
    assert console_errors(browser) == []


def test_the_circuit_drawing_renders(board, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get((board / "site" / "tasks" / "while_return_true.html").as_uri())
    # the first circuit small enough to draw (a 60-step mask's can exceed DRAWN_NODES; the page then says so)
    drawn = [d for d in browser.find_elements(By.CSS_SELECTOR, "details") if d.find_elements(By.CSS_SELECTOR, "svg.circuit")]
    assert drawn, "no circuit on the page is small enough to draw"
    details = drawn[0]
    if details.get_attribute("open") is None:
        details.find_element(By.TAG_NAME, "summary").click()
    svg = details.find_element(By.CSS_SELECTOR, "svg.circuit")
    assert svg.size["width"] > 100 and svg.size["height"] > 50
    assert len(svg.find_elements(By.CSS_SELECTOR, "circle.node")) > 0
    svg.screenshot(str(tmp_path / "circuit.png"))
    assert (tmp_path / "circuit.png").stat().st_size > 2_000


def test_a_hostile_model_name_shows_as_text(board, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get((board / "site" / "index.html").as_uri())
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#board tbody td:first-child a")]
    assert EVIL in names
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018  (no script ran, so no alert is open)
    assert browser.execute_script("return document.querySelectorAll('#board script').length") == 0


def test_explorer_pages_share_one_examples_file_per_model_and_task(board, browser):
    from selenium.webdriver.common.by import By

    from circuitbench.leaderboard.explore_data import read_page_data

    site = board / "site"
    pages = sorted((site / "explore").glob("*/*.html"))
    assert pages
    refs = {}
    for page in pages:
        data = read_page_data(page)
        assert data is not None and data["measured"], page
        assert '"examples"' not in page.read_text()  # the tokens live once per task, in the shared file
        refs.setdefault((data["unit"]["model"], data["unit"]["task"]), set()).add(data["examplesRef"])
        n = len(data["examples"])
        assert n > 100 and all(len(x["act"]) == n for x in data["nodes"].values())
        shown = {r for x in data["nodes"].values() for r in x["top"] or []}
        assert shown and all(data["examples"][r]["tokens"] for r in shown)
    assert all(len(keys) == 1 for keys in refs.values())  # one file per model and task, whatever the method
    files = sorted((site / "explore" / "examples").glob("*.js"))
    assert len(files) == len({k for keys in refs.values() for k in keys})
    # the page reads its examples from the shared file: a node's prompts show coloured tokens
    page = pages[0]
    browser.get(page.as_uri())
    data = read_page_data(page)
    name = max(data["nodes"], key=lambda m: data["nodes"][m]["score"])
    browser.find_element(By.CSS_SELECTOR, f'[data-node="{name}"] circle').click()
    assert browser.find_elements(By.CSS_SELECTOR, "#node-detail .prompt span")
    assert console_errors(browser) == []


def test_build_into_a_new_folder_reuses_the_measured_pages_and_loads_no_model(board, tmp_path, monkeypatch):
    import circuitbench.runs.saved as saved_module

    def no_model(*args, **kwargs):
        raise CircuitbenchError("the build tried to load a model to measure a page it should have reused")

    monkeypatch.setattr(saved_module, "load_unit_model", no_model)
    new = build(board, tmp_path / "elsewhere")
    old = board / "site"
    explore = sorted(p.relative_to(old).as_posix() for p in (old / "explore").rglob("*") if p.is_file())
    assert explore and all((new / rel).read_bytes() == (old / rel).read_bytes() for rel in explore)


def test_build_never_replaces_the_board_or_a_folder_it_did_not_make(board, tmp_path, capsys):
    submissions = sorted(p.relative_to(board).as_posix() for p in (board / "submissions").rglob("*") if p.is_file())
    for out in (board, board / "submissions", board / "submissions" / "inner"):
        assert main(["leaderboard", "build", "--board", str(board), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "--out" in err and "--board" in err and "Traceback" not in err, err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert main(["leaderboard", "build", "--board", str(board), "--out", str(mine)]) == 1
    assert "did not write" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "my notes"
    assert sorted(p.relative_to(board).as_posix() for p in (board / "submissions").rglob("*") if p.is_file()) == \
        submissions
    # a site it built carries its marker and is replaced on the next build; an empty folder is taken as well
    assert (board / "site" / ".made-by-circuitbench").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["leaderboard", "build", "--board", str(board), "--out", str(empty), "--no-explore"]) == 0
    assert (empty / "index.html").is_file()
    assert main(["leaderboard", "build", "--board", str(board), "--out", str(empty), "--no-explore"]) == 0
