"""Reliability in figures: damage to the memory file, kills, lifecycle cycles and a load run.

    python -m bench.reliability [--out bench/results] [--quick] [--sections damage,kills,...]

Sections (each prints its rows as it finishes; all end in one markdown table and a JSON file,
``<out>/reliability.md`` and ``<out>/reliability.json``):

- ``inputs``: adversarial messages per input class (raw images with fields drawn at random,
  thin strips, compressed images, odometry abuse, bad requests, huge texts), generated with
  hypothesis by ``bench/fuzz_inputs.py`` and fed through the node's own path into a memory on
  the demo's model while a clean drive goes on. Per class: cases tried / survived (no exception)
  / clear error (refused with a reason) / segments announced as stored but missing from the file
  when it is opened again (and ``PRAGMA integrity_check``).

- ``damage``: the memory file damaged the ways files get damaged (single-bit flips, a -wal cut in
  half or lost, the file truncated, deleted or replaced, a kill before the schema was written, a
  full disk, a read-only file system). Per class: cases tried / survived (no crash, the store
  opens or refuses in one sentence) / clear error (the damage is named) / segments lost unsaid.
- ``sync``: what ``memory_synchronous: full`` (survives a power cut) costs per stored segment
  against ``normal`` (survives a crash of the node), in the system's temporary folder.
- ``kills``: the SIGKILL loop of test/test_node_kill_loop.py (kills at start-up, mid-ingest,
  mid-query and during eviction, restarting on the same file).
- ``lifecycle``: configure/activate/deactivate/cleanup cycles with ingest and queries in flight
  (test/test_node_lifecycle_cycles.py).
- ``load``: 4 query clients as fast as they can for 60 s while the demo's drive replays at rate
  1 into the node: queries/s, p50/p99 latency, errors, frames lost in transport, segments stored
  vs expected.

Timings depend on what else runs on the machine: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import comma_list

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("inputs", "damage", "sync", "kills", "lifecycle", "load")


@dataclass
class Outcome:
    """One class of cases."""

    section: str
    case: str
    tried: int = 0
    survived: int = 0
    clear_error: int = 0
    lost_unsaid: int = 0  # segments gone without a word (the figure that must be 0)
    note: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        self.outcomes.append(o)
        print(f"  {o.section:<9} {o.case:<38} tried {o.tried:>3}  survived {o.survived:>3}  "
              f"clear error {o.clear_error:>3}  lost unsaid {o.lost_unsaid:>3}  {o.note}",
              flush=True)


# ------------------------------------------------------------------------------------- inputs

INPUT_CLASSES = {  # fuzz class -> row name, cases per class (full run; the quick run does 8)
    "image": ("raw images, fields at random", 150),
    "thin image": ("thin images (raw and PNG strips)", 40),
    "compressed": ("compressed images", 150),
    "odometry": ("odometry abuse", 200),
    "query": ("bad requests", 150),
    "huge text": ("huge query texts", 30),
}


def input_cases(model_dir: Path, work: Path, quick: bool) -> tuple[list[Outcome], dict]:
    """Each class of adversarial inputs on a fresh memory file; its segments checked after."""
    from bench.fuzz_inputs import run_class
    from spartan_ros.memory.service import MemoryService, ServiceConfig
    from spartan_ros.memory.store import SegmentStore
    from spartan_ros.runtime.engine import Engine

    engine = Engine(model_dir, providers=("cpu",))
    outcomes, raw = [], {}
    for kind, (name, full) in INPUT_CLASSES.items():
        path = work / f"inputs-{kind.replace(' ', '-')}.db"
        store = SegmentStore(path, engine.model_hash, engine.embed_dim, head=engine.fusion_head)
        memory = MemoryService(engine, store, ServiceConfig(window_frames=8, stride_frames=4))
        t0 = time.monotonic()
        tally = run_class(memory, kind, 8 if quick else full, seed=0)
        store.close()
        with sqlite3.connect(path) as db:
            ok = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = {r[0] for r in db.execute("SELECT id FROM segments")}
        lost = len(set(tally["segments_announced"]) - rows) + (0 if ok else 1)
        reasons = ", ".join(f"{k} {v}" for k, v in list(tally["reasons"].items())[:3])
        outcomes.append(Outcome("inputs", name, tally["tried"], tally["survived"],
                                tally["clear_error"], lost,
                                note=f"{tally['accepted']} used; {reasons}"[:110]))
        raw[kind] = {**tally, "integrity_ok": ok, "seconds": round(time.monotonic() - t0, 1)}
    return outcomes, raw


# ------------------------------------------------------------------------------------- damage

E = 16


def _segments(n: int) -> list[Any]:
    from spartan_ros.memory import Segment
    from spartan_ros.runtime.scoring import random_head

    head = random_head(E, 0)
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        poses = np.zeros((24, 8))
        poses[:, 0] = i * 0.6 + 0.1 * np.arange(24)
        poses[:, 1:4] = np.cumsum(rng.normal(0, 1, (24, 3)), 0)
        poses[:, 7] = 1.0
        out.append(Segment.build(head, i * 600_000_000, i * 600_000_000 + 2_300_000_000, "odom",
                                 poses, rng.standard_normal(E), rng.standard_normal(E)))
    return out


def _open(path: Path) -> tuple[Any, str | None]:
    """(store or None, error text or None)."""
    from spartan_ros.memory import MemoryFileError, SegmentStore
    from spartan_ros.runtime.scoring import random_head

    try:
        return SegmentStore(path, "m", E, head=random_head(E, 0)), None
    except MemoryFileError as exc:
        return None, str(exc)


def _judge(path: Path, written: int, physically_lost: int | None = None) -> tuple[bool, bool, int]:
    """(survived, damage named, segments lost unsaid) of opening ``path`` after damage."""
    try:
        store, error = _open(path)
    except Exception:  # a crash: what must never happen
        return False, False, written
    if store is None:
        return True, error is not None, 0  # refused in a sentence; the file is left as it was
    with store:
        named = bool(store.problems)
        loaded = len(store)
    missing = written - loaded
    return True, named, 0 if named or missing <= 0 else missing


def _written(folder: Path, name: str, n: int, keep_open: bool = False) -> tuple[Path, Any]:
    from spartan_ros.memory import SegmentStore
    from spartan_ros.runtime.scoring import random_head

    path = folder / name
    store = SegmentStore(path, "m", E, head=random_head(E, 0))
    for seg in _segments(n):
        store.add(seg)
    if keep_open:
        return path, store  # as a crashed node leaves it: the rows live in the -wal
    store.close()
    return path, None


def _copy_db(src: Path, dst: Path, wal: str = "keep") -> None:
    """Copy a memory file (and sidecar) as a crash would leave it, with the -wal kept, cut in
    half or lost."""
    shutil.copy(src, dst)
    shutil.copy(f"{src}.segments", f"{dst}.segments")
    wal_src = Path(f"{src}-wal")
    if wal != "lost" and wal_src.exists():
        data = wal_src.read_bytes()
        Path(f"{dst}-wal").write_bytes(data if wal == "keep" else data[: len(data) // 2])


def damage_cases(work: Path, quick: bool) -> list[Outcome]:
    out = []
    n = 40
    # single-bit flips anywhere past the header page
    good, _ = _written(work, "good.db", n)
    size = good.stat().st_size
    rng = np.random.default_rng(0)
    flips = Outcome("damage", "single-bit flip in the file", note="harmless flips hit free space")
    for k in range(5 if quick else 20):
        path = work / f"flip{k}.db"
        data = bytearray(good.read_bytes())
        data[int(rng.integers(4096, size))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        survived, named, lost = _judge(path, n)
        flips.tried += 1
        flips.survived += survived
        flips.clear_error += named
        flips.lost_unsaid += lost
    out.append(flips)

    live, store = _written(work, "live.db", n, keep_open=True)
    for case, wal in (("-wal cut in half after a crash", "half"), ("-wal lost after a crash",
                                                                    "lost")):
        o = Outcome("damage", case)
        path = work / f"wal-{wal}.db"
        _copy_db(live, path, wal)
        survived, named, lost = _judge(path, n)
        o.tried, o.survived, o.clear_error, o.lost_unsaid = 1, int(survived), int(named), lost
        out.append(o)
    store.close()

    for case in ("file truncated to 0 bytes", "file deleted, sidecar left",
                 "file replaced by an older copy"):
        path, _ = _written(work, f"{case.split()[1]}.db", n)
        if "truncated" in case:
            path.write_bytes(b"")
        elif "deleted" in case:
            path.unlink()
        else:
            older, _ = _written(work, "older.db", n // 4)
            shutil.copy(older, path)
        survived, named, lost = _judge(path, n)
        out.append(Outcome("damage", case, 1, int(survived), int(named), lost))

    empty = work / "empty.db"
    con = sqlite3.connect(empty)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    store, error = _open(empty)
    ok = store is not None and error is None
    if store is not None:
        store.close()
    out.append(Outcome("damage", "killed before the schema was written", 1, int(ok), int(ok), 0,
                       note="initialised on restart" if ok else str(error)))
    out += storage_cases(work)
    return out


def storage_cases(work: Path) -> list[Outcome]:
    """Disk full and read-only on a real small tmpfs (needs root)."""
    from spartan_ros.memory import StorageError

    if os.geteuid() != 0 or shutil.which("mount") is None:
        return [Outcome("damage", "disk full / read-only", note="not run: mounting needs root")]
    mnt = work / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        full = Outcome("damage", "disk full while storing")
        segs = _segments(80)
        path, store = _written(mnt, "memory.db", 5, keep_open=True)
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        stored = 5
        for seg in segs[5:60]:
            full.tried += 1
            try:
                store.add(seg)
                stored += 1
                full.survived += 1
            except StorageError as exc:
                full.survived += 1
                full.clear_error += exc.kind == "disk full"
            except Exception:
                pass
        (mnt / "filler").unlink()
        store.add(segs[70])  # space is back: storing resumes
        stored += 1
        store.close()
        reopened, _ = _open(path)
        full.lost_unsaid = 0 if reopened is not None and len(reopened) == stored else stored
        full.note = f"{full.clear_error} named 'disk full'; resumed after space returned"
        if reopened is not None:
            reopened.close()
        ro = Outcome("damage", "read-only file system at start", tried=1)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        store, error = _open(path)
        ro.survived = 1
        ro.clear_error = int(store is None and error is not None and "read-only" in error)
        ro.note = (error or "")[:60]
        return [full, ro]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# ------------------------------------------------------------------------ memory_synchronous

def sync_cost(work: Path, n: int) -> dict[str, Any]:
    """Milliseconds per stored segment (one transaction each) with synchronous full and normal,
    modes interleaved twice so a change in the disk's load hits both."""
    from spartan_ros.memory import SegmentStore
    from spartan_ros.runtime.scoring import random_head

    segs = _segments(n)
    times: dict[str, list[float]] = {"full": [], "normal": []}
    for k, mode in enumerate(("full", "normal", "full", "normal")):
        path = work / f"sync-{k}.db"
        with SegmentStore(path, "m", E, head=random_head(E, 0), synchronous=mode) as store:
            for seg in segs:
                t0 = time.perf_counter()
                store.add(seg)
                times[mode].append(time.perf_counter() - t0)
    out = {}
    for mode, t in times.items():
        ms = np.asarray(t) * 1000.0
        out[mode] = {"mean ms": float(ms.mean()), "p50 ms": float(np.percentile(ms, 50)),
                     "p99 ms": float(np.percentile(ms, 99)), "segments": len(ms)}
        print(f"  sync      {mode:<7} mean {ms.mean():8.2f} ms  p50 {np.percentile(ms, 50):7.2f} "
              f"ms  p99 {np.percentile(ms, 99):8.2f} ms per stored segment", flush=True)
    return out


# ------------------------------------------------------------------- kills and lifecycle (pytest)

def run_pytest(test: str, env_extra: dict[str, str], timeout: float) -> tuple[bool, str]:
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-o",
           "timeout=0", str(REPO / "test" / test)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)
    return proc.returncode == 0, proc.stdout + proc.stderr


def kill_loop(kills: int) -> tuple[Outcome, dict[str, Any]]:
    t0 = time.monotonic()
    ok, text = run_pytest("test_node_kill_loop.py", {"SPARTAN_KILLS": str(kills)},
                          timeout=120 + 30 * kills)
    m = re.search(r"(\d+) kills, (\d+) segments announced, (\d+) in the file", text)
    announced = int(m.group(2)) if m else 0
    o = Outcome("kills", "SIGKILL at random moments", tried=kills,
                survived=kills if ok else 0, clear_error=0, lost_unsaid=0 if ok else -1,
                note=f"{announced} segments announced, all found" if ok else "FAILED")
    return o, {"passed": ok, "kills": kills, "announced": announced,
               "seconds": round(time.monotonic() - t0, 1), "tail": text[-1500:]}


def lifecycle_cycles(cycles: int) -> tuple[Outcome, dict[str, Any]]:
    t0 = time.monotonic()
    ok, text = run_pytest("test_node_lifecycle_cycles.py::"
                          "test_lifecycle_cycles_with_ingest_and_queries_in_flight",
                          {"SPARTAN_LIFECYCLE_CYCLES": str(cycles)}, timeout=300 + 20 * cycles)
    m = re.search(r"(\d+) cycles in ([\d.]+) s", text)
    o = Outcome("lifecycle", "configure/activate/deactivate/cleanup", tried=cycles,
                survived=cycles if ok else 0, lost_unsaid=0 if ok else -1,
                note=(f"{m.group(2)} s, ingest and 3 query clients running" if m and ok
                      else "FAILED"))
    return o, {"passed": ok, "cycles": cycles, "seconds": round(time.monotonic() - t0, 1),
               "tail": text[-1500:]}


# --------------------------------------------------------------------------------------- load

def load_run(work: Path, seconds: float, clients: int, quick: bool,
             fresh_texts: bool = False, processes: bool = False) -> dict[str, Any]:
    """The demo's drive replayed at rate 1 into the node while ``clients`` query it (the 8
    texts of bench/query_load.py in turn, or with ``fresh_texts`` a new text every call; the
    clients threads of one process, or with ``processes`` a process each)."""
    from spartan_train.bag.write import read_captions
    from spartan_train.demo import (
        DemoConfig,
        expected_segments,
        export_model,
        make_drive,
        node_parameters,
        start_node,
        wait_for,
    )
    from spartan_train.processes import Process, SegmentWatch, ros_env

    cfg = DemoConfig(work=work / "drive", sequences=1 if quick else 4,
                     frames=60 if quick else 300)
    model_dir = export_model(cfg)
    _, bag = make_drive(cfg)
    captions = read_captions(bag)
    expected = expected_segments(captions, node_parameters(cfg))
    env = ros_env()
    node = start_node(cfg, env, model_dir, cfg.work / "memory.db", captions)
    segments = SegmentWatch(env, cfg.work / "logs" / "segments.log")  # ~/segments
    player = hammer = None
    try:
        wait_for("active node", lambda: "serving /spartan/query" in node.output(), [node], 90)
        player = Process([sys.executable, "-m", "spartan_ros.bag", "play", str(bag), "--clock",
                          "--rate", "1", "--json", "--wait-timeout", "30"], env,
                         cfg.work / "logs" / "play.log")
        # Queries start once there is something to find ("memory is empty" is no error).
        wait_for("a first segment", lambda: len(segments.ids()) > 0, [node, player],
                 120)
        hammer = Process([sys.executable, "-m", "bench.query_load", "--clients", str(clients),
                          "--seconds", str(seconds)] + (["--fresh-texts"] if fresh_texts else [])
                         + (["--processes"] if processes else []),
                         env, cfg.work / "logs" / "load.log")
        wait_for("end of the query load", lambda: not hammer.alive(), [node], seconds + 120)
        wait_for("end of playback", lambda: not player.alive(), [node], 900)
        wait_for("end of ingest", lambda: len(segments.ids()) >= expected, [node], 60)
    except Exception as exc:  # report what was measured so far
        print(f"  load run: {exc}", flush=True)
    finally:
        for proc in (player, hammer):
            if proc is not None:
                proc.stop()
        node.stop()
        segments.stop()
    played = _last_json(player.output() if player else "")
    load = _last_json(hammer.output() if hammer else "")
    summary = re.findall(r"ingest stopped: (\d+) frames received, (\d+) taken, (\d+) dropped",
                         node.output())
    received, _, dropped = (int(x) for x in summary[-1]) if summary else (0, 0, 0)
    sent = int(played.get("counts", {}).get(captions["image_topic"], 0))
    lat = np.asarray(load.get("latencies_s", []), dtype=np.float64) * 1000.0
    counts = load.get("counts", {})
    return {
        "clients": clients, "seconds": load.get("seconds", 0.0),
        "query texts": "a new text every call" if fresh_texts else "8 texts in turn",
        "clients are": "processes" if processes else "threads of one process",
        "queries answered": counts.get("answered", 0),
        "queries/s": counts.get("answered", 0) / max(load.get("seconds", 1.0), 1e-9),
        "p50 ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99 ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "query errors": counts.get("refused", 0) + counts.get("timed out", 0),
        "images played": sent, "images received": received,
        "lost in transport": sent - received, "frames dropped by the node": dropped,
        "segments stored": len(segments.ids()), "segments expected": expected,
        "messages": load.get("messages", {}),
    }


def _last_json(text: str) -> dict[str, Any]:
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


# -------------------------------------------------------------------------------------- output

def table(report: Report) -> str:
    lines = ["| section | case | tried | survived | clear error | lost unsaid | note |",
             "|---|---|---|---|---|---|---|"]
    for o in report.outcomes:
        lines.append(f"| {o.section} | {o.case} | {o.tried} | {o.survived} | {o.clear_error} | "
                     f"{o.lost_unsaid} | {o.note} |")
    sync = report.figures.get("sync")
    if sync:
        lines += ["", "| memory_synchronous | mean ms | p50 ms | p99 ms | per stored segment |",
                  "|---|---|---|---|---|"]
        for mode, f in sync.items():
            lines.append(f"| {mode} | {f['mean ms']:.2f} | {f['p50 ms']:.2f} | "
                         f"{f['p99 ms']:.2f} | {f['segments']} segments |")
    load = report.figures.get("load")
    if load:
        lines += ["", "| load run (rate 1, concurrent queries) | value | goal |", "|---|---|---|"]
        goals: dict[str, tuple[str, Callable[[float], bool]]] = {
            "p99 ms": ("< 100", lambda v: v < 100),
            "query errors": ("0", lambda v: v == 0),
            "lost in transport": ("0", lambda v: v == 0),
        }
        for key, value in load.items():
            if key == "messages":
                continue
            goal, ok = goals.get(key, ("", lambda v: True))
            shown = f"{value:.1f}" if isinstance(value, float) else str(value)
            met = "" if not goal else (" (met)" if ok(value) else " (**not met**)")
            lines.append(f"| {key} | {shown} | {goal}{met} |")
        lines.append(f"| segments stored / expected | {load['segments stored']} / "
                     f"{load['segments expected']} | all |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--quick", action="store_true", help="a short form (CI): few cases, short runs")
    p.add_argument("--sections", type=comma_list(SECTIONS), default=",".join(SECTIONS),
                   help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--kills", type=int, default=None, help="SIGKILLs (default 20; quick 3)")
    p.add_argument("--cycles", type=int, default=None,
                   help="lifecycle cycles (default 100; quick 3)")
    p.add_argument("--load-seconds", type=float, default=None, help="default 60; quick 5")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--fresh-texts", action="store_true",
                   help="load run: a new query text in every call (no cached text features)")
    p.add_argument("--client-processes", action="store_true",
                   help="load run: each query client a process of its own")
    a = p.parse_args(argv)
    sections = a.sections
    kills = a.kills if a.kills is not None else (3 if a.quick else 20)
    cycles = a.cycles if a.cycles is not None else (3 if a.quick else 100)
    load_s = a.load_seconds if a.load_seconds is not None else (5.0 if a.quick else 60.0)

    t0 = time.monotonic()
    report = Report()
    raw: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="spartan-reliability-"))
    try:
        if "inputs" in sections:
            print("adversarial inputs per class (hypothesis, seed 0)", flush=True)
            from spartan_train.demo import DemoConfig, export_model

            drive_work = Path("runs/reliability") if not a.quick else work
            outcomes, raw["inputs"] = input_cases(
                export_model(DemoConfig(work=drive_work / "drive")), work, a.quick)
            for o in outcomes:
                report.add(o)
        if "damage" in sections:
            print("damage to the memory file", flush=True)
            for o in damage_cases(work, a.quick):
                report.add(o)
        if "sync" in sections:
            print("cost of memory_synchronous (one segment per transaction)", flush=True)
            report.figures["sync"] = sync_cost(work, 30 if a.quick else 200)
        if "kills" in sections:
            print(f"SIGKILL loop ({kills} kills)", flush=True)
            o, raw["kills"] = kill_loop(kills)
            report.add(o)
        if "lifecycle" in sections:
            print(f"lifecycle cycles ({cycles})", flush=True)
            o, raw["lifecycle"] = lifecycle_cycles(cycles)
            report.add(o)
        if "load" in sections:
            print(f"load run ({a.clients} clients, {load_s:g} s, drive at rate 1)", flush=True)
            drive_work = Path("runs/reliability") if not a.quick else work
            report.figures["load"] = load_run(drive_work, load_s, a.clients, a.quick,
                                              a.fresh_texts, a.client_processes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(report)
    print("\n" + text, flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    doc = {"created_unix": time.time(), "seconds": round(time.monotonic() - t0, 1),
           "quick": a.quick, "load_average": list(os.getloadavg()),
           "outcomes": [asdict(o) for o in report.outcomes], "figures": report.figures,
           "raw": raw}
    (a.out / "reliability.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (a.out / "reliability.md").write_text("# spartan_ros reliability\n\n" + text + "\n")
    print(f"\nwrote {a.out / 'reliability.md'} and {a.out / 'reliability.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
