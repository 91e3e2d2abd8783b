"""Fleet memory benchmark (`make bench-fleet`): Milvus Lite vs the in-RAM exact scan.

For each size N (default 10⁵; pass --sizes 100000,1000000 for the full run) it stores N random
segments (E = 512, clustered video features: places seen again, random motion) in a Milvus Lite
collection and in the node's in-RAM scoring index, then asks the same text queries of both:

  - insert rate into Milvus (upserts of 1000 rows, then a flush), seconds per 10⁵;
  - query latency p50/p99, Milvus (probe + bound + range search + exact re-score) and the scan,
    without filter and with a time window of the newest half;
  - segments scored exactly per Milvus query (the scan scores all N);
  - recall@10 of Milvus against the scan (the method is exact: it must be 1.0);
  - disk per segment (the Milvus Lite data directory) and RAM per segment (process RSS growth
    while Milvus Lite holds the collection; the scan's arrays).

scripts/env.sh python -m bench.fleet --out bench/results/fleet    # 10⁵: ~20 min, ~3 GB RSS
scripts/env.sh python -m bench.fleet --sizes 1000000 --max-insert-s 2400 --max-rss-gib 16 \
    --out bench/results/fleet-1e6   # 10⁶ needs ~30 GB (23 KB per segment in Milvus Lite + the
                                    # scan's 6 KB): stop at 40 min or 16 GiB, measure what is in
scripts/env.sh python -m bench.fleet --sizes 300 --embed-dim 64 --queries 3  # smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Row, build_document, machine_info, markdown_table, write_outputs
from spartan_ros.memory.milvus_store import MilvusSegmentStore, segment_record
from spartan_ros.memory.store import Segment
from spartan_ros.runtime.scoring import (
    FusionHead,
    ScoreIndex,
    SegmentTerms,
    random_head,
    segment_terms_batch,
)

T0 = 1_700_000_000_000_000_000
BATCH = 1000


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Fleet:
    """N random segments, generated batch by batch (the same every run for a seed)."""

    def __init__(self, n: int, embed_dim: int, seed: int) -> None:
        self.n, self.e, self.seed = n, embed_dim, seed
        self.head: FusionHead = random_head(embed_dim, seed)
        rng = np.random.default_rng(seed)
        self.centres = rng.standard_normal((max(n // 50, 8), embed_dim)).astype(np.float32)

    def batches(self) -> Any:
        rng = np.random.default_rng(self.seed + 1)
        e = self.e
        for lo in range(0, self.n, BATCH):
            m = min(BATCH, self.n - lo)
            which = rng.integers(len(self.centres), size=m)
            video = self.centres[which] + 0.7 * rng.standard_normal((m, e), dtype=np.float32)
            pose = rng.standard_normal((m, e), dtype=np.float32)
            terms = segment_terms_batch(self.head, video, pose, dtype=np.float32)
            starts = T0 + (lo + np.arange(m, dtype=np.int64)) * 600_000_000
            paths = np.cumsum(rng.normal(0, 1.5, size=(m, 24, 2)), axis=1) + rng.uniform(
                -5000, 5000, size=(m, 1, 2))
            yield lo, video, pose, terms, starts, paths

    def queries(self, count: int) -> list[np.ndarray]:
        """Text features resembling stored places (realistic top scores well above 0)."""
        rng = np.random.default_rng(self.seed + 2)
        out = []
        for _ in range(count):
            c = self.centres[rng.integers(len(self.centres))]
            c = c / np.linalg.norm(c)
            out.append((self.head.w_text.T @ c * 40.0 + rng.standard_normal(self.e))
                       .astype(np.float32))
        return out


def _segments(lo: int, video: np.ndarray, pose: np.ndarray, terms: Any, starts: np.ndarray,
              paths: np.ndarray) -> list[Segment]:
    out = []
    for i in range(video.shape[0]):
        poses = np.zeros((24, 8))
        poses[:, 0] = starts[i] * 1e-9 + 0.1 * np.arange(24)
        poses[:, 1:3] = paths[i]
        poses[:, 7] = 1.0
        st = SegmentTerms(terms.ag[i], float(terms.bg[i, 0]), float(terms.bg[i, 1]),
                          terms.video_unit[i])
        out.append(Segment(lo + i + 1, int(starts[i]), int(starts[i]) + 2_300_000_000, "map",
                           poses, video[i], pose[i], st))
    return out


def run_size(n: int, embed_dim: int, queries: int, seed: int, workdir: Path, log: Any,
             max_rss: float = float("inf"), max_insert_s: float = float("inf"),
             ) -> tuple[list[Row], dict[str, Any]]:
    """Store n segments (fewer if the process's RSS reaches max_rss bytes or the inserts take
    max_insert_s seconds: the rows then name the count reached) and ask both stores the same
    queries."""
    target = n
    fleet = Fleet(n, embed_dim, seed)
    index = ScoreIndex(embed_dim, fleet.head, capacity=n)
    data = workdir / f"fleet-{n}.db"
    shutil.rmtree(data, ignore_errors=True)
    store = MilvusSegmentStore(str(data), "bench", embed_dim, head=fleet.head, vehicle_id="car")
    rss0 = rss_bytes()  # Milvus Lite started: what grows from here is the data
    insert_s = 0.0
    stopped = ""
    began = time.perf_counter()
    from tqdm import tqdm

    # The insert rate and RSS at every tenth of the run: does Milvus Lite slow down as it fills?
    trace: list[dict[str, float]] = []
    every = max(n // 10, BATCH)
    with tqdm(total=target, unit="seg", desc=f"insert {target:,}", file=sys.stderr) as bar:
        for lo, video, pose, terms, starts, paths in fleet.batches():
            segs = _segments(lo, video, pose, terms, starts, paths)
            records = [segment_record(s, "car", int(s.id or 0)) for s in segs]
            t0 = time.perf_counter()
            store.upsert(records)
            insert_s += time.perf_counter() - t0
            ids = np.arange(lo + 1, lo + 1 + len(segs), dtype=np.int64)
            index.extend(ids, starts, starts + 2_300_000_000, terms)
            bar.update(len(segs))
            done = lo + len(segs)
            rss = rss_bytes()
            out_of_time = time.perf_counter() - began >= max_insert_s
            if done % every < BATCH or done == target or rss >= max_rss or out_of_time:
                trace.append({"segments": done, "insert_s": insert_s, "rss_bytes": rss})
                bar.set_postfix(rss=f"{rss / 2**30:.1f}GiB",
                                rate=f"{done / max(insert_s, 1e-9):.0f}/s")
            if rss >= max_rss or (out_of_time and done < target):
                why = (f"RSS {rss / 2**30:.1f} GiB reached the limit" if rss >= max_rss
                       else f"the inserts took {max_insert_s:.0f} s")
                log(f"{why} at {done:,} segments: stopping the inserts there")
                stopped = why
                n = done
                break
    t0 = time.perf_counter()
    store.flush()
    flush_s = time.perf_counter() - t0
    rss_milvus = rss_bytes() - rss0 - n * index.bytes_per_segment()
    disk = dir_bytes(data)

    mid = T0 + (n // 2) * 600_000_000
    raw: dict[str, Any] = {"n": n, "target_n": target, "insert_s": insert_s, "flush_s": flush_s,
                           "disk_bytes": disk, "rss_growth_bytes": rss_milvus,
                           "insert_trace": trace, "stopped": stopped}
    rows = [
        Row(f"N={n:,}", "Milvus Lite insert rate", n / max(insert_s + flush_s, 1e-9), "seg/s",
            note=f"upserts of {BATCH} + flush ({flush_s:.1f} s)" + (
                f"; {target:,} asked, stopped: {stopped}" if n < target else "")),
    ]
    for label, kw in (("no filter", {}), ("time window, newest half", {"since_ns": mid})):
        lat_m, lat_s, scored, hits = [], [], [], []
        bar = tqdm(fleet.queries(queries), desc=f"query {label}", file=sys.stderr)
        for t in bar:
            t0 = time.perf_counter()
            res = store.search(10, t, **kw)  # type: ignore[arg-type]
            lat_m.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            exact = index.search(10, t, **kw)  # type: ignore[arg-type]
            lat_s.append(time.perf_counter() - t0)
            got = {int(f.segment.id or 0) for f in res.found}
            hits.append(len(got & set(exact.ids.tolist())) / max(len(exact.ids), 1))
            scored.append(res.candidates)
            bar.set_postfix(milvus=f"{lat_m[-1]:.2f}s", scan=f"{lat_s[-1] * 1e3:.0f}ms")
        raw[label] = {"milvus_s": lat_m, "scan_s": lat_s, "scored": scored, "recall": hits}
        pm, ps = np.percentile(lat_m, [50, 99]), np.percentile(lat_s, [50, 99])
        recall = float(np.mean(hits))
        rows += [
            Row(f"N={n:,} {label}", "query p50, Milvus Lite (exact)", 1e3 * pm[0], "ms"),
            Row(f"N={n:,} {label}", "query p99, Milvus Lite (exact)", 1e3 * pm[1], "ms"),
            Row(f"N={n:,} {label}", "query p50, in-RAM exact scan", 1e3 * ps[0], "ms"),
            Row(f"N={n:,} {label}", "query p99, in-RAM exact scan", 1e3 * ps[1], "ms"),
            Row(f"N={n:,} {label}", "segments scored per query (median / max)",
                f"{int(np.median(scored)):,} / {max(scored):,}",
                note=f"the scan scores {index_count(index, kw):,}"),
            Row(f"N={n:,} {label}", "recall@10 of Milvus vs the scan", recall, goal="1.0",
                met=recall == 1.0),
        ]
    rows += [
        Row(f"N={n:,}", "disk per segment, Milvus Lite", disk / n, "B"),
        Row(f"N={n:,}", "RAM per segment, Milvus Lite (RSS growth)", rss_milvus / n, "B",
            note="embedded in this process"),
        Row(f"N={n:,}", "RAM per segment, in-RAM scan arrays", index.bytes_per_segment(), "B"),
    ]
    store.close()
    log(f"N={n:,}: done")
    return rows, raw


def index_count(index: ScoreIndex, kw: dict[str, Any]) -> int:
    ids = index.ids()
    if "since_ns" not in kw:
        return int(ids.size)
    return int(index.score(np.ones(index.embed_dim, np.float32), **kw).ids.size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated segment counts")
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=30, help="text queries per filter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-insert-s", type=float, default=float("inf"),
                        help="stop inserting after this many seconds (wall clock, generation "
                             "included; the rows then name the count reached)")
    parser.add_argument("--max-rss-gib", type=float, default=18.0,
                        help="stop inserting when the process's RSS reaches this (the rows then "
                             "name the count reached)")
    parser.add_argument("--workdir", default=None,
                        help="where the Milvus Lite data goes (default: a temporary directory)")
    parser.add_argument("--out", default=None, help="write bench.json and bench.md here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    def log(msg: str) -> None:
        print(f"[bench-fleet] {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            r, d = run_size(n, args.embed_dim, args.queries, args.seed, workdir, log,
                            args.max_rss_gib * 2**30, args.max_insert_s)
            rows += r
            raw[str(n)] = d
            shutil.rmtree(workdir / f"fleet-{n}.db", ignore_errors=True)
    print(markdown_table(rows))
    if args.out:
        doc = build_document(rows, raw, vars(args), machine_info(1),
                             time.perf_counter() - started)
        json_path, _ = write_outputs(Path(args.out), doc, rows)
        log(f"wrote {json_path}")
    else:
        print(json.dumps({"rows": len(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
