"""Tests for spartan_ros.poses: window conventions and quaternion helpers."""

import math

import numpy as np
import pytest

from spartan_ros.poses import (
    interpolate_pose,
    quat_conjugate,
    quat_from_axis_angle,
    quat_from_yaw,
    quat_multiply,
    quat_normalize,
    quat_rotate,
    quat_slerp,
    quat_to_matrix,
    quat_yaw,
    relative_window,
)


def random_quats(rng: np.random.Generator, n: int) -> np.ndarray:
    return quat_normalize(rng.normal(size=(n, 4)))


def drive(
    rng: np.random.Generator, T: int = 24, start=(1234.5, -87.25, 3.0), yaw0=0.7
) -> np.ndarray:
    """A curving, slightly bumpy drive at 10 Hz with a realistic absolute timestamp."""
    t = 1.7e9 + np.arange(T) * 0.1
    yaw = yaw0 + np.cumsum(rng.normal(0.02, 0.01, T))
    speed = 8.0 + rng.normal(0, 0.2, T)
    p = np.zeros((T, 3))
    p[0] = start
    for i in range(1, T):
        p[i] = p[i - 1] + 0.1 * speed[i] * np.array([math.cos(yaw[i]), math.sin(yaw[i]), 0.01])
    pitch = quat_from_axis_angle(np.array([0.0, 1.0, 0.0]), rng.normal(0, 0.02, T))
    q = quat_multiply(quat_from_yaw(yaw), pitch)
    return np.concatenate([t[:, None], p, q], axis=1)


# --- quaternion helpers -------------------------------------------------------------------------


def test_rotate_matches_matrix_and_multiply_composes():
    rng = np.random.default_rng(0)
    a, b = random_quats(rng, 50), random_quats(rng, 50)
    v = rng.normal(size=(50, 3))
    Ra, Rb = quat_to_matrix(a), quat_to_matrix(b)
    np.testing.assert_allclose(quat_rotate(a, v), np.einsum("nij,nj->ni", Ra, v), atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(a, b)), Ra @ Rb, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(Ra), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        Ra @ np.swapaxes(Ra, 1, 2), np.broadcast_to(np.eye(3), Ra.shape), atol=1e-12
    )
    identity = quat_multiply(a, quat_conjugate(a))
    np.testing.assert_allclose(identity, np.tile([0, 0, 0, 1.0], (50, 1)), atol=1e-12)


def test_known_rotations_and_yaw():
    q = quat_from_yaw(math.pi / 2)
    np.testing.assert_allclose(q, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-15)
    np.testing.assert_allclose(quat_rotate(q, np.array([1.0, 0, 0])), [0, 1, 0], atol=1e-15)
    yaws = np.linspace(-3.1, 3.1, 41)
    np.testing.assert_allclose(quat_yaw(quat_from_yaw(yaws)), yaws, atol=1e-12)
    # Yaw ignores small pitch/roll added after the heading.
    tilt = quat_from_axis_angle(np.array([1.0, 1.0, 0.0]), 0.05)
    assert abs(quat_yaw(quat_multiply(quat_from_yaw(0.3), tilt)) - 0.3) < 2e-3
    # Scale does not matter: helpers normalise.
    np.testing.assert_allclose(quat_yaw(5.0 * quat_from_yaw(1.0)), 1.0, atol=1e-12)


def test_slerp_endpoints_midpoint_and_shortest_path():
    q0 = quat_from_yaw(0.1)
    q1 = quat_from_yaw(1.3)
    np.testing.assert_allclose(quat_slerp(q0, q1, 0.0), q0, atol=1e-12)
    np.testing.assert_allclose(quat_slerp(q0, q1, 1.0), q1, atol=1e-12)
    np.testing.assert_allclose(quat_yaw(quat_slerp(q0, q1, 0.25)), 0.1 + 0.25 * 1.2, atol=1e-12)
    # -q1 is the same rotation: the interpolation must not go the long way round.
    np.testing.assert_allclose(quat_yaw(quat_slerp(q0, -q1, 0.5)), 0.7, atol=1e-12)
    # Across the +-pi seam: 170 deg -> -170 deg passes through 180 deg, not through 0.
    mid = quat_slerp(quat_from_yaw(math.radians(170)), quat_from_yaw(math.radians(-170)), 0.5)
    assert abs(abs(quat_yaw(mid)) - math.pi) < 1e-12
    # Nearly identical inputs take the linear branch and stay unit length.
    tiny = quat_slerp(q0, quat_from_yaw(0.1 + 1e-9), np.array([0.0, 0.3, 1.0]))
    np.testing.assert_allclose(np.linalg.norm(tiny, axis=-1), 1.0, atol=1e-15)
    # Broadcasts over batches.
    rng = np.random.default_rng(1)
    a, b = random_quats(rng, 7), random_quats(rng, 7)
    assert quat_slerp(a, b, np.linspace(0, 1, 7)).shape == (7, 4)


def test_helper_errors():
    with pytest.raises(ValueError, match="zero-length"):
        quat_normalize(np.zeros(4))
    with pytest.raises(ValueError, match="last dimension of 4"):
        quat_normalize(np.ones(3))
    with pytest.raises(ValueError, match="last dimension of 3"):
        quat_rotate(np.array([0, 0, 0, 1.0]), np.ones(4))
    with pytest.raises(ValueError, match="non-zero"):
        quat_from_axis_angle(np.zeros(3), 1.0)


# --- interpolate_pose -----------------------------------------------------------------------------


def test_interpolate_pose_linear_position_and_slerp():
    rows = np.array(
        [
            [10.0, 0.0, 0.0, 0.0, *quat_from_yaw(0.0)],
            [10.5, 5.0, 1.0, -2.0, *quat_from_yaw(1.0)],
            [11.0, 6.0, 1.0, -2.0, *(-quat_from_yaw(1.2))],  # sign flip on purpose
        ]
    )
    out = interpolate_pose(10.125, rows)
    assert out.shape == (8,)
    np.testing.assert_allclose(out[:4], [10.125, 1.25, 0.25, -0.5], atol=1e-12)
    np.testing.assert_allclose(quat_yaw(out[4:]), 0.25, atol=1e-12)
    many = interpolate_pose(np.array([10.0, 10.75, 11.0]), rows)
    assert many.shape == (3, 8)
    np.testing.assert_allclose(many[0], rows[0], atol=1e-12)
    np.testing.assert_allclose(many[1, 1:4], [5.5, 1.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(quat_yaw(many[1, 4:]), 1.1, atol=1e-12)
    np.testing.assert_allclose(quat_yaw(many[2, 4:]), 1.2, atol=1e-12)
    one_row = rows[:1].copy()
    one_row[0, 0] = 3.0
    np.testing.assert_allclose(interpolate_pose(3.0, one_row), one_row[0])


def test_interpolate_pose_errors():
    rows = drive(np.random.default_rng(2), T=5)
    with pytest.raises(ValueError, match="outside the pose range"):
        interpolate_pose(rows[0, 0] - 0.01, rows)
    with pytest.raises(ValueError, match="outside the pose range"):
        interpolate_pose(rows[-1, 0] + 0.01, rows)
    dup = rows.copy()
    dup[3, 0] = dup[2, 0]
    with pytest.raises(ValueError, match=r"strictly increasing \(row 3\)"):
        interpolate_pose(rows[1, 0], dup)
    with pytest.raises(ValueError, match=r"shape \[N, 8\]"):
        interpolate_pose(0.0, rows[:, :7])
    bad = rows.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        interpolate_pose(rows[1, 0], bad)


# --- relative_window ----------------------------------------------------------------------------


def test_reference_convention_matches_spec():
    rng = np.random.default_rng(3)
    w = drive(rng)
    out = relative_window(w)  # default is "reference"
    assert out.dtype == np.float32 and out.shape == (24, 8)
    # Columns 0..3 minus row 0 (in float64, the input's precision), then fp16 rounding.
    expect = w.copy()
    expect[:, :4] -= w[0, :4]
    np.testing.assert_array_equal(out, expect.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(out[0, :4], 0.0)
    # Quaternion stays absolute (only fp16-rounded).
    np.testing.assert_array_equal(out[:, 4:], w[:, 4:].astype(np.float16).astype(np.float32))
    # Every value is exactly representable in fp16 (what the reference network saw).
    np.testing.assert_array_equal(out.astype(np.float16).astype(np.float32), out)
    # Time is relative: 0.0, 0.1, ... 2.3 within fp16 precision.
    np.testing.assert_allclose(out[:, 0], np.arange(24) * 0.1, atol=2e-3)
    # Positions are world-frame differences, not rotated: the first step points along yaw.
    step = w[1, 1:3] - w[0, 1:3]
    np.testing.assert_allclose(out[1, 1:3], step, atol=5e-3)


def test_reference_convention_float32_input_subtracts_in_float32():
    w = drive(np.random.default_rng(4), start=(900.3, 70.1, 0.2)).astype(np.float32)
    w[:, 0] -= w[0, 0]  # float32 cannot hold a 1.7e9 epoch time to 0.1 s anyway
    out = relative_window(w, "reference")
    expect = w.copy()
    expect[:, :4] -= w[0, :4]
    np.testing.assert_array_equal(out, expect.astype(np.float16).astype(np.float32))


def test_reference_fp16_spacing_for_large_offsets():
    # Q4: relative positions between 64 and 128 m are quantised to 1/16 m.
    w = np.zeros((24, 8))
    w[:, 4:] = [0, 0, 0, 1.0]
    w[:, 0] = np.arange(24) * 0.1
    w[:, 1] = 100.0 + np.linspace(0.0, 90.04, 24)
    out = relative_window(w)
    assert out[-1, 1] == pytest.approx(90.0625)
    assert np.all(np.abs(out[:, 1] - (w[:, 1] - 100.0)) <= 1 / 32 + 1e-12)


def test_heading_convention_invariant_to_world_rigid_motion():
    rng = np.random.default_rng(5)
    w = drive(rng)
    base = relative_window(w, "heading")
    assert base.dtype == np.float32 and base.shape == (24, 8)
    np.testing.assert_array_equal(base[0], [0, 0, 0, 0, 0, 0, 0, 1])
    assert np.all(base[:, 7] >= 0)
    # Moving forward along the first frame's +x: the first step is mostly +x in the body frame.
    assert base[1, 1] > 0.7 and abs(base[1, 2]) < 0.2
    for k in range(5):
        g = random_quats(rng, 1)[0] if k else quat_from_yaw(2.5)
        shift = rng.uniform(-5000, 5000, 3)
        moved = w.copy()
        moved[:, 1:4] = quat_rotate(g, w[:, 1:4]) + shift
        q = quat_multiply(g, w[:, 4:8])
        moved[:, 4:8] = q * np.where(rng.random(24) < 0.5, -1.0, 1.0)[:, None]  # random signs
        moved[:, 0] += rng.uniform(-100, 100)
        np.testing.assert_allclose(relative_window(moved, "heading"), base, atol=1e-5)
    # The reference convention is not invariant (absolute quaternions): hence "heading".
    turned = w.copy()
    turned[:, 4:8] = quat_multiply(quat_from_yaw(1.0), w[:, 4:8])
    assert np.abs(relative_window(turned) - relative_window(w)).max() > 0.1


def test_heading_convention_normalises_quaternions_and_time():
    w = drive(np.random.default_rng(6))
    scaled = w.copy()
    scaled[:, 4:8] *= 3.0
    out = relative_window(scaled, "heading")
    np.testing.assert_allclose(out, relative_window(w, "heading"), atol=1e-6)
    np.testing.assert_allclose(out[:, 0], np.arange(24) * 0.1, atol=1e-5)  # no fp16 rounding
    np.testing.assert_allclose(np.linalg.norm(out[:, 4:], axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("convention", ["reference", "heading"])
def test_relative_window_errors(convention):
    w = drive(np.random.default_rng(7))
    for shape_bad in (w[:, :7], w[None], w[0], w[:0]):
        with pytest.raises(ValueError, match=r"shape \[T, 8\]"):
            relative_window(shape_bad, convention)
    for value in (np.nan, np.inf, -np.inf):
        bad = w.copy()
        bad[17, 5] = value
        with pytest.raises(ValueError, match="row 17"):
            relative_window(bad, convention)
    with pytest.raises(ValueError, match="numeric"):
        relative_window(np.full((24, 8), "a"), convention)


def test_relative_window_other_errors_and_inputs():
    w = drive(np.random.default_rng(8))
    with pytest.raises(ValueError, match="unknown pose convention"):
        relative_window(w, "body")
    far = w.copy()
    far[9, 1] += 1e6
    with pytest.raises(ValueError, match="row 9 overflows float16"):
        relative_window(far, "reference")
    zero = w.copy()
    zero[4, 4:8] = 0.0
    with pytest.raises(ValueError, match="row 4 has a zero-length quaternion"):
        relative_window(zero, "heading")
    # Integer input and lists work; the input is never modified.
    ints = np.tile(np.array([0, 1, 2, 3, 0, 0, 0, 1]), (24, 1))
    np.testing.assert_array_equal(relative_window(ints)[:, :4], 0)
    before = w.copy()
    relative_window(w.tolist(), "heading")
    relative_window(w)
    np.testing.assert_array_equal(w, before)
