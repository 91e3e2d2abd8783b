"""Captions for synthetic windows, written from what is in view and what the car actually does.

The style follows the real DrivingScenePTX captions: several sentences, the first one a concise
summary (it becomes the short caption: the text before the first ".", so no sentence before it
may contain a "." and numbers are always whole), then what is on the left and right, the road,
the sky and weather, and how the vehicle moves. Wording and sentence order vary (templates,
synonyms, shuffling) from a per-window random generator, so the set is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MANEUVERS = (
    "turn_left",
    "turn_right",
    "lane_change_left",
    "lane_change_right",
    "stop",
    "start",
    "stopped",
    "accelerate",
    "decelerate",
    "straight",
)


@dataclass
class Seen:
    """An object (or building) visible in a frame."""

    kind: str  # building, tree, car, street lamp, traffic light, gas station
    desc: str  # singular noun phrase ending in its noun
    colour: str
    side: str  # left, right, center
    frac: float  # share of the image it covers
    dist: float  # metres
    key: int  # same physical thing across frames (building id)


@dataclass
class Motion:
    maneuver: str
    v0: float  # m/s at the first frame
    v1: float  # m/s at the last frame
    vmean: float
    distance: float  # metres driven
    yaw_change: float  # degrees, counter-clockwise positive
    stopped_s: float  # seconds spent (nearly) standing still
    light: str | None  # state of the light ahead at the first frame, if any is near
    lane0: int  # 0 inner (left) lane, 1 outer (right) lane
    lane1: int


@dataclass
class Scene:
    style: str  # downtown, mixed, residential
    season: str
    weather: str
    node_ahead: float | None  # metres to the next intersection centre


def classify(yaw: np.ndarray, speed: np.ndarray, labels: list[str]) -> str:
    """The window's main manoeuvre from its yaw [rad], speed [m/s] and per-frame piece labels.

    Priority: turn > lane change > stop / start / waiting > speed change > straight.
    """
    dyaw = float(np.degrees(yaw[-1] - yaw[0]))
    n_turn_l = labels.count("turn_left")
    n_turn_r = labels.count("turn_right")
    if dyaw > 30 or (dyaw > 12 and n_turn_l >= 5):
        return "turn_left"
    if dyaw < -30 or (dyaw < -12 and n_turn_r >= 5):
        return "turn_right"
    if labels.count("lane_change_left") >= 8:
        return "lane_change_left"
    if labels.count("lane_change_right") >= 8:
        return "lane_change_right"
    v0, v1 = float(speed[0]), float(speed[-1])
    if float(speed.max()) < 0.3:
        return "stopped"
    if v0 > 1.0 and v1 < 0.3:
        return "stop"
    if v0 < 0.3 and v1 > 1.0:
        return "start"
    if v1 - v0 > 2.5:
        return "accelerate"
    if v1 - v0 < -2.5:
        return "decelerate"
    return "straight"


def _a(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _plural(phrase: str) -> str:
    return phrase + "es" if phrase.endswith(("s", "sh", "ch")) else phrase + "s"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _kmh(v: float) -> int:
    return int(round(v * 3.6 / 5.0) * 5)


class _Writer:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


VEHICLE = ["the vehicle", "the car", "the ego vehicle", "the camera car"]
WEATHER_PHRASE = {
    "clear": ["on a clear day", "on a sunny day", "under a clear blue sky", "in bright daylight"],
    "overcast": ["under an overcast sky", "on a cloudy day", "on a grey, overcast day"],
    "dusk": ["at dusk", "at sunset", "in the evening twilight"],
    "night": ["at night", "at nighttime", "after dark"],
    "fog": ["in thick fog", "on a foggy day", "in dense fog"],
    "rain": ["in the rain", "on a rainy day", "during a rain shower"],
}
SKY = {
    "clear": [
        "The sky is clear and blue.",
        "The sky is blue with only a few clouds.",
        "The sun is shining and the sky is bright blue.",
    ],
    "overcast": [
        "The sky is overcast and grey.",
        "Thick grey clouds cover the sky.",
        "The sky is cloudy and the light is soft and diffuse.",
    ],
    "dusk": [
        "The sky glows orange and pink near the horizon.",
        "The sun is setting and the sky turns from orange to deep blue.",
        "The street lamps are already on as the sky darkens.",
    ],
    "night": [
        "It is dark, and the street lamps and many windows are lit.",
        "The sky is black and the road is lit only by headlights and street lamps.",
        "Lit windows glow yellow in the buildings against the dark sky.",
    ],
    "fog": [
        "Fog hides everything in the distance.",
        "The fog is so thick that distant buildings fade into grey.",
        "Visibility is low because of the dense fog.",
    ],
    "rain": [
        "Rain is falling and the road surface looks wet and dark.",
        "Raindrops streak across the view and the asphalt is wet.",
        "The sky is grey and the wet road suggests steady rain.",
    ],
}
SCENE = {
    "downtown": [
        "a downtown street with tall buildings",
        "a city street lined with high-rise buildings",
        "an urban street in the city center",
    ],
    "mixed": ["a city street", "a street in a town", "an urban street with shops and buildings"],
    "residential": [
        "a residential street",
        "a quiet street in a residential area",
        "a suburban street lined with houses",
    ],
}


def _motion_clause(w: _Writer, m: Motion) -> str:
    v = w.pick(VEHICLE)
    return {
        "turn_left": w.pick(
            [
                f"as {v} turns left at an intersection",
                f"while {v} makes a left turn at the intersection",
                f"as {v} takes a left turn at a crossroads",
            ]
        ),
        "turn_right": w.pick(
            [
                f"as {v} turns right at an intersection",
                f"while {v} makes a right turn at the intersection",
                f"as {v} takes a right turn at a crossroads",
            ]
        ),
        "lane_change_left": w.pick(
            [f"as {v} changes into the left lane", f"while {v} moves over to the left lane"]
        ),
        "lane_change_right": w.pick(
            [f"as {v} changes into the right lane", f"while {v} moves over to the right lane"]
        ),
        "stop": w.pick([f"as {v} slows down and comes to a stop", f"while {v} brakes to a halt"]),
        "start": w.pick(
            [f"as {v} pulls away from a standstill", f"while {v} starts moving again after a stop"]
        ),
        "stopped": w.pick([f"while {v} waits without moving", f"while {v} stands still"]),
        "accelerate": w.pick(
            [f"as {v} speeds up along the road", f"while {v} accelerates down the street"]
        ),
        "decelerate": w.pick([f"as {v} slows down", f"while {v} gradually reduces its speed"]),
        "straight": w.pick(
            [
                f"as {v} drives straight ahead",
                f"while {v} drives straight down the road",
                f"as {v} continues straight along the street",
            ]
        ),
    }[m.maneuver]


def _motion_details(w: _Writer, m: Motion) -> list[str]:
    v = w.pick(["The vehicle", "The car", "It"])
    out = []
    k0, k1, km = _kmh(m.v0), _kmh(m.v1), _kmh(m.vmean)
    dist = int(round(m.distance))
    deg = int(round(abs(m.yaw_change) / 5) * 5)
    if m.maneuver in ("turn_left", "turn_right"):
        side = "left" if m.maneuver == "turn_left" else "right"
        out.append(
            w.pick(
                [
                    f"{v} turns {side} by about {deg} degrees over the clip at around {km} km/h.",
                    f"{v} slows for the corner and steers to the {side}, changing its heading "
                    f"by roughly {deg} degrees.",
                    f"During the {side} turn the speed stays around {km} km/h.",
                ]
            )
        )
    elif m.maneuver.startswith("lane_change"):
        side = "left" if m.maneuver.endswith("left") else "right"
        other = "right" if side == "left" else "left"
        out.append(
            w.pick(
                [
                    f"{v} moves from the {other} lane into the {side} lane at about {km} km/h.",
                    f"{v} signals and drifts smoothly across the lane marking to the {side}.",
                ]
            )
        )
    elif m.maneuver == "stop":
        why = " at a red light" if m.light in ("red", "yellow") else ""
        out.append(
            w.pick(
                [
                    f"{v} decelerates from about {k0} km/h and stops{why}.",
                    f"{v} brakes gently and comes to a complete stop{why}.",
                ]
            )
        )
    elif m.maneuver == "start":
        out.append(
            w.pick(
                [
                    f"{v} starts from rest and reaches about {k1} km/h by the end of the clip.",
                    f"After waiting, {v.lower()} accelerates away to about {k1} km/h.",
                ]
            )
        )
    elif m.maneuver == "stopped":
        why = "at a red traffic light" if m.light in ("red", "yellow") else "in its lane"
        out.append(
            w.pick(
                [
                    f"{v} remains stationary {why} for the whole clip.",
                    f"{v} is standing still {why}, and the view barely changes.",
                ]
            )
        )
    elif m.maneuver == "accelerate":
        out.append(f"{v} speeds up from about {k0} to {k1} km/h.")
    elif m.maneuver == "decelerate":
        out.append(f"{v} slows down from about {k0} to {k1} km/h.")
    else:
        out.append(
            w.pick(
                [
                    f"{v} keeps a steady speed of about {km} km/h over roughly {dist} meters.",
                    f"{v} stays in its lane and drives at around {km} km/h.",
                    f"{v} travels about {dist} meters straight ahead.",
                ]
            )
        )
    if m.maneuver not in ("stopped", "start", "stop") and w.chance(0.4):
        lane = "left" if m.lane1 == 0 else "right"
        out.append(
            w.pick(
                [
                    f"It ends the clip in the {lane} lane.",
                    f"At the end it is driving in the {lane} lane.",
                ]
            )
        )
    return out


def _group(seen: list[Seen]) -> dict[str, list[Seen]]:
    sides: dict[str, list[Seen]] = {"left": [], "right": [], "center": []}
    for s in seen:
        sides[s.side].append(s)
    return sides


def _phrases(items: list[Seen], limit: int) -> list[str]:
    """Noun phrases for the largest things, merging repeats ("two red cars", "several trees")."""
    counts: dict[str, int] = {}
    order: list[str] = []
    for s in sorted(items, key=lambda s: -s.frac):
        if s.kind == "gas station":
            continue  # gets its own sentence
        if s.desc not in counts:
            order.append(s.desc)
            counts[s.desc] = 0
        counts[s.desc] += 1
    out = []
    for desc in order[:limit]:
        n = counts[desc]
        if n == 1:
            out.append(_a(desc))
        elif n == 2:
            out.append("two " + _plural(desc))
        else:
            out.append("several " + _plural(desc))
    return out


def _side_sentence(w: _Writer, side: str, items: list[Seen]) -> str | None:
    phrases = _phrases(items, 3)
    if not phrases:
        return None
    lead = w.pick(
        [f"On the {side} side of the video", f"On the {side}", f"To the {side} of the road"]
    )
    verb = "there is" if not phrases[0].startswith(("two", "several")) else "there are"
    return f"{lead}, {verb} {_join(phrases)}."


BIG_GAS = 0.04  # share of the image a gas station must cover to be named in the summary


def _gas_sentence(w: _Writer, g: Seen, comes_later: bool) -> str:
    where = "ahead" if g.side == "center" else f"on the {g.side}"
    colour = f"{g.colour} " if g.colour else ""
    if comes_later:
        return w.pick(
            [
                f"Later in the clip, a gas station with a {colour}canopy comes into view {where}.",
                f"As the clip goes on, a gas station with fuel pumps appears {where}.",
            ]
        )
    return w.pick(
        [
            f"A gas station with a {colour}canopy and fuel pumps is visible {where}.",
            f"There is a gas station {where}, its {colour}canopy standing out.",
        ]
    )


def _summary(w: _Writer, scene: Scene, first: list[Seen], m: Motion,
             landmark: Seen | None = None) -> str:
    opener = w.pick(
        [
            "The video shows",
            "The video is a 3D rendering of",
            "This video shows",
            "The video captures",
        ]
    )
    kinds = {s.kind for s in first}
    big_gas = any(s.kind == "gas station" and s.frac > BIG_GAS for s in first)
    big_gas = big_gas or landmark is not None  # in view long enough to be what the window shows
    if big_gas:
        where = w.pick(["a street passing a gas station", "a road next to a gas station"])
    elif scene.node_ahead is not None and scene.node_ahead < 35 and w.chance(0.5):
        where = w.pick(
            ["a street approaching an intersection", "a road leading up to a crossroads"]
        )
    elif "car" in kinds and w.chance(0.3):
        where = "a street with cars parked along the side"
    else:
        where = w.pick(SCENE[scene.style])
    return f"{opener} {where} {w.pick(WEATHER_PHRASE[scene.weather])} {_motion_clause(w, m)}."


def write_caption(
    rng: np.random.Generator,
    scene: Scene,
    first: list[Seen],
    later: list[Seen],
    motion: Motion,
    max_words: int | None = None,
    landmark: Seen | None = None,
) -> str:
    """A multi-sentence caption; the first sentence (before the first ".") summarises it.

    ``max_words`` caps the length (scene sentences are dropped first); by default it is drawn
    between 55 and 120 words, about 60 to 150 CLIP tokens like the real captions.
    ``landmark`` is a gas station in view during the window (its largest view): the summary and
    a sentence of its own name it even when the first frame does not show it, and that sentence
    is never dropped for length.
    """
    w = _Writer(rng)
    if max_words is None:
        max_words = int(rng.integers(55, 121))
    summary = _summary(w, scene, first, motion, landmark)
    sides = _group(first)
    body: list[str] = []
    for side in ("left", "right"):
        s = _side_sentence(w, side, sides[side])
        if s:
            body.append(s)
    ahead = _phrases(sides["center"], 2)
    if ahead:
        body.append(
            w.pick(
                [
                    f"In the center of the video, there is {_join(ahead)}.",
                    f"Straight ahead, {_join(ahead)} can be seen.",
                ]
            )
        )
    gas = [s for s in first if s.kind == "gas station"]
    kept_always: list[str] = []
    if landmark is not None:  # named whatever the length: it is what the window is about
        kept_always.append(_gas_sentence(w, landmark, comes_later=not gas))
    elif gas:
        body.append(_gas_sentence(w, max(gas, key=lambda s: s.frac), comes_later=False))
    cars = [s for s in first if s.kind == "car"]
    if len(cars) >= 2 and w.chance(0.7):
        colours = sorted({c.colour for c in cars if c.colour})[:3]
        listed = _join([_a(c) + " one" for c in colours])
        body.append(f"Several cars are parked along the street, including {listed}.")
    road = []
    if scene.node_ahead is not None and 14 < scene.node_ahead < 45:
        road.append(
            w.pick(
                [
                    "A zebra crossing marks the intersection ahead.",
                    "There is a pedestrian crossing with white stripes ahead.",
                ]
            )
        )
    if motion.light is not None and any(s.kind == "traffic light" for s in first):
        road.append(
            w.pick(
                [
                    f"A traffic light ahead shows {motion.light}.",
                    f"The traffic light at the intersection is {motion.light}.",
                ]
            )
        )
    road.append(
        w.pick(
            [
                "The road has two lanes in each direction with a double yellow line in the middle.",
                "White dashed lines separate the lanes and a yellow line divides the directions.",
                "The asphalt road is marked with white lane lines and a yellow center line.",
            ]
        )
    )
    body.extend(road)
    sky = w.pick(SKY[scene.weather])
    if scene.season == "autumn" and any(s.kind == "tree" for s in first + later):
        body.append(
            w.pick(
                [
                    "The trees have orange and yellow leaves, suggesting autumn.",
                    "Autumn colors show in the trees along the road.",
                ]
            )
        )
    new = [s for s in later if s.frac > 0.01 and s.key not in {f.key for f in first}]
    if landmark is not None:  # already named
        new = [s for s in new if s.kind != "gas station"]
    if new:
        top = max(new, key=lambda s: s.frac)
        where = "ahead" if top.side == "center" else f"on the {top.side}"
        body.append(
            w.pick(
                [
                    f"Later in the clip, {_a(top.desc)} comes into view {where}.",
                    f"As the clip goes on, {_a(top.desc)} appears {where}.",
                ]
            )
        )
    motion_s = _motion_details(w, motion)
    order = list(range(len(body)))
    # keep the scene sentences roughly in the real captions' order but not always the same
    if w.chance(0.5) and len(order) > 2:
        a, b = sorted(w.rng.choice(len(order), 2, replace=False).tolist())
        order[a], order[b] = order[b], order[a]
    sentences = [body[i] for i in order]
    insert_at = int(w.rng.integers(0, len(sentences) + 1))
    sentences[insert_at:insert_at] = [sky]
    tail = motion_s
    if w.chance(0.25):
        tail = tail + [
            w.pick(
                [
                    "The overall atmosphere is calm and quiet.",
                    "The overall mood of the video is peaceful.",
                    "The scene appears to be a 3D rendering of a city.",
                ]
            )
        ]
    # trim scene sentences (never the summary or the motion) to stay within max_words
    words = len(summary.split()) + sum(len(s.split()) for s in kept_always + tail)
    kept = []
    for s in sentences:
        if words + len(s.split()) <= max_words:
            kept.append(s)
            words += len(s.split())
    return " ".join([summary, *kept_always, *kept, *tail])
