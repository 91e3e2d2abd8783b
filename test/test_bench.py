"""Smoke test of the benchmark suite (`make bench`): a `--quick` run end to end, its JSON schema
and the figures that do not depend on the machine. Nothing here checks a timing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bench/ is a top-level folder beside spartan_ros/, not installed
    sys.path.insert(0, str(REPO))

from bench import engine_bench  # noqa: E402

SECTIONS = {"image", "encodes", "query", "bytes", "e2e", "realtime", "quant"}
ROW_TYPES: dict[str, type | tuple[type, ...]] = {
    "section": str,
    "measure": str,
    "value": (int, float, str, type(None)),
    "unit": str,
    "goal": str,
    "met": (bool, type(None)),
    "note": str,
}


def run_bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # `python -m` from the repository root, as the Makefile target runs it
    return subprocess.run([sys.executable, "-m", "bench.engine_bench", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    proc = run_bench("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    return {"proc": proc, "doc": doc, "md": (out / "bench.md").read_text(encoding="utf-8")}


def rows_of(doc: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {r["measure"]: r for r in doc["rows"] if r["section"] == section}


def find(rows: dict[str, dict[str, Any]], start: str) -> dict[str, Any]:
    hits = [r for m, r in rows.items() if m.startswith(start)]
    assert len(hits) == 1, (start, sorted(rows))
    return hits[0]


def test_quick_run_prints_the_table_and_progress(quick: dict[str, Any]) -> None:
    proc = quick["proc"]
    assert "| section | measure | value | goal | met? |" in proc.stdout
    assert "goals met" in proc.stdout
    assert "[bench" in proc.stderr and "section query done" in proc.stderr


def test_json_schema(quick: dict[str, Any]) -> None:
    doc = quick["doc"]
    assert doc["schema"] == "spartan_ros.bench/1"
    for key in ("created_utc", "seconds", "machine", "settings", "rows", "sections"):
        assert key in doc
    assert doc["settings"]["quick"] is True and doc["settings"]["models"] == ["tiny"]
    assert doc["machine"]["threads"] >= 1 and doc["machine"]["onnxruntime"]
    assert set(doc["sections"]) == SECTIONS
    for name, raw in doc["sections"].items():
        assert "error" not in raw, (name, raw)
        assert raw["seconds"] >= 0
    assert {r["section"] for r in doc["rows"]} == {"image tower", "encodes", "query", "bytes",
                                                   "end to end", "realtime", "quant"}  # fmt: skip
    for row in doc["rows"]:
        assert set(row) == set(ROW_TYPES)
        for key, kind in ROW_TYPES.items():
            assert isinstance(row[key], kind), (key, row)
        if isinstance(row["value"], float):
            assert math.isfinite(row["value"]), row
        if row["met"] is not None:
            assert row["goal"], row  # every verdict has its goal beside it


def test_markdown_has_every_row(quick: dict[str, Any]) -> None:
    md = quick["md"]
    assert md.startswith("# spartan_ros benchmark")
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(quick["doc"]["rows"])  # header + one line per row
    for row in quick["doc"]["rows"]:
        assert row["measure"].replace("|", "\\|") in md


def test_figures_that_do_not_depend_on_the_machine(quick: dict[str, Any]) -> None:
    doc = quick["doc"]
    enc = rows_of(doc, "encodes")
    assert find(enc, "image encodes per segment, re-encoding")["value"] == 24
    assert find(enc, "image encodes per segment, incremental")["value"] == 6
    steady = find(enc, "encode reduction, steady state")
    assert steady["value"] == pytest.approx(4.0) and steady["met"] is True
    raw = doc["sections"]["encodes"]
    assert raw["encodes_incremental"] == raw["frames"] == 72  # each frame encoded once
    # re-encoded windows give the running-mean video features of the window
    assert raw["max_abs_video_feature_difference"] < 1e-3

    size = rows_of(doc, "bytes")
    assert find(size, "RAM scoring data per segment, text queries, float32")["value"] == 4128
    assert find(size, "RAM per segment with v̂ for trajectory queries, float32")["value"] == 6176
    assert find(size, "RAM scoring data per segment, text queries, float16")["value"] == 2080
    assert find(size, "SQLite file per segment")["value"] > 4128  # features + terms + poses

    query = rows_of(doc, "query")
    for n in ("10^3", "10^4"):
        recall = find(query, f"{n} segments: float16 recall@10")["value"]
        assert 0.0 <= recall <= 1.0
        assert find(query, f"{n} segments: fast exact search p50")["value"] > 0
        assert "extrapolated" not in find(query, f"{n} segments: naive fusion p50")["note"]

    image = rows_of(doc, "image tower")
    assert find(image, "int8 vs float32 t2v R@1")["value"] == "skipped (no trained model)"
    assert find(image, "tiny: int8 cosine to float32")["value"] > 0.9
    assert doc["sections"]["image"]["models"]["tiny"]["gflop_per_image"] == pytest.approx(
        0.114067456, rel=1e-6
    )

    for precision in ("float32", "int8"):
        e2e = doc["sections"]["e2e"]["tiny"][precision]
        assert e2e["counts"]["frames encoded"] == e2e["frames"] == 48
        assert e2e["counts"]["segments stored"] == 1 + (48 - 24) // 6


def test_sections_option_runs_only_those(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert engine_bench.main(["--quick", "--sections", "bytes", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert set(doc["sections"]) == {"bytes"}
    assert "exporting" not in capsys.readouterr().err  # no model needed, none built


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sections", "image,warp"], "--sections: unknown warp; choose from image, "),
        (["--models", ","], "--models: an empty list"),
        (["--checkpoint", "ckpt"], "--checkpoint and --data go together"),
        (["--threads", "0"], "--threads and --frame-stride must be >= 1"),
    ],
)
def test_bad_arguments_are_reported(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        engine_bench.parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- drive retrieval


def test_drive_retrieval_chance_is_the_random_ranking_rate() -> None:
    from bench.drive_retrieval import chance_at

    assert chance_at([{"correct_segments": 1}], 60, 5) == pytest.approx(5 / 60)
    assert chance_at([{"correct_segments": 0}], 60, 5) == 0.0
    # c of N correct: 1 - P(none of the k picks is correct)
    want = 1 - (57 * 56 * 55) / (60 * 59 * 58)
    assert chance_at([{"correct_segments": 3}], 60, 3) == pytest.approx(want)


def test_drive_retrieval_quick_run(tmp_path: Path) -> None:
    """The committed checkpoint on the end-to-end test's drive: the table, the JSON and the
    offline evaluation's report it rests on."""
    from spartan_train.demo import DEFAULT_CHECKPOINT

    out = tmp_path / "drives"
    proc = subprocess.run([sys.executable, "-m", "bench.drive_retrieval", str(DEFAULT_CHECKPOINT),
                           "--set", "selection", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| seed 11 (2x200) | R@5 |" in proc.stdout and "| all (pooled) | R@1 |" in proc.stdout
    assert "selection drives (spartan_train.protocol): seed 11 (2x200)\n" in proc.stdout
    assert "| free text (pooled) | answered at rank 1 |" in proc.stdout
    assert "goals on the selection drives (only the test drives' figures count)" in proc.stdout
    doc = json.loads((out / "drive_retrieval.json").read_text())
    goals = {g["measure"]: g for g in doc["goals"][DEFAULT_CHECKPOINT.name]}
    r5 = goals["within-drive R@5"]
    assert r5["goal"] == 0.85 and r5["met"] == (r5["value"] >= 0.85)
    assert f"| within-drive R@5 | >= 0.85 | {r5['value']:.3f}: " in proc.stdout
    assert r5["points"] == round((r5["value"] - 0.85) * 100, 1)
    assert doc["set"] == "selection" and doc["drives"] == [{"seed": 11, "sequences": 2,
                                                             "frames": 200}]
    (result,) = doc["results"]
    drive = result["drives"]["seed 11 (2x200)"]
    assert drive["queries"] == 64 and drive["segments"] == 60  # every window of 2 x 200 frames
    for k in (1, 5, 10):
        assert 0.0 <= drive[f"chance@{k}"] <= drive[f"R@{k}"] <= 1.0  # better than random
    assert (out / "eval" / DEFAULT_CHECKPOINT.name / "seed11" / "report.html").is_file()
    free = result["free_text"]
    assert free["asked"] == 10 and 0 <= free["hits@1"] <= free["hits@5"] <= free["answerable"]
    # --reuse keeps the drive's results.json (same model, same split) instead of evaluating again
    report = out / "eval" / DEFAULT_CHECKPOINT.name / "seed11" / "report.html"
    report.unlink()
    again = subprocess.run([sys.executable, "-m", "bench.drive_retrieval", str(DEFAULT_CHECKPOINT),
                            "--set", "selection", "--quick", "--reuse", "--out", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not report.exists()  # not evaluated again
    redo = json.loads((out / "drive_retrieval.json").read_text())["results"][0]
    assert redo["pooled"] == result["pooled"] and redo["free_text"] == result["free_text"]


def test_train_layouts_speed_from_the_run_log(tmp_path: Path) -> None:
    from bench.train_layouts import steps_per_s

    log = tmp_path / "log.csv"
    log.write_text("step,seconds\n" + "".join(f"{i},{10 + 2.0 * i}\n" for i in range(1, 31)))
    assert steps_per_s(log, skip=8) == pytest.approx(0.5)
    with pytest.raises(SystemExit, match="too few steps"):
        steps_per_s(log, skip=30)


def test_drive_retrieval_spread_by_size() -> None:
    from bench.drive_retrieval import spread_by_size

    def drives(*r5: float) -> dict:
        return {"drives": {f"d{i}": {"R@5": v, "queries": 100} for i, v in enumerate(r5)}}

    rows = spread_by_size(drives(0.70, 0.80, 0.75), drives(0.60, 0.80, 0.80))
    assert [r["drives"] for r in rows] == [1, 2, 3]
    assert [round(r["abs_diff_points"], 4) for r in rows] == [10.0, 5.0, 1.6667]


def test_learning_bench_commands() -> None:
    """bench.learning's training commands for each core layout and variant, and its table."""
    from bench import learning

    args = learning.build_parser().parse_args(["--variants", "pose_reference", "no_pose"])
    assert args.layout == "torchrun" and args.report_set == ["test"] and not args.reuse
    cmd = learning.train_cmd(Path("d"), Path("o/pose_reference"), "pose_reference", args)
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m"]
    assert cmd[cmd.index("--batch-size") + 1] == "16"  # per process: the global batch is 32
    assert cmd[cmd.index("--pose-convention") + 1] == "reference"
    assert "--no-pose" not in cmd and cmd[cmd.index("--max-minutes") + 1] == "20.0"
    # look-alike pairs in every batch (chosen on the selection set), not drive groups
    assert cmd[cmd.index("--look-alike") + 1] == "2" and "--drive-group" not in cmd
    # 2 frames per clip, the cosine ending with the 20 minutes on the trainer's clock
    assert cmd[cmd.index("--frames") + 1] == "2"
    assert cmd[cmd.index("--frame-sampling") + 1] == "segments"  # they span the clip (selection)
    assert cmd[cmd.index("--schedule") + 1] == "clock" and "--schedule-steps" not in cmd
    args = learning.build_parser().parse_args(["--steps", "300"])
    cmd = learning.train_cmd(Path("d"), Path("o/pose"), "pose", args)
    assert cmd[cmd.index("--max-steps") + 1] == "300" and "--max-minutes" not in cmd
    assert cmd[cmd.index("--schedule-steps") + 1] == "300" and "--schedule" not in cmd
    args = learning.build_parser().parse_args(["--steps", "300", "--schedule-steps", "1550"])
    cmd = learning.train_cmd(Path("d"), Path("o/pose"), "pose", args)
    assert cmd[cmd.index("--schedule-steps") + 1] == "1550"
    args = learning.build_parser().parse_args(["--look-alike", "1"])
    cmd = learning.train_cmd(Path("d"), Path("o/pose"), "pose", args)
    assert "--look-alike" not in cmd  # random batches, as the reference
    assert "--pose-weight" not in cmd  # the trainer's default, SPARTAN's weight
    assert "--image-resolution" not in cmd and "--patch-size" not in cmd  # tiny's own
    assert cmd[cmd.index("--image-fit") + 1] == "squash"  # the whole frame (selection set)
    args = learning.build_parser().parse_args(["--image-resolution", "96", "--patch-size", "12",
                                               "--image-fit", "crop"])
    cmd = learning.train_cmd(Path("d"), Path("o/pose"), "pose", args)
    assert cmd[cmd.index("--image-resolution") + 1] == "96"
    assert cmd[cmd.index("--patch-size") + 1] == "12"
    assert cmd[cmd.index("--image-fit") + 1] == "crop"
    args = learning.build_parser().parse_args(["--frame-sampling", "random"])
    cmd = learning.train_cmd(Path("d"), Path("o/pose"), "pose", args)
    assert cmd[cmd.index("--frame-sampling") + 1] == "random"
    assert "--width" not in cmd and "--layers" not in cmd  # tiny's towers
    args = learning.build_parser().parse_args(["--width", "192", "--layers", "6"])
    cmd = learning.train_cmd(Path("d"), Path("o/pose"), "pose", args)
    assert cmd[cmd.index("--width") + 1] == "192" and cmd[cmd.index("--layers") + 1] == "6"
    args = learning.build_parser().parse_args(["--layout", "threads", "--own-motion", "1",
                                               "--pose-weight", "0.25"])
    cmd = learning.train_cmd(Path("d"), Path("o/no_pose"), "no_pose", args)
    assert cmd[1:3] == ["-m", "spartan_train.train.trainer"] and "--no-pose" in cmd
    assert cmd[cmd.index("--threads") + 1] == "2" and cmd[cmd.index("--batch-size") + 1] == "32"
    assert cmd[cmd.index("--own-motion") + 1] == "1.0"
    assert cmd[cmd.index("--pose-weight") + 1] == "0.25"
    assert not {"--wd", "--caption-drop", "--shift", "--lr", "--logit-scale", "--word-loss",
                "--word-sides"} & set(cmd)
    args = learning.build_parser().parse_args(["--wd", "0", "--caption-drop", "0.3",
                                               "--shift", "4", "--logit-scale", "2.659",
                                               "--word-loss", "1", "--word-sides"])
    cmd = learning.train_cmd(Path("d"), Path("o/pose"), "pose", args)
    assert cmd[cmd.index("--logit-scale") + 1] == "2.659"
    assert cmd[cmd.index("--wd") + 1] == "0.0"  # a weight decay of 0 is a value, passed on
    assert cmd[cmd.index("--caption-drop") + 1] == "0.3" and cmd[cmd.index("--shift") + 1] == "4"
    assert cmd[cmd.index("--word-loss") + 1] == "1.0" and "--word-sides" in cmd
    row = {"R@1": 0.5, "R@5": 0.8, "R@10": 0.9, "median_rank": 2.0, "n": 700,
           "look_alike_R@1": 0.4, "look_alike_ceiling": 0.8, "ape_m": 1.0, "rpe_deg": 0.1,
           "steps": 300}
    text = learning.table({"pose": row, "no_pose": {**row, "look_alike_R@1": 0.3}}, "20 min",
                          "torchrun", "test", learning.PAPER_TEST)
    assert "test set seed 211" in text and "| no (-0.100) |" in text and "(+0.100) |" in text
    assert "(clips that move the same are a draw) | 0.800 |" in text
    assert f"trained on {learning.PAPER_TRAINING.label};" in text
    text = learning.table({"pose": row}, "20 min", "torchrun", "test", learning.PAPER_TEST,
                          training=learning.DriveSpec(0, 40, 400))
    assert "trained on seed 0 (40x400);" in text


def test_learning_bench_names_the_set_it_trained_on(tmp_path) -> None:
    """--data may name another generated set than the protocol's: the report names that one."""
    from spartan_train.data.synth.generate import GenConfig, write_dataset

    from bench import learning

    write_dataset(GenConfig(out=str(tmp_path / "d"), seed=5, sequences=1, frames=40),
                  progress=False)
    assert learning.data_spec(tmp_path / "d") == learning.DriveSpec(5, 1, 40)


def test_learning_bench_reads_the_goals_from_the_default_convention() -> None:
    """With conventions side by side, the goals and the look-alike gap are read from the
    variant of the default convention, and the table says which."""
    from bench import learning

    row = {"R@1": 0.5, "R@5": 0.8, "R@10": 0.9, "median_rank": 2.0, "n": 700,
           "look_alike_R@1": 0.4, "look_alike_ceiling": 0.8, "ape_m": 1.0, "rpe_deg": 0.1,
           "steps": 300}
    rows = {"pose_reference": {**row, "look_alike_R@1": 0.9}, "pose_heading": row,
            "no_pose": {**row, "look_alike_R@1": 0.2}}
    assert learning.pose_variant(rows, "heading") == "pose_heading"
    assert learning.pose_variant(rows, "reference") == "pose_reference"
    text = learning.table(rows, "20 min", "torchrun", "selection", learning.PAPER_SELECTION,
                          "heading")
    assert "goals read from pose_heading" in text and "| yes (+0.200) |" in text
    args = learning.build_parser().parse_args(["--report-set", "selection", "test", "--reuse"])
    assert args.report_set == ["selection", "test"] and args.reuse


def test_learning_bench_within_drive_table() -> None:
    """--drives adds the node's task for each pose variant, side by side with random ranking."""
    from bench import learning

    args = learning.build_parser().parse_args(["--drives", "selection", "test"])
    assert args.drives == ["selection", "test"] and args.drives_work == "runs/drive_retrieval"
    assert learning.build_parser().parse_args([]).drives == []
    pooled = {"R@1": 0.4, "R@5": 0.7, "R@10": 0.85, "chance@1": 0.03, "chance@5": 0.14,
              "chance@10": 0.27, "queries": 2952.0}
    rows = {"pose_heading": {**pooled, "free_text": {"hits@1": 81, "answerable": 119}},
            "pose_reference": {**pooled, "R@5": 0.65,
                               "free_text": {"hits@1": 0, "answerable": 0}}}
    text = learning.drives_table(rows, "test")
    assert text.startswith("within-drive retrieval (the node's task) on the test drives: "
                           f"{len(learning.DRIVES['test'])} drives, 2952 queries")
    assert "| R@5 | 0.700 | 0.650 | 0.140 |" in text
    assert "| free text answered at rank 1 | 81 of 119 | none answerable | |" in text


def test_learning_bench_within_drive_runs_the_node_task(tmp_path: Path) -> None:
    """A trained variant's last checkpoint through bench.drive_retrieval (export, drive, the
    node's offline evaluation); the no-pose ablation is left out."""
    from spartan_train.demo import DEFAULT_CHECKPOINT
    from spartan_train.protocol import DriveSpec

    from bench import learning

    runs = {name: tmp_path / name for name in ("pose_heading", "no_pose")}
    for run_dir in runs.values():
        run_dir.mkdir()
        (run_dir / "last").symlink_to(DEFAULT_CHECKPOINT.resolve())
    rows = learning.within_drive(runs, (DriveSpec(11, 2, 200),), tmp_path / "drives",
                                 tmp_path / "reports")
    assert list(rows) == ["pose_heading"]
    row = rows["pose_heading"]
    assert row["queries"] == 64 and row["chance@5"] <= row["R@5"] <= row["R@10"] <= 1.0
    assert row["free_text"]["asked"] == 10
    report = tmp_path / "reports" / "eval" / "pose_heading-last" / "seed11"
    assert (report / "results.json").is_file()
    assert (tmp_path / "drives" / "drive-seed11-2x200-160x120" / "bag").is_dir()


def test_drive_retrieval_tallies_free_text_per_question() -> None:
    from bench.drive_retrieval import add_questions, questions_table

    tally: dict = {}
    add_questions(tally, [{"text": "a", "answering_segments": 3, "rank": 1},
                          {"text": "b", "answering_segments": 0, "rank": 11}])
    add_questions(tally, [{"text": "a", "answering_segments": 2, "rank": 4},
                          {"text": "b", "answering_segments": 5, "rank": 11}])
    assert tally == {"a": {"answerable": 2, "hits@1": 1, "hits@5": 2},
                     "b": {"answerable": 1, "hits@1": 0, "hits@5": 0}}
    result = {"name": "m", "questions": tally,
              "free_text": {"answerable": 3, "hits@1": 1, "hits@5": 2}}
    text = questions_table(result, 2)
    assert text.startswith("m: free-text questions over 2 drives\n")
    assert "| a | 2 | 1 | 2 |" in text and "| b | 1 | 0 | 0 |" in text
    assert "| all | 3 | 1 (33%) | 2 (67%) |" in text


def test_learning_bench_reuses_an_evaluation_of_the_same_checkpoint(tmp_path: Path) -> None:
    """--reuse reads an earlier spartan-eval results.json when checkpoint and data match."""
    from spartan_train.demo import DEFAULT_CHECKPOINT
    from spartan_train.model.checkpoint import sha256

    from bench import learning

    data, out = tmp_path / "data", tmp_path / "eval"
    data.mkdir()
    out.mkdir()
    figures = {"n": 3, "marker": "earlier run"}
    (out / "results.json").write_text(json.dumps({
        "meta": {"checkpoint_sha256": sha256(DEFAULT_CHECKPOINT), "data": str(data),
                 "same_motion_ceiling_R@1": {"look_group": 0.7}},
        "variants": {"pose": figures}}))
    again = learning.evaluate(DEFAULT_CHECKPOINT, data, out, False, reuse=True)
    assert again == figures | {"ceilings": {"look_group": 0.7}}  # the set's, beside the model's
    assert not learning._evaluated(DEFAULT_CHECKPOINT, tmp_path, out, "pose")  # other data
    assert not learning._evaluated(DEFAULT_CHECKPOINT, data, out, "no_pose")  # not evaluated
