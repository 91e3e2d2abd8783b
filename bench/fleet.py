"""Fleet memory benchmark (`make bench-fleet`): Milvus Lite vs the in-RAM exact scan.

For each size N (default 10⁵; pass --sizes 100000,1000000 for the full run) it stores N random
segments (E = 512, clustered video features: places seen again, random motion) in a Milvus Lite
collection and in the node's in-RAM scoring index, then asks the same text queries of both:

  - insert rate into Milvus (upserts of 1000 rows, as spartan-fleet push writes, then a flush
    and Milvus Lite's background compaction), and the process CPU seconds per 1000 segments;
  - query latency p50/p99, Milvus (interval + probe + range search + exact re-score) and the
    scan, without filter and with a time window of the newest half;
  - segments scored exactly per Milvus query (the scan scores all N);
  - recall@10 of Milvus against the scan (the method is exact: it must be 1.0);
  - disk per segment (the Milvus Lite data directory) and RAM per segment (process RSS growth
    while Milvus Lite holds the collection, and its peak; the scan's arrays).

By default both stores live in one process and each query is asked of both in turn. With
--separate, Milvus and the scan each run in a process of their own, one after the other, on the
same seeded segments (the scan over exactly as many as Milvus stored), so the machine only needs
the RAM of one store at a time; recall is still measured against the scan's exact answers.

scripts/env.sh python -m bench.fleet --out bench/results/fleet    # 10⁵: ~20 min, ~3 GB RSS
scripts/env.sh python -m bench.fleet --sizes 1000000 --separate --queries 10 \
    --max-insert-s 2600 --max-rss-gib 12 --min-available-gib 5 --out bench/results/fleet-1e6
    # 10⁶: Milvus Lite alone needs ~16 KB of RAM per segment plus its compaction's peaks, and
    # ~25 CPU-minutes of inserts; the limits stop the inserts and measure what is stored
scripts/env.sh python -m bench.fleet --sizes 300 --embed-dim 64 --queries 3  # smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import (
    Row,
    available_memory,
    build_document,
    machine_info,
    markdown_table,
    write_outputs,
)
from spartan_ros.memory.milvus_store import MilvusSegmentStore, segment_record
from spartan_ros.memory.store import Segment
from spartan_ros.runtime.scoring import (
    FusionHead,
    ScoreIndex,
    SegmentTerms,
    TermArrays,
    random_head,
    segment_terms_batch,
)

T0 = 1_700_000_000_000_000_000
BATCH = 1000


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The process's highest RSS, sampled every 0.2 s in a thread (Milvus Lite's background
    compaction allocates between two batches, where the insert loop does not look)."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


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


FILTERS = (("no filter", False), ("time window, newest half", True))


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def settle(store: MilvusSegmentStore) -> None:
    """Wait until an embedded Milvus Lite has finished compacting what the flush sealed, so the
    RAM and query figures are of a store at rest (a server compacts on its own: nothing to do)."""
    try:
        from milvus_lite.server_manager import server_manager_instance

        entry = server_manager_instance._servers.get(os.path.abspath(store.path))
        if entry is not None:
            entry[1].get_collection(store.collection)._wait_for_bg()
    except (ImportError, AttributeError, KeyError):
        pass


def release(path: Path) -> None:
    """Stop the embedded Milvus Lite of ``path``: it holds every stored row in RAM otherwise."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(str(path))


def _window(n: int) -> dict[str, int]:
    return {"since_ns": T0 + (n // 2) * 600_000_000}


def milvus_pass(n: int, args: argparse.Namespace, workdir: Path, log: Any,
                with_scan: bool) -> dict[str, Any]:
    """Store n segments in Milvus Lite (fewer when a limit stops the inserts) and ask it the
    queries; ``with_scan``: also fill the in-RAM index and ask it each query in turn."""
    target = n
    embed_dim = args.embed_dim
    fleet = Fleet(n, embed_dim, args.seed)
    index = ScoreIndex(embed_dim, fleet.head, capacity=n) if with_scan else None
    data = workdir / f"fleet-{n}.db"
    shutil.rmtree(data, ignore_errors=True)
    store = MilvusSegmentStore(str(data), "bench", embed_dim, head=fleet.head, vehicle_id="car")
    write = getattr(store, args.write)
    rss0 = rss_bytes()  # Milvus Lite started: what grows from here is the data
    peak = PeakRss()
    cpu0 = cpu_seconds()
    max_rss, min_free = args.max_rss_gib * 2**30, args.min_available_gib * 2**30
    insert_s = 0.0
    stopped = ""
    began = time.perf_counter()
    from tqdm import tqdm

    # The insert rate, CPU time and RSS at every tenth of the run: does Milvus Lite slow down
    # as it fills?
    trace: list[dict[str, float]] = []
    every = max(n // 10, BATCH)
    with tqdm(total=target, unit="seg", desc=f"insert {target:,}", file=sys.stderr) as bar:
        for lo, video, pose, terms, starts, paths in fleet.batches():
            segs = _segments(lo, video, pose, terms, starts, paths)
            records = [segment_record(s, "car", int(s.id or 0)) for s in segs]
            t0 = time.perf_counter()
            write(records)
            insert_s += time.perf_counter() - t0
            if index is not None:
                ids = np.arange(lo + 1, lo + 1 + len(segs), dtype=np.int64)
                index.extend(ids, starts, starts + 2_300_000_000, terms)
            bar.update(len(segs))
            done = lo + len(segs)
            rss, free = rss_bytes(), available_memory() or float("inf")
            out_of_time = time.perf_counter() - began >= args.max_insert_s
            why = ""
            if rss >= max_rss:
                why = f"RSS {rss / 2**30:.1f} GiB reached the limit"
            elif free < min_free:
                why = f"the machine's available memory fell to {free / 2**30:.1f} GiB"
            elif out_of_time and done < target:
                why = f"the inserts took {args.max_insert_s:.0f} s"
            if done % every < BATCH or done == target or why:
                trace.append({"segments": done, "insert_s": insert_s, "rss_bytes": rss,
                              "cpu_s": cpu_seconds() - cpu0,
                              "wall_s": time.perf_counter() - began, "available_bytes": free})
                bar.set_postfix(rss=f"{rss / 2**30:.1f}GiB",
                                rate=f"{done / max(insert_s, 1e-9):.0f}/s")
            if why:
                log(f"{why} at {done:,} segments: stopping the inserts there")
                stopped = why
                n = done
                break
    t0 = time.perf_counter()
    store.flush()
    flush_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    settle(store)
    settle_s = time.perf_counter() - t0
    insert_cpu_s = cpu_seconds() - cpu0
    rss_end = rss_bytes()
    peak_rss = peak.stop()
    scan_bytes = n * index.bytes_per_segment() if index is not None else 0
    raw: dict[str, Any] = {
        "n": n, "target_n": target, "write": args.write, "insert_s": insert_s,
        "flush_s": flush_s, "settle_s": settle_s, "insert_cpu_s": insert_cpu_s,
        "disk_bytes": dir_bytes(data), "rss_growth_bytes": rss_end - rss0 - scan_bytes,
        "rss_start_bytes": rss0, "rss_end_bytes": rss_end, "rss_peak_bytes": peak_rss,
        "insert_trace": trace, "stopped": stopped, "queries": {},
    }
    if index is not None:
        raw["scan_bytes_per_segment"] = index.bytes_per_segment()
    for label, windowed in FILTERS:
        kw = _window(n) if windowed else {}
        q: dict[str, Any] = {"milvus_s": [], "milvus_ids": [], "scored": []}
        if index is not None:
            q.update(scan_s=[], scan_ids=[], scan_scored=index_count(index, kw))
        bar = tqdm(fleet.queries(args.queries), desc=f"query {label}", file=sys.stderr)
        for t in bar:
            t0 = time.perf_counter()
            res = store.search(10, t, **kw)  # type: ignore[arg-type]
            q["milvus_s"].append(time.perf_counter() - t0)
            q["milvus_ids"].append([int(f.segment.id or 0) for f in res.found])
            q["scored"].append(res.candidates)
            post = {"milvus": f"{q['milvus_s'][-1]:.2f}s"}
            if index is not None:
                t0 = time.perf_counter()
                exact = index.search(10, t, **kw)  # type: ignore[arg-type]
                q["scan_s"].append(time.perf_counter() - t0)
                q["scan_ids"].append([int(i) for i in exact.ids])
                post["scan"] = f"{q['scan_s'][-1] * 1e3:.0f}ms"
            bar.set_postfix(post)
        raw["queries"][label] = q
    store.close()
    release(data)
    shutil.rmtree(data, ignore_errors=True)
    return raw


def scan_pass(target: int, n: int, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """The in-RAM exact scan over the first n of the target's segments, asked the same queries."""
    fleet = Fleet(target, args.embed_dim, args.seed)
    index = ScoreIndex(args.embed_dim, fleet.head, capacity=n)
    from tqdm import tqdm

    with tqdm(total=n, unit="seg", desc=f"scan index {n:,}", file=sys.stderr) as bar:
        for lo, video, _pose, terms, starts, _paths in fleet.batches():
            m = min(video.shape[0], n - lo)
            if m <= 0:
                break
            ids = np.arange(lo + 1, lo + 1 + m, dtype=np.int64)
            index.extend(ids, starts[:m], starts[:m] + 2_300_000_000, _head_rows(terms, m))
            bar.update(m)
    raw: dict[str, Any] = {"n": n, "scan_bytes_per_segment": index.bytes_per_segment(),
                           "queries": {}}
    for label, windowed in FILTERS:
        kw = _window(n) if windowed else {}
        q: dict[str, Any] = {"scan_s": [], "scan_ids": [], "scan_scored": index_count(index, kw)}
        for t in tqdm(fleet.queries(args.queries), desc=f"scan {label}", file=sys.stderr):
            t0 = time.perf_counter()
            exact = index.search(10, t, **kw)  # type: ignore[arg-type]
            q["scan_s"].append(time.perf_counter() - t0)
            q["scan_ids"].append([int(i) for i in exact.ids])
        raw["queries"][label] = q
    log(f"scan over {n:,} segments: done")
    return raw


def _head_rows(terms: TermArrays, m: int) -> TermArrays:
    """The first m rows of a batch's scoring terms."""
    return TermArrays(terms.ag[:m], terms.bg[:m], terms.video_unit[:m])


def run_separate(n: int, args: argparse.Namespace, workdir: Path, log: Any) -> dict[str, Any]:
    """Milvus, then the scan, each in a process of its own: the machine holds one store at a
    time. Both see the same seeded segments; the scan's answers are the exact ones recall is
    measured against."""
    common = ["--sizes", str(n), "--embed-dim", str(args.embed_dim), "--queries",
              str(args.queries), "--seed", str(args.seed), "--write", args.write,
              "--max-insert-s", str(args.max_insert_s), "--max-rss-gib", str(args.max_rss_gib),
              "--min-available-gib", str(args.min_available_gib), "--workdir", str(workdir)]
    result = workdir / f"pass-{n}.json"

    def child(extra: list[str]) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "bench.fleet", *common, *extra, "--result", str(result)]
        subprocess.run(cmd, check=True)
        return dict(json.loads(result.read_text()))

    raw = child(["--only", "milvus"])
    log(f"Milvus pass done ({raw['n']:,} segments); the scan pass follows in a new process")
    scan = child(["--only", "scan", "--stored", str(raw["n"])])
    raw["scan_bytes_per_segment"] = scan["scan_bytes_per_segment"]
    for label, q in scan["queries"].items():
        raw["queries"][label].update(q)
    return raw


def size_rows(raw: dict[str, Any], separate: bool) -> list[Row]:
    n, target = raw["n"], raw["target_n"]
    flush_s = raw["flush_s"] + raw["settle_s"]
    rows = [
        Row(f"N={n:,}", "Milvus Lite insert rate", n / max(raw["insert_s"] + flush_s, 1e-9),
            "seg/s", note=f"{raw['write']}s of {BATCH} + flush and compaction ({flush_s:.1f} s)"
            + (f"; {target:,} asked, stopped: {raw['stopped']}" if n < target else "")),
        Row(f"N={n:,}", "Milvus Lite CPU per 1000 segments stored", 1000 * raw["insert_cpu_s"] / n,
            "s", note="process CPU time, all threads: what a busy machine disturbs least"),
    ]
    for label, _ in FILTERS:
        q = raw["queries"][label]
        sec = f"N={n:,} {label}"
        hits = [len(set(m) & set(s)) / max(len(s), 1)
                for m, s in zip(q["milvus_ids"], q["scan_ids"], strict=True)]
        q["recall"] = hits
        pm, ps = np.percentile(q["milvus_s"], [50, 99]), np.percentile(q["scan_s"], [50, 99])
        recall = float(np.mean(hits))
        rows += [
            Row(sec, "query p50, Milvus Lite (exact)", 1e3 * pm[0], "ms"),
            Row(sec, "query p99, Milvus Lite (exact)", 1e3 * pm[1], "ms"),
            Row(sec, "query p50, in-RAM exact scan", 1e3 * ps[0], "ms",
                note="asked in its own pass" if separate else ""),
            Row(sec, "query p99, in-RAM exact scan", 1e3 * ps[1], "ms"),
            Row(sec, "segments scored per query (median / max)",
                f"{int(np.median(q['scored'])):,} / {max(q['scored']):,}",
                note=f"the scan scores {q['scan_scored']:,}"),
            Row(sec, "recall@10 of Milvus vs the scan", recall, goal="1.0", met=recall == 1.0),
        ]
    rows += [
        Row(f"N={n:,}", "disk per segment, Milvus Lite", raw["disk_bytes"] / n, "B"),
        Row(f"N={n:,}", "RAM per segment, Milvus Lite (RSS growth)", raw["rss_growth_bytes"] / n,
            "B", note="embedded in this process"),
        Row(f"N={n:,}", "RAM per segment, in-RAM scan arrays", raw["scan_bytes_per_segment"], "B"),
    ]
    return rows


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
    parser.add_argument("--write", choices=("upsert", "insert"), default="upsert",
                        help="how rows are written: upsert (as spartan-fleet push and the node's "
                             "mirror do) or insert (the keys are new: both store the same)")
    parser.add_argument("--separate", action="store_true",
                        help="Milvus and the scan each in a process of its own, one after the "
                             "other (the machine then needs RAM for one store at a time)")
    parser.add_argument("--max-insert-s", type=float, default=float("inf"),
                        help="stop inserting after this many seconds (wall clock, generation "
                             "included; the rows then name the count reached)")
    parser.add_argument("--max-rss-gib", type=float, default=18.0,
                        help="stop inserting when the process's RSS reaches this (the rows then "
                             "name the count reached)")
    parser.add_argument("--min-available-gib", type=float, default=3.0,
                        help="stop inserting when the machine's available memory falls below "
                             "this (other jobs share it)")
    parser.add_argument("--workdir", default=None,
                        help="where the Milvus Lite data goes (default: a temporary directory)")
    parser.add_argument("--out", default=None, help="write bench.json and bench.md here")
    parser.add_argument("--only", choices=("milvus", "scan"), help=argparse.SUPPRESS)
    parser.add_argument("--stored", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    def log(msg: str) -> None:
        print(f"[bench-fleet] {msg}", file=sys.stderr, flush=True)

    if args.only:  # one pass of --separate, in its own process
        workdir = Path(args.workdir)
        if args.only == "milvus":
            one = milvus_pass(sizes[0], args, workdir, log, with_scan=False)
        else:
            one = scan_pass(sizes[0], args.stored, args, log)
        Path(args.result).write_text(json.dumps(one), encoding="utf-8")
        return 0

    started = time.perf_counter()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            if args.separate:
                d = run_separate(n, args, workdir, log)
            else:
                d = milvus_pass(n, args, workdir, log, with_scan=True)
            rows += size_rows(d, args.separate)
            raw[str(n)] = d
            log(f"N={d['n']:,}: done")
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
