"""Evaluation report: results.json content, report.html and the PNG figures."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from spartan_train.evaluate.report import jsonable, thumbnail_strip, write_json, write_report
from spartan_train.evaluate.summary import evaluate_embeddings

from spartan_ros.poses import quat_from_yaw


def windows(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` relative pose windows [24, 8]: arcs of random heading and speed, some stationary."""
    rows = np.zeros((n, 24, 8))
    for i in range(n):
        yaw = rng.uniform(-math.pi, math.pi) + np.arange(24) * rng.normal(0, 0.03)
        speed = 0.0 if i % 17 == 0 else rng.uniform(1, 12)
        rows[i, :, 0] = np.arange(24) * 0.1
        rows[i, 1:, 1] = np.cumsum(0.1 * speed * np.cos(yaw[1:]))
        rows[i, 1:, 2] = np.cumsum(0.1 * speed * np.sin(yaw[1:]))
        rows[i, :, 4:] = quat_from_yaw(yaw)
    return rows


def test_evaluate_embeddings_and_report_files(tmp_path):
    rng = np.random.default_rng(0)
    n, e = 112, 24  # one gallery of 100 and a partial one of 12
    v = rng.normal(size=(n, e))
    q_pose = v + rng.normal(size=(n, e))
    q_text = v + 2.5 * rng.normal(size=(n, e))
    rows = windows(rng, n)
    groups = {"look_alike": np.where(np.arange(n) < 100, np.arange(n) // 4, -1)}
    variants = {
        "pose": evaluate_embeddings(q_pose, v, rows, groups),
        "no_pose": evaluate_embeddings(q_text, v, rows, groups),
    }
    pose = variants["pose"]
    assert pose["paper"]["t2v"]["averaged"]["gallery_sizes"] == [100, 12]
    assert pose["groups"]["look_alike"]["n_groups"] == 25
    assert pose["groups"]["look_alike"]["chance_R@1"] == pytest.approx(0.25)
    for name in ("pose", "no_pose"):
        t = variants[name]["trajectory"]["paper"]
        assert t["n_queries"] == n and t["n_stationary"] == 7
        assert t["ape_mean_m"] >= 0 and t["rpe_mean_deg"] >= 0
    # noisier queries retrieve worse
    assert pose["pooled"]["t2v"]["R@1"] > variants["no_pose"]["pooled"]["t2v"]["R@1"]

    colours = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    calls = []

    def frames_for(i: int) -> np.ndarray:
        calls.append(i)
        return np.broadcast_to(colours[i], (6, 40, 60, 3)).copy()

    results = {
        "meta": {"checkpoint": "random", "n_clips": n},
        "clips": [
            {"index": i, "name": f"s{i // 50}/{i:06d}.png", "caption": f"Clip {i} <b>&</b>."}
            for i in range(n)
        ],
        "variants": variants,
    }
    paths = write_report(tmp_path, results, frames_for, rows, n_examples=4)
    for key in ("results", "recall", "trajectories", "html"):
        assert paths[key].is_file() and paths[key].stat().st_size > 1000, key
    examples = [k for k in paths if k.startswith("example_")]
    assert len(examples) == 4
    for key in examples + ["recall", "trajectories"]:
        with Image.open(paths[key]) as img:
            assert img.size[0] > 400 and img.size[1] > 250
    assert calls  # thumbnails came from the callable

    loaded = json.loads(paths["results"].read_text())
    per_query = loaded["variants"]["pose"]["per_query"]
    top = per_query["paper_t2v"]["top"]
    # predictions are plain integers inside the query's own gallery (Q16: never a tensor repr)
    assert all(isinstance(j, int) for row in top for j in row)
    assert len(top[0]) == 10 and len(top[105]) == 10
    assert all(100 <= j < n for j in top[105])
    assert per_query["paper_t2v"]["rank"][3] >= 1
    ranks = np.array(per_query["paper_t2v"]["rank"])
    top1 = np.array([row[0] for row in top])
    assert ((ranks == 1) == (top1 == np.arange(n))).all()
    traj = per_query["paper_trajectory"]
    assert [t["correct"] for t in traj] == (ranks == 1).tolist()
    assert all(t["ape_m"] == 0 for t in traj if t["correct"])

    page = paths["html"].read_text()
    assert "recall.png" in page and "trajectories.png" in page
    assert "Clip 3 &lt;b&gt;&amp;&lt;/b&gt;." in page or "&lt;b&gt;" in page  # escaped captions
    assert "<b>&</b>" not in page
    assert "text only (no-pose ablation)" in page


def test_report_without_frames_or_trajectories(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(20, 8))
    results = {"variants": {"pose": evaluate_embeddings(v + 0.1 * rng.normal(size=v.shape), v)}}
    paths = write_report(tmp_path, results)
    assert set(paths) == {"results", "recall", "html"}
    assert "No thumbnails" in paths["html"].read_text()
    with pytest.raises(ValueError, match="no evaluated variant"):
        write_report(tmp_path, {"variants": {}})


def test_json_and_thumbnail_helpers(tmp_path):
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": (np.int64(2), None)}
    assert jsonable(obj) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [2, None]}
    path = write_json(tmp_path / "x" / "r.json", obj)
    assert json.loads(path.read_text())["c"] is None
    with pytest.raises(TypeError, match="cannot write"):
        jsonable({"t": object()})
    strip = thumbnail_strip(np.zeros((6, 48, 64, 3), np.uint8), height=24)
    assert strip.shape == (24, 6 * 32 + 5 * 2, 3)
    with pytest.raises(ValueError, match="uint8"):
        thumbnail_strip(np.zeros((6, 48, 64, 3), np.float32))
