"""The explorer page's packed data: what the page embeds unpacks to what it shows, and packing is stable."""

import json

from circuitbench.leaderboard.explore_data import QUANT, pack_data, unpack_data


def _data():
    acts = [0.5, -1.25, None, 3.0, float("nan"), 0.0]
    return {"format": "2", "unit": {"task": "t", "model": "m"}, "examples": [],
            "names": ["a:0", "b:1"], "edges": [[0, 1, 0.75], [1, 0, None], [0, 0, -2.5]],
            "nodes": {"a:0": {"act": acts, "topActs": [[1.0, -3.0]], "effect": [0.1, -0.2], "top": [3]},
                      "b:1": {"act": None, "topActs": [], "effect": None, "top": None}}}


def test_packing_round_trips_within_its_rounding_and_keeps_missing_numbers_missing():
    data = _data()
    back = unpack_data(json.loads(json.dumps(pack_data(data))))
    act = back["nodes"]["a:0"]["act"]
    assert act[2] is None and act[4] is None  # missing and NaN stay missing
    for got, want in zip(act, data["nodes"]["a:0"]["act"], strict=True):
        if want is not None and want == want:
            assert abs(got - want) <= 3.0 / QUANT / 2 + 1e-9  # half a step of the node's scale (its largest |value|)
    top = back["nodes"]["a:0"]["topActs"][0]
    assert top[1] == -3.0 and abs(top[0] - 1.0) <= 3.0 / QUANT / 2  # the same scale as the node's activations
    assert back["nodes"]["b:1"]["act"] is None and back["nodes"]["b:1"]["topActs"] == []
    assert [e[:2] for e in back["edges"]] == [[0, 1], [1, 0], [0, 0]] and back["edges"][1][2] is None
    assert abs(back["edges"][0][2] - 0.75) < 1e-4 and back["edges"][2][2] == -2.5


def test_packing_what_was_unpacked_gives_the_same_bytes():
    once = pack_data(_data())
    twice = pack_data(unpack_data(once))
    assert json.dumps(twice, sort_keys=True) == json.dumps(once, sort_keys=True)


def test_a_page_of_the_previous_format_is_read():
    old = {"format": "1", "names": ["a:0"], "edges": [[0, 0, 0.5]], "examples": [],
           "nodes": {"a:0": {"as": 2.0, "es": 1.0, "act": [999, -500, None], "topActs": [[999]], "effect": None}}}
    data = unpack_data(old)
    assert data["format"] == "2" and data["nodes"]["a:0"]["act"] == [2.0, -500 * 2.0 / 999, None]
    assert data["edges"] == [[0, 0, 0.5]]
