"""What is true of a window of a generated drive: the ground truth of free-text questions.

The generator knows, for every frame, what is in view and what the car does (``meta/<seq>.json``,
``frames``). A window's facts are derived from its frames with the rules of ``RULES`` below, so a
question made of facts ("the gas station where we turned left" = ``gas_station`` and
``turn_left``) has a definite set of answering windows. The facts:

- ``gas_station``, ``traffic_light``: one is in view in at least ``MIN_VIEW_FRAMES`` frames;
- ``red_light``, ``yellow_light``, ``green_light``: the light ahead shows it in at least
  ``MIN_VIEW_FRAMES`` frames;
- ``crossing``: the car comes within ``CROSSING_M`` of an intersection centre;
- ``turn_left``, ``turn_right``, ``lane_change_left``, ``lane_change_right``: the window's
  manoeuvre (the one its caption describes); ``turn``, ``lane_change``: either direction;
- ``stop``: the car stands still (< 0.3 m/s) in some frame;
- ``clear``, ``overcast``, ``dusk``, ``night``, ``fog``, ``rain``: the drive's weather.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spartan_train.data.synth.captions import classify
from spartan_train.data.synth.render import WEATHERS

FPS = 10.0
MIN_VIEW_FRAMES = 3  # frames something must be in view in (one glimpse is not "where we were")
CROSSING_M = 20.0  # metres to an intersection centre: at the crossing
STILL_MPS = 0.3  # what captions.classify calls standing still

MANEUVER_FACTS = ("turn_left", "turn_right", "lane_change_left", "lane_change_right")
FACTS = (
    "gas_station", "traffic_light", "red_light", "yellow_light", "green_light", "crossing",
    *MANEUVER_FACTS, "turn", "lane_change", "stop", *WEATHERS,
)  # fmt: skip


def frame_record(frame: dict[str, Any]) -> dict[str, Any]:
    """The part of a generator frame record (``meta/<seq>.json``) the facts need, compact."""
    return {
        "maneuver": frame["maneuver"],
        "speed": frame["speed"],
        "yaw_rate": frame["yaw_rate"],
        "light": frame["light"],
        "node_ahead_m": frame["node_ahead_m"],
        "in_view": sorted({str(item[0]) for item in frame["in_view"]}),
    }


def window_facts(frames: Sequence[dict[str, Any]], weather: str) -> set[str]:
    """The facts (names from ``FACTS``) true of a window of ``frame_record`` dicts."""
    if not frames:
        return set()
    facts = {weather} if weather in WEATHERS else set()
    for kind, fact in (("gas station", "gas_station"), ("traffic light", "traffic_light")):
        if sum(kind in f["in_view"] for f in frames) >= MIN_VIEW_FRAMES:
            facts.add(fact)
    for state in ("red", "yellow", "green"):
        if sum(f["light"] == state for f in frames) >= MIN_VIEW_FRAMES:
            facts.add(f"{state}_light")
    ahead = [f["node_ahead_m"] for f in frames if f["node_ahead_m"] is not None]
    if ahead and min(ahead) <= CROSSING_M:
        facts.add("crossing")
    speed = np.array([float(f["speed"]) for f in frames])
    if float(speed.min()) < STILL_MPS:
        facts.add("stop")
    # Heading from the recorded yaw rates (rad/s, frame i to i+1), as the generator had it.
    rates = np.array([float(f["yaw_rate"]) for f in frames[:-1]])
    yaw = np.concatenate([[0.0], np.cumsum(rates) / FPS])
    maneuver = classify(yaw, speed, [str(f["maneuver"]) for f in frames])
    if maneuver in MANEUVER_FACTS:
        facts.add(maneuver)
        facts.add(maneuver.rsplit("_", 1)[0])  # turn / lane_change
    return facts


def sequence_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """``{"weather", "frames": [frame_record...]}`` of a generator sequence record."""
    return {"weather": meta["weather"], "frames": [frame_record(f) for f in meta["frames"]]}
