"""The whole job end to end, as `make demo` runs it, on a small drive the model never saw.

`python -m spartan_train.demo` exports the checkpoint, generates a drive (2 sequences x 200 frames,
seed 11; training used seeds 0, 5 and 9) and writes it to a rosbag2, then runs three kinds of
processes talking over DDS (own ROS_DOMAIN_ID, loopback only): spartan_node, `spartan-bag play
--clock` and one `spartan_query` client per question. Every validation caption of the bag is
asked; with the trained checkpoint more than half of them must find their annotated span in the
top 5 (a
segment holding >= 50 % of the annotated frames, the rule of `spartan-bag eval`), and the
answers must agree with `spartan-bag eval` on the same bag.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from spartan_train.bag.evaluate import first_correct_rank, overlap_fractions
from spartan_train.bag.write import read_captions
from spartan_train.demo import DEFAULT_CHECKPOINT, FREE_TEXT, MIN_OVERLAP, TOP_K

RATE = 2.0  # playback speed: the node keeps up with room to spare on 2 busy cores
# Issue 6: "most" annotated captions find their span in the top 5. A random ranking of this
# drive's 60 segments gets ~30 % (bench.drive_retrieval's chance column).
MOST = 0.5


def checkpoint(tmp_path: Path) -> Path:
    """The trained checkpoint; a random-weight `tiny` until it is committed (the retrieval
    assertion then fails, as it should)."""
    if DEFAULT_CHECKPOINT.exists():
        return DEFAULT_CHECKPOINT
    import torch
    from spartan_train.model import build_model, save_checkpoint

    print(f"warning: {DEFAULT_CHECKPOINT} missing, using random weights", flush=True)
    torch.manual_seed(0)
    return save_checkpoint(build_model("tiny"), tmp_path / "random-tiny")


@pytest.mark.slow
@pytest.mark.timeout(450)  # the demo's own budget below, plus the checks after it
def test_demo_end_to_end(tmp_path):
    work = tmp_path / "demo"
    cmd = [sys.executable, "-m", "spartan_train.demo", "--checkpoint", str(checkpoint(tmp_path)),
           "--work", str(work), "--seed", "11", "--sequences", "2", "--frames", "200",
           "--queries", "0", "--rate", str(RATE)]
    # about 220 s on a busy 2-core machine, a minute of it the dynamo export of the model
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=390)
    print(out.stdout)
    assert out.returncode == 0, f"demo failed ({out.returncode}):\n{out.stderr[-4000:]}"
    assert "[demo 8/8] done" in out.stdout and "#1 score" in out.stdout

    doc = json.loads((work / "answers.json").read_text())
    captions = read_captions(doc["bag"])
    val = [w for w in captions["windows"] if w["split"] == "val"]
    questions = doc["questions"]
    annotated = [q for q in questions if q["window"] is not None]
    assert len(annotated) == len(val) >= 20  # every validation window was asked
    assert [q["text"] for q in questions if q["window"] is None] == list(FREE_TEXT)
    # free text is scored by the drive's recorded facts (answers.json, the summary line)
    assert all(q["facts"] for q in questions if q["window"] is None)
    assert doc["free_text_hits"]["answerable"] <= len(FREE_TEXT)
    assert "free text (scored by the drive's facts)" in out.stdout

    # The node stored every window of the drive: nothing lost in transport or ingest.
    assert doc["segments_stored"] == doc["segments_expected"] > 0

    span_ns = captions["sequences"][-1]["end_ns"]
    for q in questions:
        a = q["answer"]
        assert a["success"], a["message"]
        segs = a["segments"]
        assert [s["rank"] for s in segs] == list(range(TOP_K))
        assert all(x["score"] >= y["score"] for x, y in zip(segs, segs[1:], strict=False))
        for s in segs:
            assert captions["sequences"][0]["start_ns"] <= s["start_ns"] < s["end_ns"] <= span_ns
            assert len(s["path"]) == s["frame_count"] == 24
        if q["window"] is not None:  # the demo's rank, recomputed with spartan-bag eval's rule
            w = q["window"]
            ov = overlap_fractions(w["start_ns"], w["end_ns"], [s["start_ns"] for s in segs],
                                   [s["end_ns"] for s in segs], 100_000_000)
            assert q["rank"] == first_correct_rank(ov, MIN_OVERLAP, TOP_K)

    hits = sum(q["rank"] <= TOP_K for q in annotated)
    rate = hits / len(annotated)
    print(f"annotated val captions with their span in the top {TOP_K}: {hits} / "
          f"{len(annotated)} = {rate:.0%}")
    assert doc["annotated_in_top_k"] == pytest.approx(rate)
    assert rate > MOST, f"only {hits} of {len(annotated)} annotated captions in the top {TOP_K}"

    # The live node over DDS answers as the offline pipeline does on the same bag (spartan-bag
    # eval feeds the same memory service straight from the file): same top-1 scores, and the
    # same spans in the top 5 but for near-ties that batch composition can reorder.
    subprocess.run([sys.executable, "-m", "spartan_ros.bag", "eval", doc["bag"], "--model",
                    doc["model_dir"], "--out", str(tmp_path / "eval"), "--quiet"],
                   check=True, capture_output=True, timeout=120)
    offline = json.loads((tmp_path / "eval" / "results.json").read_text())["queries"]
    by_start = {r["start_ns"]: r for r in offline}
    for q in annotated:
        r = by_start[q["window"]["start_ns"]]
        assert q["answer"]["segments"][0]["score"] == pytest.approx(r["top"][0]["score"],
                                                                   abs=1e-3)
    offline_hits = sum(by_start[q["window"]["start_ns"]]["rank"] <= TOP_K for q in annotated)
    assert abs(hits - offline_hits) <= 1, (hits, offline_hits)

    with Image.open(work / "demo.png") as img:
        assert img.format == "PNG" and img.width >= 1000 and img.height >= 800


def test_demo_names_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    out = subprocess.run([sys.executable, "-m", "spartan_train.demo", "--checkpoint", str(missing),
                          "--work", str(tmp_path / "demo")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert f"checkpoint {missing} does not exist" in out.stderr
    assert not (tmp_path / "demo" / "drive-seed7-4x300-160x120").exists()  # stopped at step 1


def test_questions_are_spread_over_the_validation_windows():
    from spartan_train.demo import expected_segments, pick_windows

    def window(start: int, split: str = "val") -> dict:
        return {"start_ns": start * 100, "end_ns": (start + 23) * 100, "split": split,
                "caption": f"w{start}"}

    windows = [window(s) for s in (0, 2, 4, 30, 33, 60, 90, 91)] + [window(50, "train")]
    captions = {"windows": windows, "sequences": [{"frames": 200}, {"frames": 23}]}
    picked = pick_windows(captions, 4)
    assert [w["caption"] for w in picked] == ["w0", "w30", "w60", "w91"]
    assert len(pick_windows(captions, 0)) == 8  # 0: every validation window
    # windows that overlap an earlier pick give way to one that does not
    assert [w["caption"] for w in pick_windows(captions, 3)] == ["w0", "w33", "w91"]
    assert expected_segments(captions, {"window_frames": 24, "stride_frames": 6}) == 30


def test_demo_scores_free_text_by_the_drive_facts(tmp_path):
    """The demo's free-text scoring on a made-up answer: the first segment whose frames hold
    every fact of the question is the rank; --questions replaces --free-text."""
    from spartan_train.demo import DemoConfig, DemoResult, Question, free_questions, score_free
    from spartan_train.evaluate.questions import DriveFacts, make_question

    def frame(speed: float, yaw_rate: float = 0.0) -> dict:
        return {"maneuver": "straight", "speed": speed, "yaw_rate": yaw_rate, "light": None,
                "node_ahead_m": None, "in_view": []}

    frames = [frame(8.0, 0.46 if i < 24 else 0.0) for i in range(48)]  # left turn, then on
    captions = {"sequences": [{"seq": "a", "frame_ns": [i * 100 for i in range(48)]}],
                "facts": {"a": {"weather": "night", "frames": frames}}}
    q = Question(1, "turning left at night", free=make_question("turning left at night"))
    q.answer = {"success": True, "segments": [{"start_ns": 2400, "end_ns": 4700},
                                              {"start_ns": 0, "end_ns": 2300}]}
    score_free(q, DriveFacts(captions), window=24, stride=24, top_k=5)
    assert q.rank == 2 and q.answering == 1
    assert q.returned_facts == [["night"], ["night", "turn", "turn_left"]]
    result = DemoResult([q], 1, 1, tmp_path / "p.png", tmp_path / "a.json", {}, top_k=5)
    assert result.free_hits == (0, 1, 1)

    qfile = tmp_path / "q.yaml"
    qfile.write_text("- text: somewhere dark\n  facts: [night]\n")
    assert [f.text for f in free_questions(DemoConfig(questions_file=qfile))] == \
        ["somewhere dark"]
    mixed = free_questions(DemoConfig(free_text=("the gas station where we turned left",
                                                 "something else entirely")))
    assert mixed[1] == "something else entirely"  # asked, but no ground truth to score it
    assert mixed[0].facts == {"gas_station", "turn_left"}
