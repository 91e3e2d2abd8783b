"""bench.path_picks: does a planner's path pick the right one of two look-alike drives?"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WINDOW, STRIDE = 24, 6  # the service's default windows


def test_drives_part_at_the_first_frame_more_than_two_metres_apart() -> None:
    from bench.path_picks import parting_frame

    a = np.zeros((10, 8))
    b = a.copy()
    b[:, 2] = 0.5 * np.arange(10)  # b drifts north by 0.5 m a frame
    assert parting_frame(a, b) == 5  # 2.5 m; 2.0 m at frame 4 is not yet apart
    assert parting_frame(a, a) is None


def test_tally_counts_picks_per_phase_and_window_starts_picked_both_ways() -> None:
    from bench.path_picks import tally

    def row(drive: str, start: int, phase: str, path: bool | None, text: bool) -> dict:
        other = "b" if drive == "a" else "a"
        return {"seed": 1, "drive": drive, "other": other, "start": start, "phase": phase,
                "path_pick": path, "text_pick": text}

    rows = [row("a", 0, "approach/turn", True, True), row("b", 0, "approach/turn", True, False),
            row("a", 6, "after", True, False), row("b", 6, "after", False, True),
            row("a", 12, "after", None, True), row("b", 12, "after", True, False)]
    counts = tally(rows)
    assert counts["all"] == {"comparisons": 5, "path_picks": 4, "text_picks": 2,
                             "window_starts": 2, "both_ways": 1, "skipped": 1}
    assert counts["approach/turn"] == {"comparisons": 2, "path_picks": 2, "text_picks": 1,
                                       "window_starts": 1, "both_ways": 1}
    assert counts["after"]["comparisons"] == 3 and counts["after"]["both_ways"] == 0


def test_quick_run_on_the_committed_model(tmp_path: Path) -> None:
    """One family of a selection seed with the committed model: the table, the JSON, and counts
    that follow from the drives' recorded parting frames."""
    from spartan_train.demo import DEFAULT_CHECKPOINT

    out = tmp_path / "paths"
    proc = subprocess.run([sys.executable, "-m", "bench.path_picks", str(DEFAULT_CHECKPOINT),
                           "--set", "selection", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "selection drives (spartan_train.protocol.PATH_PICK_DRIVES): seed 7 (4x80): 3 pairs" \
        in proc.stdout
    for label in ("all", "approach/turn", "after", "seed 7 (4x80)"):
        for measure in ("path picks", "text alone", "both ways"):
            assert f"| {label} | {measure} | " in proc.stdout
    doc = json.loads((out / "path_picks.json").read_text())
    assert doc["set"] == "selection" and doc["quick"]
    assert doc["drives"] == [{"seed": 7, "sequences": 4, "frames": 80}]
    (result,) = doc["results"]
    drive = result["drives"]["seed 7 (4x80)"]
    assert drive["segments"] == 4 * 10  # windows start every 6 frames: 10 in 80 frames
    check_pairs(out / "drives" / "seed7-4x80", drive["pairs"])
    # every start from the window that holds the parting frame to the last, both directions
    starts = sum(1 for p in drive["pairs"] for s in range(0, 80 - WINDOW + 1, STRIDE)
                 if s + WINDOW > p["parting"])
    pooled = result["pooled"]
    assert pooled["all"]["window_starts"] == starts > 0
    assert pooled["all"]["comparisons"] == 2 * starts and pooled["all"]["skipped"] == 0
    for phase in ("all", "approach/turn", "after"):
        c = pooled[phase]
        assert 0 <= c["path_picks"] <= c["comparisons"]
        assert 0 <= c["both_ways"] <= c["window_starts"]
        # one text for both drives ranks one of them first whichever is meant: exactly half
        assert 2 * c["text_picks"] == c["comparisons"]
    for key in ("comparisons", "path_picks", "text_picks"):
        assert pooled["all"][key] == pooled["approach/turn"][key] + pooled["after"][key]
    rows = [json.loads(line) for line in (out / "comparisons.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * starts and {r["checkpoint"] for r in rows} == {result["name"]}
    for row in rows:
        assert row["path_pick"] == (row["rank"] < row["other_rank"])
        assert (row["phase"] == "after") == (row["start"] >= row["parting"])


def check_pairs(root: Path, pairs: list[dict]) -> None:
    """The pairs are the family's drives that take different ways: same town and weather,
    another first turn (the family's twin, in another town, is in none)."""
    meta = {p.stem: json.loads(p.read_text()) for p in (root / "meta").glob("synth_*.json")}
    assert {(p["a"], p["b"]) for p in pairs} == {("synth_000", "synth_001"),
                                                 ("synth_000", "synth_003"),
                                                 ("synth_001", "synth_003")}
    for p in pairs:
        a, b = meta[p["a"]], meta[p["b"]]
        assert (a["town"], a["weather"]) == (b["town"], b["weather"])
        assert a["first_turn"] != b["first_turn"] and a["role"] == b["role"] == "variant"
