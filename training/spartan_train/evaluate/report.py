"""Evaluation output: ``results.json`` plus a report a person can read (``report.html`` + PNGs).

The results dict (built by ``run.py``) looks like::

    {"meta": {...},                      # checkpoint, data, settings, timings
     "clips": [{"index", "name", "caption"}, ...],
     "variants": {"pose": <summary.evaluate_embeddings()>, "no_pose": {...}}}

Figures: recall bars (with pose vs the no-pose ablation when both are present), example queries
with thumbnail strips of the ground truth and the top-3 retrieved clips, and ground-truth vs
retrieved trajectories seen from above. Thumbnails come from ``frames_for(index)``, a callable the
caller provides (uint8 ``[K, H, W, 3]``), so this module needs no dataset.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

FramesFor = Callable[[int], np.ndarray]
VARIANT_LABELS = {"pose": "text + pose", "no_pose": "text only (no-pose ablation)"}
THUMB_HEIGHT = 72  # px per frame in the thumbnail strips


# ----------------------------------------------------------------------------- JSON


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays to Python, NaN/inf to None, dataclasses to dicts."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)  # never leave a half-written results file
    return path


# ----------------------------------------------------------------------------- figures


def thumbnail_strip(frames: np.ndarray, height: int = THUMB_HEIGHT) -> np.ndarray:
    """Frames uint8 ``[K, H, W, 3]`` side by side at ``height`` px, 2 px white between them."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [K, H, W, 3], got {frames.dtype} {frames.shape}")
    width = max(1, round(frames.shape[2] * height / frames.shape[1]))
    tiles = []
    for f in frames:
        small = Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR)
        tiles.append(np.asarray(small))
        tiles.append(np.full((height, 2, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def recall_panel(ax: Any, title: str, series: dict[str, tuple[list[float], list[float]]]) -> None:
    labels = ["R@1", "R@5", "R@10"]
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for i, (name, (values, errs)) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(pos, values, width, yerr=errs if any(errs) else None, capsize=3,
                      label=name, color=colours[i % len(colours)])
        for b, v, err in zip(bars, values, errs, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v + err + 0.015, f"{v:.2f}",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.18)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def plot_recall_bars(variants: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Bars of R@1/5/10 for each variant: paper protocol (mean +- std over galleries), the whole
    set as one gallery, and (when present) the look-alike groups."""
    panels: list[tuple[str, dict[str, tuple[list[float], list[float]]]]] = []
    first = next(iter(variants.values()))
    gsize = first["paper"]["gallery_size"]
    for direction, arrow in (("t2v", "text+pose → video"), ("v2t", "video → text+pose")):
        series = {}
        for name, v in variants.items():
            avg = v["paper"][direction]["averaged"]
            series[VARIANT_LABELS.get(name, name)] = (
                [avg[k]["mean"] for k in ("R@1", "R@5", "R@10")],
                [avg[k]["std"] for k in ("R@1", "R@5", "R@10")],
            )
        panels.append((f"{arrow}\ngalleries of {gsize}, mean ± std", series))
    series = {}
    for name, v in variants.items():
        s = v["pooled"]["t2v"]
        series[VARIANT_LABELS.get(name, name)] = ([s[k] for k in ("R@1", "R@5", "R@10")], [0] * 3)
    panels.append((f"text+pose → video\nwhole set ({first['pooled']['gallery_size']} clips)",
                   series))
    for group in first.get("groups", {}):
        series = {}
        for name, v in variants.items():
            if group in v.get("groups", {}):
                s = v["groups"][group]["t2v"]
                series[VARIANT_LABELS.get(name, name)] = (
                    [s[k] for k in ("R@1", "R@5", "R@10")], [0] * 3)
        g = first["groups"][group]
        panels.append((f"text+pose → video within '{group}' groups\n"
                       f"{g['n_groups']} groups, mean size {g['mean_group_size']:.1f}, "
                       f"chance R@1 {g['chance_R@1']:.2f}", series))
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 0.3 + 4.0 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, s) in zip(axes.flat, panels, strict=False):
        recall_panel(ax, title, s)
    for row in axes:
        row[0].set_ylabel("recall")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.3 / (0.3 + 4.0 * nrows), 1, 1))
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_example(
    path: str | Path,
    query: int,
    caption: str,
    top: Sequence[int],
    scores: Sequence[float],
    frames_for: FramesFor,
    names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """One query: its caption, the ground-truth clip's strip, then the top retrieved clips."""
    rows = [("ground truth", query, None)] + [
        (f"#{r + 1}  cos {s:.3f}", j, j == query)
        for r, (j, s) in enumerate(zip(top, scores, strict=True))
    ]
    strips = [thumbnail_strip(frames_for(j)) for _, j, _ in rows]
    width = max(s.shape[1] for s in strips)
    wrapped = textwrap.wrap(caption, 120)
    if len(wrapped) > 6:
        wrapped = wrapped[:6]
        wrapped[-1] += " …"
    head = 0.35 + 0.17 * len(wrapped)
    strip_h = 1.15
    fig = plt.figure(figsize=(max(6.0, width / 80 + 1.8), head + strip_h * len(rows)))
    fig.text(0.01, 1 - 0.12 / fig.get_figheight(), title or f"query {query}", fontsize=11,
             weight="bold", va="top")
    fig.text(0.01, 1 - 0.35 / fig.get_figheight(), "\n".join(wrapped), fontsize=8, va="top",
             family="monospace")
    for i, ((label, j, ok), strip) in enumerate(zip(rows, strips, strict=True)):
        bottom = 1 - (head + strip_h * (i + 1)) / fig.get_figheight()
        ax = fig.add_axes((0.2, bottom + 0.02, 0.79, strip_h * 0.8 / fig.get_figheight()))
        ax.imshow(strip)
        ax.set_xticks([])
        ax.set_yticks([])
        colour = "black" if ok is None else ("tab:green" if ok else "tab:red")
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3 if ok is not None else 1)
        name = names[j] if names is not None else f"clip {j}"
        mark = "" if ok is None else ("  ✓ correct" if ok else "  ✗")
        fig.text(0.01, bottom + 0.02 + strip_h * 0.4 / fig.get_figheight(),
                 f"{label}{mark}\n{name}", fontsize=8, va="center", color=colour)
    return save_figure(fig, path)


def plot_trajectories(
    path: str | Path,
    rows: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    errors: Sequence[Mapping[str, Any]] | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """Top views (x-y) of ground-truth vs retrieved windows, one panel per (query, retrieved)."""
    n = len(pairs)
    if n == 0:
        raise ValueError("no trajectory pairs to plot")
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (k, (q, p)) in zip(axes.flat, enumerate(pairs), strict=False):
        for idx, label, style in ((q, "ground truth", "-"), (p, "retrieved", "--")):
            xy = np.asarray(rows[idx])[:, 1:3]
            colour = "tab:blue" if idx == q else "tab:red"
            ax.plot(xy[:, 0], xy[:, 1], style, color=colour, lw=2, label=label)
            # start: the ground truth's as a ring, so the retrieved start (same origin) shows too
            ax.plot(xy[0, 0], xy[0, 1], "o", color=colour, ms=11 if idx == q else 5,
                    mfc="none" if idx == q else colour, mew=2)
            ax.plot(xy[-1, 0], xy[-1, 1], "s", color=colour, ms=4)  # end
            if p == q:
                break
        title = f"query {q}" + (f" ({names[q]})" if names is not None else "")
        if errors is not None:
            e = errors[k]
            title += (
                "\ncorrect: APE = RPE = 0" if e["correct"]
                else f"\nAPE {e['ape_m']:.2f} m, RPE {e['rpe_deg']:.2f}°, path {e['path_m']:.1f} m"
            )
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x (m, from start)")
        ax.set_ylabel("y (m, from start)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best", title="● start  ■ end", title_fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- selection


def pick_examples(variant: Mapping[str, Any], n: int) -> list[int]:
    """Deterministic mix of queries: about half wrong (spread over the set) then right ones."""
    ranks = np.asarray(variant["per_query"]["paper_t2v"]["rank"])
    wrong, right = np.flatnonzero(ranks > 1), np.flatnonzero(ranks == 1)
    n_wrong = min(len(wrong), max(n - len(right), (n + 1) // 2))
    chosen = [int(wrong[i]) for i in np.linspace(0, len(wrong) - 1, n_wrong).round().astype(int)]
    n_right = min(len(right), n - len(chosen))
    if n_right:
        spread = np.linspace(0, len(right) - 1, n_right).round().astype(int)
        chosen += [int(right[i]) for i in spread]
    return sorted(set(chosen))


# ----------------------------------------------------------------------------- HTML


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


def _retrieval_table(variants: Mapping[str, Any]) -> str:
    head = "<tr><th>variant</th><th>protocol</th><th>direction</th><th>R@1</th><th>R@5</th>"
    head += "<th>R@10</th><th>median rank</th><th>mean rank</th></tr>"
    lines = [head]
    for name, v in variants.items():
        label = html.escape(VARIANT_LABELS.get(name, name))
        gs = v["paper"]["gallery_size"]
        for d in ("t2v", "v2t"):
            a = v["paper"][d]["averaged"]
            cells = [f"{a[k]['mean']:.3f} ± {a[k]['std']:.3f}" for k in ("R@1", "R@5", "R@10")]
            cells += [f"{a[k]['mean']:.2f}" for k in ("median_rank", "mean_rank")]
            lines.append(f"<tr><td>{label}</td><td>paper: galleries of {gs}, averaged</td>"
                         f"<td>{d}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        for d in ("t2v", "v2t"):
            s = v["pooled"][d]
            cells = [_fmt(s[k]) for k in ("R@1", "R@5", "R@10")]
            cells += [_fmt(s[k], 1) for k in ("median_rank", "mean_rank")]
            lines.append(f"<tr><td>{label}</td><td>whole set ({v['pooled']['gallery_size']})</td>"
                         f"<td>{d}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        for g, fig in v.get("groups", {}).items():
            s = fig["t2v"]
            cells = [_fmt(s[k]) for k in ("R@1", "R@5", "R@10")]
            cells += [_fmt(s[k], 2) for k in ("median_rank", "mean_rank")]
            lines.append(f"<tr><td>{label}</td><td>within '{html.escape(g)}' groups "
                         f"(chance R@1 {fig['chance_R@1']:.2f})</td><td>t2v</td>"
                         + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            s = fig["paper_subset_t2v"]
            cells = [_fmt(s[k]) for k in ("R@1", "R@5", "R@10")]
            cells += [_fmt(s[k], 2) for k in ("median_rank", "mean_rank")]
            lines.append(f"<tr><td>{label}</td><td>'{html.escape(g)}' queries in the galleries of "
                         f"{gs}</td><td>t2v</td>" + "".join(f"<td>{c}</td>" for c in cells)
                         + "</tr>")
        lines.append(f"<tr><td>{label}</td><td>in-training (galleries of 12, pooled)</td>"
                     f"<td>t2v</td><td>{v['in_training_top1']:.3f}</td>"
                     "<td></td><td></td><td></td><td></td></tr>")
    return "<table>" + "\n".join(lines) + "</table>"


TRAJ_ROWS = [
    ("ape_mean_m", "APE mean over all queries (m)"),
    ("ape_mean_wrong_m", "APE mean over wrong retrievals (m)"),
    ("ape_pct_path", "APE, % of path length (mean over moving queries)"),
    ("ape_pct_total_path", "APE, % of total path length (ΣAPE / Σpath)"),
    ("rpe_mean_deg", "RPE rotation mean over all queries (deg)"),
    ("rpe_deg_per_m", "RPE per path length (deg/m, moving queries)"),
    ("paper_ape_mean_m", "paper: 'ape mean(m)' (Q15)"),
    ("paper_ape_std_m", "paper: 'ape std(m)'"),
    ("paper_ape_mean_pct", "paper: 'ape mean(%)' (a fraction)"),
    ("paper_rpe_mean_m", "paper: 'rpe mean(m)' (really degrees)"),
    ("paper_rpe_mean_pct", "paper: 'rpe mean(%)' (really deg/m)"),
    ("n_wrong", "wrong retrievals"),
    ("n_stationary", "stationary ground-truth windows (path ≤ 1 mm)"),
]


def _trajectory_table(variants: Mapping[str, Any]) -> str:
    cols = [(n, p) for n, v in variants.items() for p in v.get("trajectory", {})]
    if not cols:
        return "<p>No trajectory figures (no pose windows given).</p>"
    head = "<tr><th>figure</th>" + "".join(
        f"<th>{html.escape(VARIANT_LABELS.get(n, n))}<br>"
        f"{'galleries' if p == 'paper' else 'whole set'}</th>" for n, p in cols) + "</tr>"
    lines = [head]
    for key, label in TRAJ_ROWS:
        cells = "".join(f"<td>{_fmt(variants[n]['trajectory'][p].get(key))}</td>" for n, p in cols)
        lines.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return "<table>" + "\n".join(lines) + "</table>"


CSS = """body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:left}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd}
.caption{font-size:13px;background:#f8f8f8;padding:6px;border-left:3px solid #888}
.note{font-size:12px;color:#555}"""


def write_report(
    out_dir: str | Path,
    results: Mapping[str, Any],
    frames_for: FramesFor | None = None,
    rows: np.ndarray | None = None,
    n_examples: int = 4,
) -> dict[str, Path]:
    """Write ``results.json``, ``report.html`` and the PNGs into ``out_dir``; returns the paths.

    ``rows``: the pose windows the trajectory errors were computed on (for the plots).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants: Mapping[str, Any] = results["variants"]
    if not variants:
        raise ValueError("results hold no evaluated variant")
    clips = results.get("clips", [])
    names = [c["name"] for c in clips] if clips else None
    captions = [c.get("caption", "") for c in clips] if clips else None
    paths: dict[str, Path] = {"results": write_json(out / "results.json", results)}
    paths["recall"] = plot_recall_bars(variants, out / "recall.png")

    main_name = "pose" if "pose" in variants else next(iter(variants))
    main = variants[main_name]
    examples = pick_examples(main, n_examples)
    example_html = []
    if frames_for is not None:
        pq = main["per_query"]["paper_t2v"]
        for q in examples:
            p = plot_example(
                out / f"example_{q:05d}.png", q, captions[q] if captions else "",
                pq["top"][q][:3], pq["score"][q][:3], frames_for, names,
                title=f"query {q}: rank {pq['rank'][q]} in its gallery of "
                f"{main['paper']['gallery_size']} ({VARIANT_LABELS.get(main_name, main_name)})",
            )
            paths[f"example_{q}"] = p
            other = "".join(
                f"; {html.escape(VARIANT_LABELS.get(n, n))}: rank "
                f"{v['per_query']['paper_t2v']['rank'][q]}"
                for n, v in variants.items() if n != main_name
            )
            caption = html.escape(captions[q]) if captions else ""
            example_html.append(
                f"<h3>Query {q}{' – ' + html.escape(names[q]) if names else ''}</h3>"
                f"<p class='note'>rank {pq['rank'][q]}{other}</p>"
                f"<p class='caption'>{caption}</p><img src='{p.name}'>"
            )
    traj_html = ""
    if rows is not None and "paper_trajectory" in main["per_query"]:
        errs = main["per_query"]["paper_trajectory"]
        top1 = [t[0] for t in main["per_query"]["paper_t2v"]["top"]]
        wrong = [q for q in range(len(top1)) if top1[q] != q]
        picked = [q for q in examples if q in wrong]
        picked += [q for q in wrong if q not in picked][: max(0, 6 - len(picked))]
        picked += [q for q in examples if q not in picked][: max(0, 6 - len(picked))]
        if picked:
            paths["trajectories"] = plot_trajectories(
                out / "trajectories.png", rows, [(q, top1[q]) for q in picked[:6]],
                [errs[q] for q in picked[:6]], names,
            )
            traj_html = "<img src='trajectories.png'>"

    meta = results.get("meta", {})
    meta_rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(jsonable(v)))}</td></tr>"
        for k, v in meta.items()
    )
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>SPARTAN evaluation</title>
<style>{CSS}</style></head><body>
<h1>SPARTAN retrieval evaluation</h1>
<table>{meta_rows}</table>
<h2>Retrieval</h2>
<p class="note">t2v: text + pose query → video; v2t: video → text + pose. "paper" reproduces the
reference test.py: consecutive galleries in list order (the last one partial), each gallery's
recall averaged with equal weight, ± population std over galleries (docs/model.md 11, Q14; a
partial gallery smaller than k counts R@k = 1). "whole set" ranks every query against all clips.
Ties go to the lower index. The no-pose ablation feeds the same constant pose window to every
query.</p> {_retrieval_table(variants)}
<img src="recall.png">
<h2>Trajectory error of the top-1 retrieval</h2>
<p class="note">APE: translation RMSE between the ground-truth window and the retrieved window with
no alignment, timestamps rewritten to 0.0…2.3 s; RPE: rotation angle RMSE over consecutive frames,
in degrees; a correct retrieval counts 0. Windows are the reference's relative windows (position
relative to the first frame, world axes). Rows labelled "paper" reproduce parse_results_slam.py
exactly, with its denominators and unit labels (Q15).</p>
{_trajectory_table(variants)}
{traj_html}
<h2>Example queries</h2>
{''.join(example_html) or '<p>No thumbnails (no frame source given).</p>'}
</body></html>
"""
    paths["html"] = out / "report.html"
    paths["html"].write_text(page, encoding="utf-8")
    return paths
