"""Trajectory error of retrievals with ``evo``, as the paper measures it (docs/model.md 10.3, Q15).

Per query: when the retrieved clip is the true one, APE = RPE = 0. Otherwise the ground-truth
window (reference) and the retrieved window (estimate) are compared with timestamps rewritten to
0.0, 0.1, ..., 2.3 s and no alignment:

- APE: translation part, RMSE over the 24 poses (metres);
- RPE: rotation angle in degrees, delta 1 frame, consecutive pairs, RMSE over the 23 pairs;
- path length of the ground truth (metres). A window whose path is <= 1 mm is "stationary".

The paper fed the *relative* windows of ``relative_window(rows, "reference")`` (positions
relative to the first frame in world axes, quaternions absolute, fp16-rounded) and wrote them as
``%.6f`` text; ``paper_rows`` reproduces that round trip.

Aggregates: the paper's formulas exactly (``paper_*``, with their inconsistent denominators and
mislabelled units, Q15) and our own, labelled by what they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from evo.core import metrics, sync
from evo.core.trajectory import PoseTrajectory3D
from evo.core.units import Unit

FRAME_DT = 0.1  # s; the evaluation rewrites timestamps as 0.0, 0.1, ... (10 Hz)
STATIONARY_M = 1e-3  # the reference skips windows whose path is not longer than this
MAX_TIME_DIFF = 0.01  # s, association tolerance used by the reference


def paper_rows(rows: np.ndarray) -> np.ndarray:
    """``[T, 8]`` TUM rows with column 0 replaced by 0.0, 0.1, ... and every value rounded to 6
    decimals, as the reference's ``%.6f`` trajectory files hold them."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 8 or rows.shape[0] < 2:
        raise ValueError(f"trajectory rows must have shape [T >= 2, 8], got {rows.shape}")
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        raise ValueError(f"trajectory row {int(np.argmin(finite))} is not finite")
    out = rows.copy()
    out[:, 0] = np.arange(rows.shape[0]) * FRAME_DT
    return np.round(out, 6)


def to_trajectory(rows: np.ndarray, name: str = "") -> PoseTrajectory3D:
    """An evo trajectory from TUM rows ``[t, x, y, z, qx, qy, qz, qw]`` (after ``paper_rows``).
    evo takes w first; it normalises the quaternions when it builds the SE(3) matrices."""
    r = paper_rows(rows)
    quat_wxyz = np.roll(r[:, 4:8], 1, axis=1)
    return PoseTrajectory3D(r[:, 1:4], quat_wxyz, r[:, 0], name=name)


def path_length(rows: np.ndarray) -> float:
    """Sum of the distances between consecutive positions (metres), as evo computes it."""
    return float(to_trajectory(rows).path_length)


@dataclass
class QueryError:
    correct: bool
    stationary: bool  # ground-truth path <= STATIONARY_M
    path_m: float  # ground-truth path length
    ape_m: float  # APE translation RMSE (0 when correct)
    rpe_deg: float  # RPE rotation-angle RMSE (0 when correct)


def query_error(gt_rows: np.ndarray, pred_rows: np.ndarray, correct: bool) -> QueryError:
    """Errors of one retrieval: ground-truth window vs the retrieved window."""
    ref = to_trajectory(gt_rows, "gt")
    path = float(ref.path_length)
    stationary = not path > STATIONARY_M
    if correct:
        return QueryError(True, stationary, path, 0.0, 0.0)
    est = to_trajectory(pred_rows, "pred")
    if est.num_poses != ref.num_poses:
        raise ValueError(
            f"retrieved window has {est.num_poses} poses, ground truth {ref.num_poses}"
        )
    ref, est = sync.associate_trajectories(ref, est, max_diff=MAX_TIME_DIFF)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    rpe = metrics.RPE(
        metrics.PoseRelation.rotation_angle_deg, delta=1, delta_unit=Unit.frames, all_pairs=False
    )
    rpe.process_data((ref, est))
    return QueryError(
        False,
        stationary,
        path,
        float(ape.get_statistic(metrics.StatisticsType.rmse)),
        float(rpe.get_statistic(metrics.StatisticsType.rmse)),
    )


def query_errors(rows: np.ndarray, predictions: np.ndarray) -> list[QueryError]:
    """Errors of every query: ``rows[i]`` is clip i's window ``[T, 8]``, ``predictions[i]`` the
    index of the clip retrieved for query i (correct when it equals i)."""
    rows = np.asarray(rows)
    predictions = np.asarray(predictions, dtype=np.int64)
    if rows.ndim != 3 or rows.shape[2] != 8:
        raise ValueError(f"trajectory rows must have shape [N, T, 8], got {rows.shape}")
    if predictions.shape != (rows.shape[0],):
        raise ValueError(f"predictions must have shape [{rows.shape[0]}], got {predictions.shape}")
    bad = (predictions < 0) | (predictions >= rows.shape[0])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"prediction {predictions[i]} of query {i} is not a clip index")
    return [query_error(rows[i], rows[p], bool(p == i)) for i, p in enumerate(predictions)]


def _safe_mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")


def _safe_std(x: np.ndarray) -> float:
    return float(np.std(x)) if x.size else float("nan")


def aggregate(errors: list[QueryError]) -> dict[str, Any]:
    """The paper's figures (``paper_*``, parse_results_slam.py's formulas and labels) and ours.

    paper (Q15): lists hold the non-stationary queries only (correct ones as 0), but
    ``paper_ape_mean_m`` divides the summed APE by the count of *all* queries; the "%" figures are
    fractions (APE / path, not x100), and the "rpe (m)" figures are degrees (deg/m for "%").

    ours: ``ape_mean_m`` / ``rpe_mean_deg`` over all queries (correct = 0; stationary included,
    the errors are well defined there); ``ape_pct_path`` = 100 x mean(APE / path) and
    ``rpe_deg_per_m`` = mean(RPE / path) over the non-stationary queries (the ratio is undefined
    for a path of ~0); ``ape_pct_total_path`` = 100 x sum(APE) / sum(path) over all queries
    (parse_results.py's per-batch figure, pooled).
    """
    if not errors:
        raise ValueError("no query errors to aggregate")
    ape = np.array([e.ape_m for e in errors])
    rpe = np.array([e.rpe_deg for e in errors])
    path = np.array([e.path_m for e in errors])
    moving = ~np.array([e.stationary for e in errors])
    wrong = ~np.array([e.correct for e in errors])
    ape_l, rpe_l, path_l = ape[moving], rpe[moving], path[moving]
    total_path = float(path.sum())
    return {
        "n_queries": len(errors),
        "n_wrong": int(wrong.sum()),
        "n_stationary": int((~moving).sum()),
        # parse_results_slam.py, exactly (names say what the reference printed them as)
        "paper_ape_mean_m": float(ape_l[wrong[moving]].sum() / len(errors)),
        "paper_ape_std_m": _safe_std(ape_l),
        "paper_ape_mean_pct": _safe_mean(ape_l / path_l),
        "paper_ape_std_pct": _safe_std(ape_l / path_l),
        "paper_rpe_mean_m": _safe_mean(rpe_l),
        "paper_rpe_std_m": _safe_std(rpe_l),
        "paper_rpe_mean_pct": _safe_mean(rpe_l / path_l),
        "paper_rpe_std_pct": _safe_std(rpe_l / path_l),
        # ours, correctly labelled
        "ape_mean_m": float(ape.mean()),
        "ape_std_m": float(ape.std()),
        "ape_mean_wrong_m": _safe_mean(ape[wrong]),
        "ape_pct_path": 100.0 * _safe_mean(ape_l / path_l),
        "ape_pct_total_path": 100.0 * float(ape.sum()) / total_path if total_path > 0 else None,
        "rpe_mean_deg": float(rpe.mean()),
        "rpe_std_deg": float(rpe.std()),
        "rpe_mean_wrong_deg": _safe_mean(rpe[wrong]),
        "rpe_deg_per_m": _safe_mean(rpe_l / path_l),
        "path_mean_m": float(path.mean()),
    }


def errors_to_dicts(errors: list[QueryError]) -> list[dict[str, Any]]:
    return [asdict(e) for e in errors]
