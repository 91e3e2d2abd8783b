"""What a Milvus Lite insert costs, and what changes it (`make bench-fleet-ingest`).

Each variant stores the same N random segments of ``bench.fleet`` (E = 512) in a fresh Milvus Lite
collection, in a child process of its own (so the RSS and Milvus Lite's environment settings are
the variant's alone), and reports:

  - the insert rate (wall clock) and the CPU seconds per 1000 segments (the whole process, Milvus
    Lite's background compaction included: the figure a busy machine disturbs least);
  - where the time went: our records, the client call (pymilvus packing + gRPC), Milvus Lite's
    decoding of the request, its write path (validation, WAL, memtable), its flushes, its
    background compaction and index files;
  - RSS growth per segment once the flush and compaction are done, the peak, Arrow's share,
    the rows compaction rewrote, and disk per segment.

scripts/env.sh python -m bench.fleet_ingest --n 20000 --out bench/results/fleet-ingest
scripts/env.sh python -m bench.fleet_ingest --n 2000 --variants upsert-1000,insert-1000  # smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Row, build_document, machine_info, markdown_table, write_outputs

MB = 1 << 20
# name: (what it changes, settings). Every variant differs from "insert-1000" in one thing.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "upsert-1000": ("upserts of 1000", {"op": "upsert"}),
    "insert-1000": ("inserts of 1000", {}),
    "insert-pymilvus-str-check": ("pymilvus's per-character VARCHAR check left on (as before)",
                                  {"str_check": True}),
    "insert-250": ("batches of 250", {"batch": 250}),
    "insert-3000": ("batches of 3000 (~60 MB requests)", {"batch": 3000}),
    "insert-released": ("collection released while inserting, loaded after",
                        {"released": True}),
    "insert-flush-2000": ("a flush every 2000 segments", {"flush_every": 2000}),
    "insert-memtable-512MB": ("Milvus Lite memtable 512 MB, WAL 1 GB (default 128 / 256 MB)",
                              {"env": {"MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES": str(512 * MB),
                                       "MILVUS_LITE_WAL_SIZE_LIMIT_BYTES": str(1024 * MB)}}),
    "insert-system-allocator": ("Arrow allocates with malloc (ARROW_DEFAULT_MEMORY_POOL=system)",
                                {"env": {"ARROW_DEFAULT_MEMORY_POOL": "system"}}),
    "insert-malloc-arenas-2": ("glibc malloc arenas capped at 2 (MALLOC_ARENA_MAX=2)",
                               {"env": {"MALLOC_ARENA_MAX": "2"}}),
    "insert-no-blobs": ("schema without poses / video_feat / pose_feat (vectors + scalars)",
                        {"drop": ("poses", "video_feat", "pose_feat")}),
    "insert-no-index": ("no index declared (Milvus Lite only: a server cannot load it)",
                        {"no_index": True}),
}
DEFAULT_VARIANTS = ",".join(VARIANTS)


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Timers:
    """Wall and thread-CPU seconds of wrapped functions, by label."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def wrap(self, owner: Any, attr: str, label: str,
             before: Callable[..., None] | None = None) -> None:
        fn = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.wall[label] = self.wall.get(label, 0.0) + time.perf_counter() - t0
                    self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, attr, timed)


def instrument(timers: Timers, compacted: list[int]) -> None:
    """Time Milvus Lite's stages (in this process: it runs embedded)."""
    import pyarrow.parquet as pq
    from milvus_lite.adapter.grpc import servicer
    from milvus_lite.engine import collection, compaction

    timers.wrap(servicer.MilvusServicer, "Insert", "server: Insert/Upsert handler")
    timers.wrap(servicer.MilvusServicer, "Upsert", "server: Insert/Upsert handler")
    timers.wrap(servicer, "fields_data_to_records", "server: decode request to rows")
    timers.wrap(collection.Collection, "insert", "engine: validate + WAL + memtable + flush")
    timers.wrap(collection.Collection, "_trigger_flush", "engine: flush (in the insert call)")
    timers.wrap(collection.Collection, "_bg_compact_and_index",
                "engine: compaction + index files (background)")

    def count_rows(self: Any, partition: str, partition_dir: str, files: list[str],
                   *rest: Any) -> None:
        compacted.append(sum(pq.ParquetFile(os.path.join(partition_dir, f)).metadata.num_rows
                             for f in files))

    timers.wrap(compaction.CompactionManager, "_compact_files", "engine: compaction",
                before=count_rows)


def variant_store(settings: dict[str, Any]) -> Any:
    """MilvusSegmentStore, or a subclass with the variant's schema."""
    from spartan_ros.memory.milvus_store import BLOB_FIELDS, MilvusSegmentStore

    drop = set(settings.get("drop", ()))
    if not drop and not settings.get("no_index"):
        return MilvusSegmentStore

    class VariantStore(MilvusSegmentStore):
        def _create_collection(self, blobs: tuple[str, ...] = BLOB_FIELDS,
                               indexed: bool = True) -> None:
            super()._create_collection(tuple(name for name in blobs if name not in drop),
                                       indexed and not settings.get("no_index"))

        def _load_own_ids(self) -> list[tuple[int, int]]:
            return []

    return VariantStore


def run_one(name: str, n: int, seed: int, embed_dim: int, workdir: Path) -> dict[str, Any]:
    """One variant in this process (its environment already set by the parent)."""
    import numpy as np

    from bench.fleet import BATCH, Fleet, _segments
    from spartan_ros.memory.milvus_store import segment_record

    settings = VARIANTS[name][1]
    op, batch = settings.get("op", "insert"), int(settings.get("batch", BATCH))
    drop = tuple(settings.get("drop", ()))
    fleet = Fleet(n, embed_dim, seed)
    # Generated before measuring: the arrays are in RSS already, the scoring terms computed.
    rows = [(lo, *arrays) for lo, *arrays in fleet.batches()]
    timers, compacted = Timers(), list[int]()
    instrument(timers, compacted)
    from milvus_lite.server_manager import server_manager_instance

    path = workdir / f"{name}.db"
    shutil.rmtree(path, ignore_errors=True)
    store = variant_store(settings)(str(path), "ingest", embed_dim, vehicle_id="car")
    collection = server_manager_instance._servers[str(path.resolve())][1].get_collection(
        store.collection)
    client = store._client
    if settings.get("str_check"):  # the store turns it off when it connects
        from pymilvus.client import entity_helper

        entity_helper.CHECK_STR_ARRAY = True
    if settings.get("released"):
        client.release_collection(store.collection)
    gc.collect()
    rss0 = rss_bytes()
    peak = [rss0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, t_start = os.times(), time.perf_counter()
    records_s = client_s = 0.0
    pending: list[dict[str, Any]] = []
    done = warm = 0
    for lo, video, pose, terms, starts, paths in rows:
        t0 = time.perf_counter()
        for seg in _segments(lo, video, pose, terms, starts, paths):
            rec = segment_record(seg, "car", int(seg.id or 0))
            for field in drop:
                del rec[field]
            pending.append(rec)
        records_s += time.perf_counter() - t0
        while len(pending) >= batch or (pending and lo + video.shape[0] >= n):
            part, pending = pending[:batch], pending[batch:]
            t0 = time.perf_counter()
            getattr(client, op)(store.collection, part)
            client_s += time.perf_counter() - t0
            done += len(part)
            if warm == 0:  # RSS per segment counts from here: the first request's one-off
                warm = done  # allocations (gRPC buffers, Arrow pools, imports) are not data
                rss0 = peak[0] = rss_bytes()
            every = settings.get("flush_every")
            if every and done % every < len(part):
                client.flush(store.collection)
    t0 = time.perf_counter()
    client.flush(store.collection)
    if settings.get("released"):
        client.load_collection(store.collection)
    collection._wait_for_bg()
    finish_s = time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    cpu1 = os.times()
    stop.set()
    sampler.join()
    gc.collect()
    import pyarrow as pa

    rss_after = rss_bytes()
    segments = collection._segments_snapshot()
    table_bytes = sum(s.table.nbytes for s in segments)
    disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    count = store.count()
    hits = store._call("search", store.collection, data=[np.ones(2 * embed_dim + 2).tolist()],
                       anns_field="u", limit=1, search_params={"metric_type": "IP"})
    store.close()
    server_manager_instance.release_server(str(path))
    return {
        "variant": name, "n": n, "stored": count, "searchable": len(hits[0]) == 1,
        "wall_s": wall, "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "records_s": records_s, "client_call_s": client_s, "flush_load_wait_s": finish_s,
        "stages_s": timers.wall, "stage_calls": timers.calls,
        "compactions": len(compacted), "compacted_rows": sum(compacted),
        "rss_growth_bytes": rss_after - rss0, "rss_peak_growth_bytes": peak[0] - rss0,
        "rss_counted_from": warm,
        "arrow_allocated_bytes": pa.total_allocated_bytes(),
        "segment_table_bytes": table_bytes, "segments": len(segments), "disk_bytes": disk,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def rows_for(r: dict[str, Any]) -> list[Row]:
    n = r["n"]
    what = VARIANTS[r["variant"]][0]
    stages = r["stages_s"]

    def stage(label: str) -> float:
        return float(stages.get(label, 0.0))

    handler = stage("server: Insert/Upsert handler")
    split = ", ".join([
        f"our records {r['records_s']:.1f}",
        f"client packing + gRPC {r['client_call_s'] - handler:.1f}",
        f"decode {stage('server: decode request to rows'):.1f}",
        f"write path {stage('engine: validate + WAL + memtable + flush'):.1f}"
        f" (flushes {stage('engine: flush (in the insert call)'):.1f}, all)",
        f"final flush/load/compaction wait {r['flush_load_wait_s']:.1f}",
        f"background {stage('engine: compaction + index files (background)'):.1f}",
    ])
    sec = r["variant"]
    grown = max(n - r["rss_counted_from"], 1)
    return [
        Row(sec, f"insert rate ({what})", n / r["wall_s"], "seg/s", note=f"{r['wall_s']:.0f} s"),
        Row(sec, "CPU per 1000 segments (process, all threads)", 1000 * r["cpu_s"] / n, "s"),
        Row(sec, "wall seconds by stage", split),
        Row(sec, "RSS growth per segment (after flush + compaction)",
            r["rss_growth_bytes"] / grown, "B",
            note=f"from segment {r['rss_counted_from']:,} on; peak "
                 f"{r['rss_peak_growth_bytes'] / grown:,.0f} B; Arrow tables of the sealed "
                 f"segments {r['segment_table_bytes'] / n:,.0f} B"),
        Row(sec, "rows rewritten by compaction per segment stored", r["compacted_rows"] / n,
            note=f"{r['compactions']} compactions, {r['segments']} sealed segments"),
        Row(sec, "disk per segment", r["disk_bytes"] / n, "B"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="segments per variant")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated, of: {DEFAULT_VARIANTS}")
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the Milvus Lite data goes")
    parser.add_argument("--out", default=None, help="write bench.json and bench.md here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {DEFAULT_VARIANTS}")

    if args.child:  # one variant, its result as JSON on the last line of stdout
        result = run_one(names[0], args.n, args.seed, args.embed_dim, Path(args.workdir))
        print(json.dumps(result))
        return 0

    started = time.perf_counter()
    results: dict[str, Any] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-ingest-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in names:
            env = dict(os.environ, **VARIANTS[name][1].get("env", {}))
            cmd = [sys.executable, "-m", "bench.fleet_ingest", "--child", "1", "--variants",
                   name, "--n", str(args.n), "--embed-dim", str(args.embed_dim), "--seed",
                   str(args.seed), "--workdir", str(workdir)]
            print(f"[bench-fleet-ingest] {name}: {VARIANTS[name][0]}", file=sys.stderr,
                  flush=True)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"variant {name} failed")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            rows += rows_for(results[name])
            print(markdown_table(rows_for(results[name])), file=sys.stderr, flush=True)
    print(markdown_table(rows))
    if args.out:
        doc = build_document(rows, results, vars(args), machine_info(1),
                             time.perf_counter() - started)
        json_path, _ = write_outputs(Path(args.out), doc, rows)
        print(f"[bench-fleet-ingest] wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
