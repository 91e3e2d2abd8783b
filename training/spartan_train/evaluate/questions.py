"""Free-text questions with ground truth: the question's words name facts, the drive knows them.

A question ("the gas station where we turned left") is read with ``PHRASES``, a table of word
patterns and the fact each one names (``spartan_train.data.synth.facts``): here ``gas_station``
and ``turn_left``. A window of the drive answers the question when all its facts are true of it,
so a retrieved segment is correct when its frames carry every required fact, and the question is
scored like an annotated caption (rank of the first correct segment, R@k). A question no stored
segment answers is "unanswerable" on that drive: reported, not scored.

A user's list (``--questions FILE``) is YAML or JSON: a list of questions, each either a string
or a mapping with ``text`` and, optionally, ``facts`` (names from ``FACTS``) that replace what the
table reads from the words:

    - the gas station where we turned left
    - text: pulling up in the fog
      facts: [stop, fog]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spartan_train.data.synth.facts import FACTS, window_facts

# Word patterns -> fact, most specific first: a matched phrase is blanked out before the later
# patterns look, so "lane change to the left" is not also a left turn.
PHRASES: tuple[tuple[str, str], ...] = (
    (r"(lane change|chang\w* lanes?|switch\w* lanes?)( to| into)?( the)? left( lane)?",
     "lane_change_left"),
    (r"(lane change|chang\w* lanes?|switch\w* lanes?)( to| into)?( the)? right( lane)?",
     "lane_change_right"),
    (r"lane change|chang\w* lanes?|switch\w* lanes?", "lane_change"),
    (r"(turn\w*|went|going|swung) left|left turn", "turn_left"),
    (r"(turn\w*|went|going|swung) right|right turn", "turn_right"),
    (r"\bturn\w*", "turn"),
    (r"(gas|petrol|fuel|filling) station", "gas_station"),
    (r"red (traffic )?light|light (was |is )?red", "red_light"),
    (r"yellow (traffic )?light|amber light|light (was |is )?(yellow|amber)", "yellow_light"),
    (r"green (traffic )?light|light (was |is )?green", "green_light"),
    (r"traffic lights?|stop ?lights?|signals?", "traffic_light"),
    (r"\b(stop\w*|standing still|waiting|halt\w*)", "stop"),
    (r"cross(ing|walk|roads?)|intersection|junction|zebra", "crossing"),
    (r"\bnight\w*|after dark|in the dark", "night"),
    (r"\b(rain\w*|wet)\b", "rain"),
    (r"\bfog\w*|mist\w*", "fog"),
    (r"\bdusk|sunset|twilight", "dusk"),
    (r"overcast|cloudy|grey sky", "overcast"),
    (r"\b(sunny|clear sky|clear day|bright daylight)", "clear"),
)

# The built-in list: the demo's two and more of the kinds a planner asks.
DEFAULT_QUESTIONS = (
    "the gas station where we turned left",
    "stopping at a red light at night",
    "turning right at a traffic light",
    "waiting at a red light",
    "a left turn at an intersection",
    "driving past a gas station",
    "changing lanes in the rain",
    "turning left in the fog",
    "stopped at a crossing at dusk",
    "a right turn on a sunny day",
)


@dataclass(frozen=True)
class FreeQuestion:
    text: str
    facts: frozenset[str]  # every one must hold of a correct segment

    def answers(self, facts: Iterable[str]) -> bool:
        return self.facts <= set(facts)


def read_facts(text: str) -> frozenset[str]:
    """The facts ``PHRASES`` reads from a question (empty when it names none)."""
    rest = " " + re.sub(r"\s+", " ", text.lower()) + " "
    found: set[str] = set()
    for pattern, fact in PHRASES:
        rest, n = re.subn(pattern, " ", rest)
        if n:
            found.add(fact)
    # A direction makes the undirected fact redundant.
    if found & {"turn_left", "turn_right"}:
        found.discard("turn")
    if found & {"lane_change_left", "lane_change_right"}:
        found.discard("lane_change")
    if found & {"red_light", "yellow_light", "green_light"}:
        found.discard("traffic_light")
    return frozenset(found)


def make_question(text: str, facts: Sequence[str] | None = None, where: str = "") -> FreeQuestion:
    """A question from its text and, optionally, its facts (ValueError if neither gives any)."""
    text = str(text).strip()
    at = f"{where}: " if where else ""
    if not text:
        raise ValueError(f"{at}a question has empty text")
    if facts is None:
        read = read_facts(text)
        if not read:
            raise ValueError(f"{at}no known fact in {text!r}; give them with 'facts:' (one or "
                             f"more of {', '.join(FACTS)})")
        return FreeQuestion(text, read)
    unknown = sorted(set(facts) - set(FACTS))
    if unknown:
        raise ValueError(f"{at}unknown fact(s) {unknown} in {text!r}; known: {', '.join(FACTS)}")
    if not facts:
        raise ValueError(f"{at}'facts' of {text!r} is empty")
    return FreeQuestion(text, frozenset(facts))


def load_questions(path: str | Path) -> list[FreeQuestion]:
    """A user's question list (YAML or JSON, see the module docstring); ValueError if bad."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"questions file {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"questions file {path} is not YAML or JSON: {e}") from None
    if isinstance(doc, dict) and "questions" in doc:
        doc = doc["questions"]
    if not isinstance(doc, list) or not doc:
        raise ValueError(f"questions file {path}: expected a non-empty list of questions")
    out = []
    for i, item in enumerate(doc, 1):
        where = f"{path} item {i}"
        if isinstance(item, str):
            out.append(make_question(item, where=where))
        elif isinstance(item, dict) and "text" in item:
            facts = item.get("facts")
            if facts is not None and not isinstance(facts, list):
                raise ValueError(f"{where}: 'facts' must be a list of names")
            out.append(make_question(item["text"], facts, where))
        else:
            raise ValueError(f"{where}: expected a string or a mapping with 'text'")
    return out


def default_questions() -> list[FreeQuestion]:
    return [make_question(t) for t in DEFAULT_QUESTIONS]


class DriveFacts:
    """Facts of any span of a bag's drive, from the ``facts`` block of its captions.json."""

    def __init__(self, captions: dict[str, Any]) -> None:
        block = captions.get("facts")
        if not block:
            raise ValueError("the bag's captions.json has no 'facts' (write it again with "
                             "`spartan-bag write` from a generated set)")
        self.seqs = []
        for s in captions["sequences"]:
            if s["seq"] not in block:
                raise ValueError(f"captions.json: no facts for sequence {s['seq']}")
            self.seqs.append((np.asarray(s["frame_ns"], dtype=np.int64), block[s["seq"]]))

    def of_span(self, start_ns: int, end_ns: int) -> set[str]:
        """Facts of the frames stamped in ``[start_ns, end_ns]`` (the sequence holding most)."""
        best: tuple[int, np.ndarray, dict[str, Any]] | None = None
        for stamps, facts in self.seqs:
            idx = np.flatnonzero((stamps >= start_ns) & (stamps <= end_ns))
            if idx.size and (best is None or idx.size > best[0]):
                best = (idx.size, idx, facts)
        if best is None:
            return set()
        _, idx, facts = best
        return window_facts([facts["frames"][i] for i in idx], facts["weather"])


    def grid_windows(self, window: int, stride: int) -> list[set[str]]:
        """Facts of the windows a node stores (one every ``stride`` frames per sequence)."""
        out = []
        for stamps, facts in self.seqs:
            for a in range(0, len(stamps) - window + 1, stride):
                out.append(window_facts(facts["frames"][a:a + window], facts["weather"]))
        return out


def score_question(question: FreeQuestion, returned: Sequence[set[str]],
                   stored: Sequence[set[str]], depth: int) -> dict[str, Any]:
    """Rank of the first returned segment (facts per segment, best first) that answers, and how
    many stored segments would; rank ``depth + 1`` when none of the returned answers."""
    hits = [i for i, f in enumerate(returned[:depth]) if question.answers(f)]
    return {
        "text": question.text,
        "facts": sorted(question.facts),
        "rank": hits[0] + 1 if hits else depth + 1,
        "answering_segments": int(sum(question.answers(f) for f in stored)),
        "stored_segments": len(stored),
        "returned_facts": [sorted(f) for f in returned[:depth]],
    }


def summarize(scored: Sequence[dict[str, Any]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Hits over the answerable questions (those some stored segment answers)."""
    ok = [q for q in scored if q["answering_segments"] > 0]
    ranks = np.array([q["rank"] for q in ok])
    out: dict[str, Any] = {"asked": len(scored), "answerable": len(ok)}
    for k in ks:
        out[f"hits@{k}"] = int((ranks <= k).sum()) if ok else 0
        out[f"R@{k}"] = float((ranks <= k).mean()) if ok else float("nan")
    out["chance_R@1"] = (float(np.mean([q["answering_segments"] / q["stored_segments"]
                                        for q in ok])) if ok else float("nan"))
    return out
