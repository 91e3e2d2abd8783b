"""Free-text questions and their ground truth (evaluate.questions, data.synth.facts), and the
evaluation protocol's seed sets (spartan_train.protocol): plain functions on hand-made frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spartan_train import protocol
from spartan_train.data.synth.facts import FACTS, window_facts
from spartan_train.evaluate.questions import (
    DEFAULT_QUESTIONS,
    DriveFacts,
    FreeQuestion,
    load_questions,
    make_question,
    read_facts,
    score_question,
    summarize,
)


def frame(speed: float = 8.0, yaw_rate: float = 0.0, maneuver: str = "straight",
          light: str | None = None, node: float | None = 60.0, view: tuple[str, ...] = ()
          ) -> dict:
    return {"maneuver": maneuver, "speed": speed, "yaw_rate": yaw_rate, "light": light,
            "node_ahead_m": node, "in_view": sorted(view)}


@pytest.mark.parametrize("text, facts", [
    ("the gas station where we turned left", {"gas_station", "turn_left"}),
    ("stopping at a red light at night", {"stop", "red_light", "night"}),
    ("a lane change to the left in the rain", {"lane_change_left", "rain"}),
    ("changing lanes", {"lane_change"}),
    ("turning right at a traffic light", {"turn_right", "traffic_light"}),
    ("a turn at the intersection in fog", {"turn", "crossing", "fog"}),
    ("Waiting at the crosswalk at dusk", {"stop", "crossing", "dusk"}),
])
def test_read_facts(text: str, facts: set[str]) -> None:
    assert read_facts(text) == facts


def test_every_default_question_reads_facts() -> None:
    for text in DEFAULT_QUESTIONS:
        assert read_facts(text) and read_facts(text) <= set(FACTS), text


def test_window_facts_from_frames() -> None:
    # 24 frames turning left (60 deg over 2.3 s) past a gas station, at a crossing, at night
    turn = [frame(speed=6.0, yaw_rate=0.46, maneuver="turn_left", node=15.0,
                  view=("gas station", "building") if i < 4 else ("building",))
            for i in range(24)]
    assert window_facts(turn, "night") == {"turn_left", "turn", "gas_station", "crossing",
                                           "night"}
    # two frames of a gas station are a glimpse, not "in view"
    glimpse = [frame(view=("gas station",) if i < 2 else ()) for i in range(24)]
    assert "gas_station" not in window_facts(glimpse, "clear")
    # braking to a standstill at a red light
    stop = [frame(speed=max(0.0, 5.0 - i), light="red", view=("traffic light",))
            for i in range(24)]
    assert window_facts(stop, "rain") == {"stop", "red_light", "traffic_light", "rain"}
    assert window_facts([], "clear") == set()


def test_question_file_yaml_json_and_errors(tmp_path: Path) -> None:
    y = tmp_path / "q.yaml"
    y.write_text("- the gas station where we turned left\n"
                 "- text: pulling up in the fog\n  facts: [stop, fog]\n")
    qs = load_questions(y)
    assert qs == [FreeQuestion("the gas station where we turned left",
                               frozenset({"gas_station", "turn_left"})),
                  FreeQuestion("pulling up in the fog", frozenset({"stop", "fog"}))]
    j = tmp_path / "q.json"
    j.write_text(json.dumps({"questions": [{"text": "turning left at night"}]}))
    assert load_questions(j)[0].facts == {"turn_left", "night"}
    for body, msg in [("[]", "non-empty list"), ("- hello there\n", "no known fact"),
                      ("- text: x\n  facts: [teleport]\n", "unknown fact"),
                      ("- {nope: 1}\n", "mapping with 'text'"), ("- text: ''\n", "empty text"),
                      ("- text: a\n  facts: stop\n", "list of names"), (": : :\n", "not YAML")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(body)
        with pytest.raises(ValueError, match=msg):
            load_questions(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_questions(tmp_path / "missing.yaml")
    assert make_question("anything", ["night"]).facts == {"night"}


def test_score_and_summary() -> None:
    q = make_question("the gas station where we turned left")
    returned = [{"turn_left"}, {"gas_station"}, {"gas_station", "turn_left", "clear"}]
    stored = returned + [{"gas_station", "turn_left"}, set()]
    row = score_question(q, returned, stored, depth=10)
    assert row["rank"] == 3 and row["answering_segments"] == 2 and row["stored_segments"] == 5
    miss = score_question(q, returned[:2], stored, depth=10)
    assert miss["rank"] == 11  # depth + 1: no answer returned
    none = score_question(make_question("at night"), returned, stored, depth=10)
    s = summarize([row, miss, none])
    assert s["asked"] == 3 and s["answerable"] == 2  # no night segment: not scored
    assert s["hits@1"] == 0 and s["hits@5"] == 1 and s["R@5"] == 0.5
    assert s["chance_R@1"] == pytest.approx(0.4)


def test_drive_facts_maps_stamps_to_frames() -> None:
    frames = [frame(speed=0.0 if i >= 30 else 8.0) for i in range(48)]
    captions = {"sequences": [{"seq": "a", "frame_ns": [i * 100 for i in range(48)]}],
                "facts": {"a": {"weather": "fog", "frames": frames}}}
    facts = DriveFacts(captions)
    assert facts.of_span(0, 2300) == {"fog"}
    assert facts.of_span(2400, 4700) == {"fog", "stop"}
    assert facts.of_span(10_000, 20_000) == set()
    assert len(facts.grid_windows(24, 6)) == 5
    with pytest.raises(ValueError, match="no 'facts'"):
        DriveFacts({"sequences": []})


def test_protocol_sets_are_disjoint_and_test_is_new() -> None:
    protocol.check_disjoint()
    committed = {0, 3, 5, 9, 11, 7, 17, 21}  # what the committed model was trained or tuned on
    test = {d.seed for d in protocol.TEST_DRIVES + protocol.SPREAD_DRIVES}
    assert not test & committed and protocol.PAPER_TEST.seed not in committed
    assert len(protocol.TEST_DRIVES) == len(protocol.SPREAD_DRIVES)
    assert {protocol.seed_set(s) for s in committed} == {"training", "selection"}
    assert protocol.seed_set(protocol.TEST_SEEDS[0]) == "test"
    assert protocol.seed_set(999_999) == "unassigned"
    assert protocol.DEMO_DRIVE in protocol.SELECTION_DRIVES
