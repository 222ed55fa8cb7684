"""The circuit explorer: a self-contained page per saved circuit, clicked through in headless Chromium."""

import re

import pytest

from circuitbench.cli import main
from circuitbench.leaderboard.explore import read_page_data, write_explorer
from circuitbench.runs.saved import load_saved
from tests.leaderboard.conftest import console_errors

pytestmark = pytest.mark.slow  # every test here reads an end-to-end pruning run (`-m "not slow"` skips them)

TASK = "single_double_quote"


@pytest.fixture(scope="module")
def page(tmp_path_factory, quote_unit):
    """The explorer page of a fast learned mask's single_double_quote circuit (the session's unit)."""
    root = tmp_path_factory.mktemp("explorer")
    unit = quote_unit[1]
    assert main(["circuit", "explore", str(unit), "--out", str(root / "pages")]) == 0
    return unit, root / "pages" / f"{TASK}.learned_mask.seed0.html"


def _data(path):
    data = read_page_data(path)  # the page's packed data, unpacked as its script does
    assert data is not None, path
    return data


def test_the_page_embeds_every_node_with_its_activations_and_fetches_nothing(page):
    unit, path = page
    text = path.read_text()
    saved = load_saved(unit)
    data = _data(path)
    kept = {f"{site}:{ch}" for site, chans in saved.circuit.kept().items() for ch in chans}
    assert set(data["nodes"]) == kept and data["measured"]
    n_test = len(data["examples"])
    assert n_test > 100 and all(len(n["act"]) == n_test for n in data["nodes"].values())
    assert all(f'data-node="{name}"' in text for name in kept)
    assert data["unit"]["nodes"] == saved.summary["nodes"] and data["unit"]["edges"] == saved.summary["edges"]
    urls = re.findall(r"[a-z]+://[^\s\"'<>)]+", text)  # (base64 data holds "//", never "://")
    assert [u for u in urls if u != "http://www.w3.org/2000/svg"] == []  # no network, works from file://
    assert all(not ref.startswith("//") for ref in re.findall(r'(?:src|href)="([^"]*)"', text))
    assert "<script src" not in text and "<link" not in text


def test_clicking_a_node_shows_what_it_does(page, browser):
    from selenium.webdriver.common.by import By

    unit, path = page
    browser.get(path.as_uri())
    assert console_errors(browser) == []
    data = _data(path)
    name = max(data["nodes"], key=lambda n: data["nodes"][n]["score"])
    browser.find_element(By.CSS_SELECTOR, f'[data-node="{name}"] circle').click()
    detail = browser.find_element(By.ID, "node-detail").text
    assert name in detail and "Activation at the answer position" in detail
    assert "Ablating this node alone from the circuit" in detail and "Where it is most active" in detail
    assert browser.find_elements(By.CSS_SELECTOR, "#node-detail .prompt span")  # tokens coloured along a prompt
    assert browser.find_elements(By.CSS_SELECTOR, "#node-detail svg.strip circle")  # one dot per example
    incoming = browser.find_elements(By.CSS_SELECTOR, "#node-detail [data-go]")
    if incoming:  # following an edge selects its other end
        other = incoming[0].get_attribute("data-go")
        incoming[0].click()
        assert other in browser.find_element(By.ID, "node-detail").text
    assert console_errors(browser) == []


def test_the_pair_view_recolours_the_nodes_and_the_view_zooms(page, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, path = page
    browser.get(path.as_uri())

    def fills():
        return [c.get_attribute("fill") for c in browser.find_elements(By.CSS_SELECTOR, "[data-node] circle")]

    by_kind = fills()
    select = Select(browser.find_element(By.ID, "pair-select"))
    select.select_by_value("pair:0")
    pair0 = fills()
    assert pair0 != by_kind and all(f.startswith("rgb(") for f in pair0)
    select.select_by_value("contrast")
    assert fills() != pair0
    def view_box():
        return browser.execute_script("return document.getElementById('graph').getAttribute('viewBox')")

    box = view_box()
    browser.find_element(By.ID, "zoom-in").click()
    assert box and view_box() != box
    assert console_errors(browser) == []


def test_without_a_model_the_page_says_so_and_still_works(page, browser, tmp_path):
    from selenium.webdriver.common.by import By

    unit, _ = page
    path, why = write_explorer(load_saved(unit), tmp_path, None)
    assert why and "not measured" in path.read_text()
    browser.get(path.as_uri())
    browser.find_elements(By.CSS_SELECTOR, "[data-node] circle")[0].click()
    assert "Activations not measured" in browser.find_element(By.ID, "node-detail").text
    assert console_errors(browser) == []


def test_explore_refuses_a_file_as_its_output_folder(page, tmp_path, capsys):
    unit, _ = page
    blocker = tmp_path / "taken"
    blocker.write_text("mine")
    assert main(["circuit", "explore", str(unit), "--out", str(blocker)]) == 1
    assert "--out" in capsys.readouterr().err and blocker.read_text() == "mine"
