"""Evaluation metrics on hand-computed cases: retrieval ranks/protocols and trajectory errors."""

import math

import numpy as np
import pytest
from spartan_train.evaluate.retrieval import (
    consecutive_galleries,
    group_protocol,
    in_training_accuracy,
    normalize,
    paper_protocol,
    pooled_protocol,
    rank_in_galleries,
    subset_summary,
    summarize,
)
from spartan_train.evaluate.trajectory import (
    aggregate,
    paper_rows,
    path_length,
    query_error,
    query_errors,
)

from spartan_ros.poses import quat_from_yaw

# ----------------------------------------------------------------------------- retrieval


def unit(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a)])


def test_ranks_of_a_known_3x3_similarity():
    # videos at 0, 90, 180 degrees; queries at 10, 170 and 80 degrees (built from the same two
    # numbers so that mirrored dot products tie exactly). Ranks by hand (t2v):
    # q0 (10)  -> v0 best                         -> rank 1
    # q1 (170) -> v2 (10 away), then v1 (80)      -> rank 2
    # q2 (80)  -> v1 (10), v0 (80), v2 (100)      -> rank 3
    a, b = math.cos(math.radians(10)), math.sin(math.radians(10))
    v = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = np.array([[a, b], [-a, b], [b, a]])
    t2v, v2t = rank_in_galleries(q, v, np.zeros(3, dtype=int), top_k=3)
    assert t2v.ranks.tolist() == [1, 2, 3]
    assert t2v.top[:, 0].tolist() == [0, 2, 1]
    assert t2v.top[2].tolist() == [1, 0, 2]
    np.testing.assert_allclose(t2v.scores[0, 0], a)
    # v2t: v0 -> q0 first: rank 1. v1 -> q2 (10 away), then q0 and q1 tie at 80 away: the lower
    # index q0 goes first, so the target q1 is 3rd. v2 -> q1 (10), then its target q2: rank 2.
    assert v2t.ranks.tolist() == [1, 3, 2]
    assert v2t.top[1].tolist() == [2, 0, 1]
    s = summarize(t2v.ranks)
    assert s["R@1"] == pytest.approx(1 / 3)
    assert s["R@5"] == 1.0 and s["median_rank"] == 2.0 and s["mean_rank"] == 2.0 and s["n"] == 3


def test_ties_go_to_the_first_index_like_argmax():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # three identical videos
    q = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    t2v, _ = rank_in_galleries(q, v, np.zeros(3, dtype=int))
    assert t2v.ranks.tolist() == [1, 2, 3]
    assert t2v.top[:, 0].tolist() == [0, 0, 0]  # argmax picks index 0 for every query
    assert (t2v.top[:, 3:] == -1).all()  # gallery smaller than top_k


def make_embeddings(n: int, hits: set, seed: int = 0):
    """Orthonormal videos; query i equals video i for i in ``hits``, otherwise it leans towards
    the next video of its gallery of 100 (the previous one at a gallery's end), so its target
    ranks exactly 2nd (every other video scores 0)."""
    rng = np.random.default_rng(seed)
    v = np.linalg.qr(rng.normal(size=(n + 8, n)))[0].T  # [n, n + 8], orthonormal rows
    q = v.copy()
    for i in range(n):
        if i not in hits:
            j = i + 1 if (i + 1) // 100 == i // 100 and i + 1 < n else i - 1
            q[i] = v[i] + 2.0 * v[j]
    return q, v


def test_paper_protocol_averages_galleries_with_equal_weight_including_the_partial_one():
    n = 205  # galleries of 100, 100 and a partial one of 5 (Q14)
    hits = set(range(0, 50)) | set(range(100, 190)) | {200, 201, 202, 203, 204}
    q, v = make_embeddings(n, hits)
    figures, t2v, v2t = paper_protocol(q, v, gallery_size=100)
    assert figures["n_galleries"] == 3
    avg = figures["t2v"]["averaged"]
    assert avg["gallery_sizes"] == [100, 100, 5]
    per = [0.5, 0.9, 1.0]
    assert avg["R@1"]["per_gallery"] == pytest.approx(per)
    assert avg["R@1"]["mean"] == pytest.approx(np.mean(per))
    assert avg["R@1"]["std"] == pytest.approx(np.std(per))  # population std
    # misses rank 2nd, so R@5 = 1 everywhere
    assert avg["R@5"]["per_gallery"] == [1.0, 1.0, 1.0]
    # the pooled variant weighs queries, not galleries
    assert figures["t2v"]["pooled"]["R@1"] == pytest.approx(145 / 205)
    # predictions are global indices inside the query's own gallery
    assert t2v.top[60, 0] == 61 and t2v.top[202, 0] == 202
    assert set(t2v.top[200, :5].tolist()) == {200, 201, 202, 203, 204}
    assert (t2v.top[200, 5:] == -1).all()
    assert v2t.gallery.tolist() == consecutive_galleries(n, 100).tolist()


def test_partial_gallery_smaller_than_k_counts_as_recall_one():
    rng = np.random.default_rng(1)
    q, v = rng.normal(size=(103, 8)), rng.normal(size=(103, 8))
    figures, t2v, _ = paper_protocol(q, v, gallery_size=100)
    last = figures["t2v"]["averaged"]
    assert last["gallery_sizes"] == [100, 3]
    assert last["R@5"]["per_gallery"][1] == 1.0 and last["R@10"]["per_gallery"][1] == 1.0
    assert (t2v.ranks[100:] <= 3).all()


def test_pooled_and_in_training_protocols():
    n = 30
    q, v = make_embeddings(n, hits=set(range(0, n, 2)))
    figures, t2v, _ = pooled_protocol(q, v)
    # misses point at the next video (in a gallery of 30 only the last points backwards)
    assert figures["t2v"]["R@1"] == pytest.approx(0.5)
    assert figures["t2v"]["R@5"] == 1.0
    assert figures["gallery_size"] == 30
    # galleries of 12 in file order: the misses at 11 and 23 lean towards 12 and 24, which now
    # sit in another gallery, so they become hits: (15 + 2) / 30
    assert in_training_accuracy(q, v, batch=12) == pytest.approx(17 / 30)


def test_group_protocol_and_subset():
    # 2 look-alike groups of 3 and one singleton; query 1 points at video 0 (same group), query 4
    # at video 0 (other group: within its own group it is then ranked by similarity only)
    rng = np.random.default_rng(3)
    v = normalize(rng.normal(size=(7, 16)))
    q = v.copy()
    q[1] = v[0]
    groups = np.array([0, 0, 0, 1, 1, 1, 2])
    figures, t2v, _ = group_protocol(q, v, groups)
    assert figures["n_groups"] == 2  # the singleton is left out
    assert figures["n_queries"] == 6
    assert figures["chance_R@1"] == pytest.approx(1 / 3)
    assert t2v.ranks[1] == 2 and t2v.ranks[6] == 0
    assert figures["t2v"]["R@1"] == pytest.approx(5 / 6)
    assert set(t2v.top[4, :3].tolist()) == {3, 4, 5}  # gallery = own group only
    # mask: only group 0 in play
    figures, t2v, _ = group_protocol(q, v, groups, mask=groups == 0)
    assert figures["n_queries"] == 3 and figures["t2v"]["R@1"] == pytest.approx(2 / 3)
    # subset of the standard gallery
    _, pooled, _ = pooled_protocol(q, v)
    assert subset_summary(pooled, groups == 0)["R@1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no group"):
        group_protocol(q, v, np.arange(7))


def test_retrieval_bad_input_is_a_clear_error():
    q = np.ones((3, 4))
    with pytest.raises(ValueError, match="same shape"):
        rank_in_galleries(q, np.ones((2, 4)), np.zeros(3))
    bad = q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1 is not finite"):
        pooled_protocol(bad, q)
    zero = q.copy()
    zero[2] = 0
    with pytest.raises(ValueError, match="row 2 is all zeros"):
        pooled_protocol(q, zero)
    with pytest.raises(ValueError, match="gallery size"):
        paper_protocol(q, q, gallery_size=0)


# ----------------------------------------------------------------------------- trajectories


def straight(T=24, speed=10.0, yaw=0.0, offset=(0.0, 0.0, 0.0), yaw_rate=0.0):
    """TUM rows of a straight drive along x at ``speed`` m/s (10 Hz); heading may turn."""
    rows = np.zeros((T, 8))
    rows[:, 0] = 100.0 + 0.1 * np.arange(T)  # absolute times: the evaluation rewrites them
    rows[:, 1] = 0.1 * speed * np.arange(T) + offset[0]
    rows[:, 2] = offset[1]
    rows[:, 3] = offset[2]
    rows[:, 4:8] = quat_from_yaw(yaw + yaw_rate * np.arange(T))
    return rows


def test_paper_rows_rewrites_time_and_rounds_like_the_text_files():
    rows = straight()
    rows[3, 1] = 1.23456789
    out = paper_rows(rows)
    np.testing.assert_allclose(out[:, 0], np.arange(24) * 0.1)
    assert out[3, 1] == 1.234568
    with pytest.raises(ValueError, match="row 5 is not finite"):
        bad = rows.copy()
        bad[5, 7] = np.inf
        paper_rows(bad)
    with pytest.raises(ValueError, match="shape"):
        paper_rows(rows[:, :7])


def test_ape_of_a_translated_line_is_the_offset():
    gt = straight()
    pred = straight(offset=(0.0, 3.0, 4.0))  # 5 m off at every pose
    err = query_error(gt, pred, correct=False)
    assert err.ape_m == pytest.approx(5.0, abs=1e-6)
    assert err.rpe_deg == pytest.approx(0.0, abs=1e-6)
    assert err.path_m == pytest.approx(23.0, abs=1e-5)  # 23 steps of 1 m
    assert not err.correct and not err.stationary


def test_ape_has_no_alignment_and_rpe_sees_a_known_yaw_rate():
    gt = straight()
    # same path but turning 2 deg per frame: RPE = 2 deg on each of the 23 pairs, APE = 0
    turning = straight(yaw_rate=math.radians(2.0))
    err = query_error(gt, turning, correct=False)
    assert err.ape_m == pytest.approx(0.0, abs=1e-6)
    assert err.rpe_deg == pytest.approx(2.0, abs=1e-3)
    # a constant heading offset changes no relative rotation: RPE 0
    assert query_error(gt, straight(yaw=0.5), False).rpe_deg == pytest.approx(0.0, abs=1e-4)
    # a line at a different speed: errors grow linearly 0..23*0.5, APE = RMSE of them
    slow = straight(speed=5.0)
    expected = math.sqrt(np.mean((0.5 * np.arange(24)) ** 2))
    assert query_error(gt, slow, False).ape_m == pytest.approx(expected, rel=1e-5)


def test_correct_retrieval_scores_zero_and_stationary_windows():
    gt = straight()
    err = query_error(gt, straight(offset=(9.0, 9.0, 9.0)), correct=True)
    assert err.ape_m == 0.0 and err.rpe_deg == 0.0 and err.path_m == pytest.approx(23.0)
    still = straight(speed=0.0)
    assert path_length(still) == 0.0
    assert query_error(still, gt, correct=False).stationary


def test_aggregate_paper_formulas_and_ours():
    # clips: 0 moving, 1 moving (5 m off clip 0), 2 stationary, 3 moving and retrieved correctly
    rows = np.stack([
        straight(),  # path 23 m
        straight(offset=(0.0, 3.0, 4.0)),
        straight(speed=0.0),
        straight(speed=5.0, yaw_rate=math.radians(2.0)),  # path 11.5 m
    ])
    predictions = np.array([1, 0, 0, 3])
    errors = query_errors(rows, predictions)
    assert [e.correct for e in errors] == [False, False, False, True]
    assert [e.stationary for e in errors] == [False, False, True, False]
    a = aggregate(errors)
    ape2 = errors[2].ape_m  # stationary query's APE: counted by ours, skipped by the paper
    rpe2 = errors[2].rpe_deg
    assert ape2 > 0
    assert a["n_queries"] == 4 and a["n_wrong"] == 3 and a["n_stationary"] == 1
    # paper: sum of APE over wrong non-stationary / all 4 queries
    assert a["paper_ape_mean_m"] == pytest.approx(10.0 / 4)
    assert a["paper_ape_std_m"] == pytest.approx(np.std([5.0, 5.0, 0.0]))
    assert a["paper_ape_mean_pct"] == pytest.approx(np.mean([5 / 23, 5 / 23, 0.0]), rel=1e-5)
    assert a["paper_rpe_mean_m"] == pytest.approx(0.0, abs=1e-4)  # degrees, despite the label
    # ours
    assert a["ape_mean_m"] == pytest.approx((10.0 + ape2) / 4)
    assert a["ape_mean_wrong_m"] == pytest.approx((10.0 + ape2) / 3)
    assert a["ape_pct_path"] == pytest.approx(100 * np.mean([5 / 23, 5 / 23, 0.0]), rel=1e-5)
    assert a["ape_pct_total_path"] == pytest.approx(100 * (10 + ape2) / (23 + 23 + 0 + 11.5))
    assert a["rpe_mean_deg"] == pytest.approx(rpe2 / 4, abs=1e-4)
    with pytest.raises(ValueError, match="not a clip index"):
        query_errors(rows, np.array([1, 0, 7, 3]))
    with pytest.raises(ValueError, match="no query errors"):
        aggregate([])


# ----------------------------------------------------------------------------- spartan-eval


def make_dataset(root, n_seq=2, n_frames=60, step=5):
    """A small set in the DrivingScenePTX layout: 2 sequences, windows every 5 frames (16 clips),
    plus a synthetic-style meta/windows.jsonl with look-alike group ids."""
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    lines, meta = [], []
    for s in range(n_seq):
        seq = f"carla_{s + 1:02d}"
        (root / "images" / seq).mkdir(parents=True)
        base = rng.integers(0, 256, 3)
        for f in range(n_frames):
            img = np.zeros((48, 80, 3), np.uint8)
            img[:] = base
            img[:, (f * 3) % 80 : (f * 3) % 80 + 6] = 255
            Image.fromarray(img).save(root / "images" / seq / f"{f:06d}.png")
        yaw = rng.uniform(-3, 3) + np.cumsum(np.full(n_frames, 0.02 * (s + 1)))
        poses = np.zeros((n_frames, 8))
        poses[:, 0] = 1000 + 0.1 * np.arange(n_frames)
        poses[:, 1] = 50 + np.cumsum(0.8 * np.cos(yaw))
        poses[:, 2] = -20 + np.cumsum(0.8 * np.sin(yaw))
        poses[:, 4:] = quat_from_yaw(yaw)
        (root / "poses").mkdir(exist_ok=True)
        np.save(root / "poses" / f"{seq}_poses.npy", poses)
        for start in range(0, n_frames - 24, step):
            lines.append(f"{seq}/{start:06d}.png *** The video shows road {s} at frame {start}. "
                         "It is sunny.\n")
            meta.append({"seq": seq, "start": start, "look_group": f"L{start // 10}",
                         "motion_group": "straight" if s == 0 else "left"})
    (root / "config").mkdir()
    (root / "config" / "val.txt").write_text("".join(lines))
    (root / "meta").mkdir()
    (root / "meta" / "windows.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from spartan_train.model import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("eval")
    make_dataset(root / "data")
    save_checkpoint(build_model("tiny"), root / "ckpt")
    return root


def test_spartan_eval_end_to_end(tiny_setup, capsys):
    import json

    from spartan_train.evaluate.run import main

    out = tiny_setup / "out"
    code = main([
        "--checkpoint", str(tiny_setup / "ckpt"), "--data", str(tiny_setup / "data"),
        "--gallery", "10", "--out", str(out), "--ablation", "--batch-size", "4",
        "--no-progress", "--examples", "3", "--frame-stride", "4",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "t2v galleries of 10" in printed and "no_pose" in printed
    for name in ("results.json", "report.html", "recall.png", "trajectories.png"):
        assert (out / name).stat().st_size > 1000, name
    assert len(list(out.glob("example_*.png"))) == 3
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["n_clips"] == 16
    assert results["meta"]["frames_per_clip"] == 6  # offsets 0, 4, ..., 20
    assert results["meta"]["groups"] == {"look_group": 16, "motion_group": 16}
    # the look-alike windows here lie on different roads: no two move the same, no draw
    assert results["meta"]["same_motion_ceiling_R@1"] == {"look_group": 1.0}
    for name in ("pose", "no_pose"):
        v = results["variants"][name]
        assert v["paper"]["t2v"]["averaged"]["gallery_sizes"] == [10, 6]
        for d in ("t2v", "v2t"):
            for k in ("R@1", "R@5", "R@10"):
                assert 0.0 <= v["paper"][d]["averaged"][k]["mean"] <= 1.0
                assert 0.0 <= v["pooled"][d][k] <= 1.0
        assert v["paper"]["t2v"]["averaged"]["R@10"]["mean"] == 1.0  # galleries of <= 10
        assert 0.0 <= v["in_training_top1"] <= 1.0
        t = v["trajectory"]["paper"]
        assert t["n_queries"] == 16 and t["ape_mean_m"] >= 0 and t["rpe_mean_deg"] >= 0
        assert v["groups"]["look_group"]["n_groups"] == 4  # starts // 10, both sequences
        assert v["groups"]["motion_group"]["n_groups"] == 2
    assert results["clips"][3]["name"] == "carla_01/000015.png"


def test_same_motion_ceiling_counts_clips_that_move_the_same_as_a_draw():
    from spartan_train.evaluate.summary import same_motion_ceiling

    t = np.arange(24, dtype=float)
    straight = np.stack([t, 0 * t, 0 * t], axis=1)  # 1 m per frame along x
    left = np.stack([t, 0.05 * t**2, 0 * t], axis=1)  # parts from it, 29 m off at the end
    nudged = straight + np.array([0.0, 0.3, 0.0])  # the same drive, 0.3 m to the side
    positions = np.stack([straight, nudged, left, straight, left])
    ids = np.array([0, 0, 0, -1, 3])
    # group 0: the two straight ones are a 1-in-2 draw, the left one is told apart
    assert same_motion_ceiling(ids, positions) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert same_motion_ceiling(ids, positions, tol_m=0.2) == 1.0
    assert same_motion_ceiling(np.array([0, 1, 2, -1, -1]), positions) is None  # no group of 2


def test_queries_are_encoded_in_the_paper_batches(tiny_setup):
    """Reference mode: a query's embedding depends on its batch (Q1), so encode_queries must use
    the gallery chunks; the constant no-pose window stays finite (an all-zero one gives NaN)."""
    import torch
    from spartan_train.data import DrivingDataset
    from spartan_train.evaluate.run import encode_queries
    from spartan_train.model import load_checkpoint
    from spartan_train.train.data import still_poses

    from spartan_ros.tokenizer import tokenize

    model = load_checkpoint(tiny_setup / "ckpt")
    assert model.mode == "reference"
    ds = DrivingDataset(tiny_setup / "data", "config/val.txt")
    captions = [e.caption for e in ds.entries]
    poses = np.stack([ds.load_poses(i) for i in range(len(ds))])
    q = encode_queries(model, captions, poses, 10, ("pose", "no_pose"), progress=False)
    with torch.no_grad():
        tokens = torch.from_numpy(tokenize(captions))
        expect = model.encode_text(tokens[10:], torch.from_numpy(poses[10:])).numpy()
        whole = model.encode_text(tokens, torch.from_numpy(poses)).numpy()
        blank = torch.from_numpy(still_poses(4, 24, "reference"))
        expect_blank = model.encode_text(tokens[:4], blank).numpy()
    np.testing.assert_allclose(q["pose"][10:], expect, atol=1e-5)
    assert np.abs(q["pose"][10:] - whole[10:]).max() > 1e-4  # the batch does matter here
    np.testing.assert_allclose(q["no_pose"][:4], expect_blank, atol=1e-5)
    assert np.isfinite(q["no_pose"]).all()


def test_spartan_eval_errors_are_one_line(tiny_setup, tmp_path, capsys):
    from spartan_train.evaluate.run import main

    code = main(["--checkpoint", str(tmp_path / "missing"), "--data", str(tiny_setup / "data"),
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert "spartan-eval: error:" in capsys.readouterr().err
    code = main(["--checkpoint", str(tiny_setup / "ckpt"), "--data", str(tiny_setup / "data"),
                 "--list", "config/nope.txt", "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert "nope.txt" in capsys.readouterr().err
