"""Ingest without ROS: odometry interpolation, frame sampling and the sliding window."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from spartan_ros.ingest import FrameSampler, OdometryBuffer, SlidingWindow
from spartan_ros.memory import Segment, SegmentStore
from spartan_ros.poses import interpolate_pose, quat_from_yaw, quat_yaw
from spartan_ros.runtime.scoring import random_head

S = 1_000_000_000  # ns per second


# -- odometry -------------------------------------------------------------------------------


def test_odometry_linear_position_and_slerp() -> None:
    odom = OdometryBuffer(max_age_s=30.0)
    assert odom.add(0, [0.0, 0.0, 0.0], quat_from_yaw(0.0), "odom") is None
    assert odom.add(S, [10.0, -4.0, 2.0], quat_from_yaw(math.pi / 2), "odom") is None
    for frac in (0.0, 0.25, 0.5, 0.9, 1.0):
        got = odom.pose_at(int(frac * S), max_gap_s=0.5)
        assert got.ok and got.frame_id == "odom" and got.gap_s == 0.0
        assert got.row is not None
        assert got.row[0] == pytest.approx(frac)
        np.testing.assert_allclose(got.row[1:4], [10 * frac, -4 * frac, 2 * frac], atol=1e-12)
        assert quat_yaw(got.row[4:8]) == pytest.approx(frac * math.pi / 2, abs=1e-12)
        assert np.linalg.norm(got.row[4:8]) == pytest.approx(1.0)
    # The slerp midpoint of a 90 degree turn is the 45 degree rotation, exactly.
    mid = odom.pose_at(S // 2, 0.5).row
    assert mid is not None
    np.testing.assert_allclose(mid[4:8], quat_from_yaw(math.pi / 4), atol=1e-12)
    # The shorter arc is taken even when the stored signs disagree (q and -q).
    odom2 = OdometryBuffer()
    odom2.add(0, [0, 0, 0], quat_from_yaw(0.0))
    odom2.add(S, [0, 0, 0], -quat_from_yaw(math.pi / 2))
    row = odom2.pose_at(S // 2, 0.5).row
    assert row is not None and abs(quat_yaw(row[4:8]) - math.pi / 4) < 1e-12


def test_odometry_reasons() -> None:
    odom = OdometryBuffer(max_age_s=5.0)
    assert odom.pose_at(0, 0.1).reason == "no odometry yet"
    assert odom.add(0, [np.nan, 0, 0], [0, 0, 0, 1]) == "not finite"
    assert odom.add(0, [0, 0, 0], [0, 0, np.inf, 1]) == "not finite"
    assert odom.add(0, [0, 0, 0], [0, 0, 0, 0]) == "zero quaternion"
    assert len(odom) == 0 and odom.pose_at(0, 0.1).reason == "no odometry yet"
    for k in range(11):  # 10 Hz samples from 1 s to 2 s, then a hole until 3 s
        odom.add(S + k * S // 10, [k, 0, 0], [0, 0, 0, 1])
    odom.add(3 * S, [20, 0, 0], [0, 0, 0, 1])
    assert odom.counts["rejected: not finite"] == 2 and odom.counts["accepted"] == 12

    held = odom.pose_at(3 * S + 50_000_000, max_gap_s=0.1)  # just after the newest: held
    assert held.ok and held.row is not None and held.row[1] == 20 and held.gap_s == 0.05
    assert held.row[0] == pytest.approx(3.05)
    future = odom.pose_at(3 * S + 200_000_000, max_gap_s=0.1)
    assert future.reason == "future" and future.row is None and future.gap_s == pytest.approx(0.2)
    assert odom.pose_at(S - 200_000_000, 0.1).reason == "stale"  # before the oldest
    assert odom.pose_at(S - 50_000_000, 0.1).ok
    assert odom.pose_at(2 * S + 500_000_000, 0.1).reason == "stale"  # inside the 1 s hole
    near_end = odom.pose_at(2 * S + 80_000_000, 0.1)  # 80 ms after a sample: interpolated
    assert near_end.ok and near_end.row is not None
    assert near_end.row[1] == pytest.approx(10 + 10 * 0.08)
    assert odom.pose_at(int(1.5 * S), 0.1).reason is None
    assert odom.pose_at(float("nan"), 0.1).reason == "not finite"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_gap_s"):
        odom.pose_at(0, -1.0)
    with pytest.raises(ValueError, match="position"):
        odom.add(0, [0, 0], [0, 0, 0, 1])


def test_odometry_order_pruning_and_resets() -> None:
    odom = OdometryBuffer(max_age_s=2.0, jump_back_s=0.5)
    for stamp in (0, 2, 1, 4, 3):  # slightly out of order: kept sorted
        odom.add(stamp * 100_000_000, [stamp, 0, 0], [0, 0, 0, 1], "odom")
    row = odom.pose_at(150_000_000, 0.1).row
    assert row is not None and row[1] == pytest.approx(1.5)
    odom.add(200_000_000, [7, 0, 0], [0, 0, 0, 1], "odom")  # same stamp: newer wins
    assert odom.pose_at(200_000_000, 0.1).row[1] == 7  # type: ignore[index]
    for k in range(5, 40):
        odom.add(k * 100_000_000, [k, 0, 0], [0, 0, 0, 1], "odom")
    assert odom.pose_at(1_000_000_000, 0.1).reason == "stale"  # older than max_age: forgotten
    assert len(odom) == 21  # 1.9 s .. 3.9 s
    # the clock went back 3.4 s: refused once, then the next sample confirms the new clock
    assert odom.add(500_000_000, [0, 0, 0], [0, 0, 0, 1], "odom") == "stamp jump not confirmed"
    assert len(odom) == 21
    assert odom.add(510_000_000, [0, 0, 0], [0, 0, 0, 1], "odom") is None
    assert odom.counts["reset: time jumped back"] == 1 and len(odom) == 1
    odom.add(600_000_000, [0, 0, 0], [0, 0, 0, 1], "map")
    assert odom.counts["reset: frame changed"] == 1 and odom.frame_id == "map" and len(odom) == 1
    unit = odom.pose_at(600_000_000, 0.0).row
    assert unit is not None and np.linalg.norm(unit[4:8]) == pytest.approx(1.0)


# -- sampler --------------------------------------------------------------------------------


def _run(sampler: FrameSampler, stamps: np.ndarray) -> list[int]:
    return [int(s) for s in stamps if sampler.offer(int(s)).take]


def test_sampler_30hz_camera() -> None:
    n = 30 * 20
    exact = (np.arange(n) * S) // 30
    taken = _run(FrameSampler(10.0), exact)
    assert taken == exact[::3].tolist()  # every third frame exactly
    rng = np.random.default_rng(0)
    jittered = exact + rng.integers(-3_000_000, 3_000_001, size=n)
    sampler = FrameSampler(10.0)
    taken = _run(sampler, jittered)
    gaps = np.diff(taken)
    assert abs(len(taken) - 200) <= 1
    assert gaps.min() >= 60_000_000 and gaps.max() <= 140_000_000
    assert np.mean(gaps) == pytest.approx(1e8, rel=0.01)
    assert sampler.counts["taken"] == len(taken)
    assert sampler.counts["dropped: rate"] == n - len(taken)
    assert _run(FrameSampler(10.0), jittered) == taken  # deterministic


def test_sampler_slow_and_odd_rates() -> None:
    stamps = (np.arange(7 * 10) * S) // 7
    sampler = FrameSampler(10.0)
    assert _run(sampler, stamps) == stamps.tolist()  # a 7 Hz camera: every frame
    assert not any(k.startswith("reset") for k in sampler.counts)
    stamps = (np.arange(15 * 10) * S) // 15
    taken = _run(FrameSampler(10.0), stamps)
    assert np.mean(np.diff(taken)) == pytest.approx(1e8, rel=0.02)
    assert set(np.diff(taken).tolist()) <= {66_666_666, 66_666_667, 133_333_333, 133_333_334}


def test_sampler_no_burst_after_dropped_frames_and_resets() -> None:
    stamps = ((np.arange(90) * S) // 30).tolist()
    del stamps[31:40]  # camera hiccup of 0.33 s (below max_gap)
    taken = _run(FrameSampler(10.0, max_gap_s=0.5), np.array(stamps))
    assert np.diff(taken).min() >= 90_000_000  # no catch-up burst
    sampler = FrameSampler(10.0, max_gap_s=0.5)
    assert sampler.offer(10 * S).take
    assert sampler.offer(10 * S + 33_000_000).dropped == "rate"
    assert sampler.offer(10 * S + 33_000_000).dropped == "duplicate stamp"
    d = sampler.offer(5 * S)  # a jump is held until the next frame follows it
    assert not d.take and d.held and d.reset is None
    d = sampler.offer(5 * S + 10_000_000)  # it does: the held frame restarts the grid
    assert d.release == "time jumped back" and not d.take and d.dropped == "rate"
    assert sampler.offer(5 * S + 100_000_000).take  # grid restarted at 5 s
    assert sampler.offer(6 * S).held
    d = sampler.offer(6 * S + 50_000_000)
    assert d.release == "gap" and not d.take
    assert sampler.counts["reset: gap"] == 1 and sampler.counts["reset: time jumped back"] == 1
    with pytest.raises(ValueError, match="rate_hz"):
        FrameSampler(0.0)


def test_one_bad_stamp_is_dropped_and_the_stream_goes_on() -> None:
    """Stamp 0, a wrapped clock (2^31 - 1 s) or a stray late frame, alone among good frames:
    dropped with a reason, and no reset (the clip in progress is kept)."""
    good = ((np.arange(40) * S) // 10 + 1000 * S).tolist()
    for bad in (0, (2**31 - 1) * S, 999 * S, 1001 * S + 503_000_000):
        sampler = FrameSampler(10.0, max_gap_s=2.4)
        stamps = good[:20] + [bad] + good[20:]
        decisions = [sampler.offer(s) for s in stamps]
        assert [d.take for d in decisions] == [s != bad for s in stamps], bad
        assert decisions[20].held and decisions[21].discard and decisions[21].release is None
        assert all(d.reset is None for d in decisions), bad
        assert sampler.counts["dropped: stamp jump not confirmed"] == 1


def test_odometry_bad_stamp_and_huge_numbers_are_refused_without_reset() -> None:
    odom = OdometryBuffer(max_age_s=10.0)
    for k in range(10):
        assert odom.add(1000 * S + k * S // 10, [k, 0, 0], [0, 0, 0, 1], "odom") is None
    assert odom.add((2**31 - 1) * S, [0, 0, 0], [0, 0, 0, 1], "odom") == (
        "stamp jump not confirmed")
    assert odom.add(1000 * S + S, [10, 0, 0], [0, 0, 0, 1], "odom") is None
    assert len(odom) == 11 and not any(k.startswith("reset") for k in odom.counts)
    # A finite orientation whose norm overflows (1e200 squared) used to raise from the
    # normalisation; huge positions would overflow the interpolation and the window maths.
    cases = [
        ([0, 0, 0], [1e200, 0, 0, 1], "not a unit quaternion"),
        ([0, 0, 0], [1e-200, 0, 0, 0], "not a unit quaternion"),
        ([0, 0, 0], [0, 0, 0, 3.0], "not a unit quaternion"),
        ([0, 0, 0], [-1e308, 1e308, 1e308, 1e308], "not a unit quaternion"),
        ([1e30, 0, 0], [0, 0, 0, 1], "position out of range"),
        ([0, -1e300, 0], [0, 0, 0, 1], "position out of range"),
        ([0, 0, 0], [0.0, 0.0, 0.0, -0.0], "zero quaternion"),
    ]
    for position, quat, reason in cases:
        assert odom.add(1000 * S + S + 1, position, quat, "odom") == reason
    assert odom.add(1000 * S + S + 1, [0, 0, 0], [0, 0, 0, 1.05], "odom") is None  # normalised
    row = odom.pose_at(1000 * S + S + 1, 0.0).row
    assert row is not None and np.linalg.norm(row[4:8]) == pytest.approx(1.0)


# -- sliding window -------------------------------------------------------------------------


def _pose(stamp: int) -> np.ndarray:
    return np.array([stamp * 1e-9, stamp * 1e-8, 0, 0, 0, 0, 0, 1.0])


def test_window_features_are_incremental_means() -> None:
    rng = np.random.default_rng(0)
    win = SlidingWindow(window_frames=24, stride_frames=6)
    feats = rng.standard_normal((5000, 32)).astype(np.float32) * 3 + 1
    stamps = np.arange(5000) * 100_000_000
    emitted = []
    for k in range(5000):
        w = win.push(int(stamps[k]), feats[k], _pose(int(stamps[k])))
        if w is not None:
            emitted.append((k, w))
    # First window when 24 frames are in, then one every 6 frames.
    assert [k for k, _ in emitted[:3]] == [23, 29, 35]
    assert len(emitted) == 1 + (5000 - 24) // 6
    worst = 0.0
    for k, w in emitted:
        want = feats[k - 23 : k + 1].astype(np.float64).mean(axis=0)
        worst = max(worst, float(np.max(np.abs(w.video_feat - want))))
        np.testing.assert_array_equal(w.stamps_ns, stamps[k - 23 : k + 1])
        assert (w.start_ns, w.end_ns) == (stamps[k - 23], stamps[k])
        np.testing.assert_array_equal(w.poses[:, 0], stamps[k - 23 : k + 1] * 1e-9)
        assert w.video_feat.dtype == np.float32 and w.poses.shape == (24, 8)
    assert worst <= 1e-6
    assert win.counts["frames"] == 5000 and win.counts["windows"] == len(emitted)


def test_window_resets() -> None:
    rng = np.random.default_rng(1)
    win = SlidingWindow(window_frames=4, stride_frames=2, max_gap_s=1.0)
    t = 0

    def push(dt: int = 100_000_000, feat: np.ndarray | None = None):
        nonlocal t
        t += dt
        f = rng.standard_normal(8) if feat is None else feat
        return win.push(t, f, _pose(t))

    assert [push() is not None for _ in range(8)] == [False, False, False, True] + [
        False,
        True,
        False,
        True,
    ]
    assert push(dt=-500_000_000) is None  # time jumped back: empty, start again
    assert len(win) == 1 and win.counts["reset: time jumped back"] == 1
    assert [push() is not None for _ in range(3)] == [False, False, True]
    assert push(dt=2 * 10**9) is None and len(win) == 1  # gap over max_gap_s
    assert win.counts["reset: gap"] == 1
    assert push(dt=0) is None and win.counts["dropped: duplicate stamp"] == 1 and len(win) == 1
    assert push(feat=np.full(8, np.nan)) is None and len(win) == 0
    assert win.counts["dropped: not finite"] == 1
    for _ in range(3):
        push()
    w = push()
    assert w is not None  # full again after 4 clean frames; mean over exactly those
    win.reset("no pose")
    assert len(win) == 0 and win.counts["reset: no pose"] == 1
    with pytest.raises(ValueError, match="values, earlier frames"):
        win.push(t + 1, np.zeros(9), _pose(t))
    with pytest.raises(ValueError, match="stride_frames"):
        SlidingWindow(4, 5)
    with pytest.raises(ValueError, match="pose_row"):
        win.push(t + 1, np.zeros(8), np.zeros(7))


def test_pipeline_encodes_each_frame_once() -> None:
    """Camera 30 Hz + odometry 50 Hz -> sampler -> pose -> encode once -> window -> memory."""
    e = 16
    head = random_head(e, 0)
    rng = np.random.default_rng(2)
    sampler = FrameSampler(10.0)
    odom = OdometryBuffer(max_age_s=5.0)
    win = SlidingWindow(window_frames=24, stride_frames=6)
    encoded: Counter[int] = Counter()
    frame_feats: dict[int, np.ndarray] = {}
    dropped: Counter[str] = Counter()

    def encode(stamp: int) -> np.ndarray:  # stands in for the image encoder
        encoded[stamp] += 1
        frame_feats[stamp] = np.random.default_rng(stamp).standard_normal(e).astype(np.float32)
        return frame_feats[stamp]

    def truth(stamp: int) -> np.ndarray:  # a car driving a circle at 10 m/s
        a = stamp * 1e-9 * 0.2
        return np.array([50 * math.cos(a), 50 * math.sin(a), 0.0])

    odom_next = 0
    held = None
    windows = []
    samples: list[list[float]] = []
    cam = (np.arange(30 * 12) * S) // 30 + 5_000_000
    cam = np.concatenate([cam[:200], cam[200:] + 20 * S])  # the camera stops for 20 s
    for stamp in cam.tolist():
        while odom_next <= stamp + 30_000_000:  # odometry runs slightly ahead of the camera
            if not 28 * S < odom_next < 29 * S:  # and has its own outage
                yaw = odom_next * 1e-9 * 0.2 + math.pi / 2
                odom.add(odom_next, truth(odom_next), quat_from_yaw(yaw), "odom")
                samples.append([odom_next * 1e-9, *truth(odom_next), *quat_from_yaw(yaw)])
            odom_next += 20_000_000
        decision = sampler.offer(stamp)
        taken = [(held, decision.release)] if decision.release else []
        held = stamp if decision.held else None
        if decision.take:
            taken.append((stamp, decision.reset))
        for frame, reset in taken:
            if reset:
                win.reset(reset)
            pose = odom.pose_at(frame, max_gap_s=0.25)
            if not pose.ok:
                dropped[f"odometry: {pose.reason}"] += 1
                win.reset("no pose")
                continue
            assert pose.row is not None
            w = win.push(frame, encode(frame), pose.row)
            if w is not None:
                windows.append(w)
    assert max(encoded.values()) == 1  # every frame encoded once, however many windows use it
    assert len(encoded) == sampler.counts["taken"] - sum(dropped.values())
    # Live, an odometry outage shows as "future": no sample has come after the frame yet.
    assert dropped["odometry: future"] > 0 and sampler.counts["reset: gap"] == 1
    assert len(windows) >= 8
    ref = np.array(samples)
    with SegmentStore(None, "m", e, head=head) as store:
        for w in windows:
            want = np.mean([frame_feats[s] for s in w.stamps_ns.tolist()], axis=0, dtype=np.float64)
            assert np.max(np.abs(w.video_feat - want)) <= 1e-6
            # Exactly the interpolation of the odometry samples, and close to the true path
            # (the chord of a 1 s odometry hole differs from the arc by up to 0.25 m).
            np.testing.assert_allclose(w.poses, interpolate_pose(w.poses[:, 0], ref), atol=1e-6)
            for s, row in zip(w.stamps_ns.tolist(), w.poses, strict=True):
                np.testing.assert_allclose(row[1:4], truth(s), atol=0.3)
            assert np.all(np.diff(w.stamps_ns) < 150_000_000)
            store.add(
                Segment.build(
                    head,
                    w.start_ns,
                    w.end_ns,
                    "odom",
                    w.poses,
                    w.video_feat,
                    rng.standard_normal(e),
                )
            )
        hits = store.index.search(
            3, rng.standard_normal(e), near=truth(windows[0].start_ns), radius=5
        )
        assert 1 <= hits.candidates < len(windows)


def test_runtime_modules_import_without_torch_or_rclpy() -> None:
    code = (
        "import sys\n"
        "import spartan_ros.ingest, spartan_ros.memory, spartan_ros.runtime.scoring\n"
        "print(sorted(m for m in ('torch', 'rclpy') if m in sys.modules))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
