"""SIGKILL at random moments (start-up, mid-ingest, mid-query, during eviction), restarting the
node on the same file each time: every segment it announced is still there, the file is intact,
and the node always comes back by itself. SPARTAN_KILLS sets the count (default 20)."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import time

from ros_graph import helper, node_params, ros_env, run_helper, start_node, stored_ids

KILLS = int(os.environ.get("SPARTAN_KILLS", "20"))
MAX_SEGMENTS = 12  # small: eviction runs with almost every stored segment
MOMENTS = ("start-up", "mid-ingest", "mid-query", "eviction")
_EVICTED = re.compile(r"evicted segments ([\d, ]+) ")


def evicted_ids(log_text: str) -> set[int]:
    return {int(x) for m in _EVICTED.finditer(log_text) for x in m.group(1).split(",")}


def check_file(path, announced: set[int], evicted: set[int]) -> set[int]:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0] for r in db.execute("SELECT id FROM segments")}
    missing = announced - evicted - rows
    # An eviction commits before it is logged: a kill in between removes the oldest ids unsaid.
    assert not missing or (max(missing) < min(rows) and len(rows) >= MAX_SEGMENTS), (
        f"announced segments missing from the file: {sorted(missing)}; file has {sorted(rows)}")
    return rows


def kill_at(node, moment: str, rng: random.Random, started: float) -> None:
    if moment == "start-up":
        time.sleep(max(0.0, started + rng.uniform(0.0, 2.5) - time.monotonic()))
        return
    node.wait_for_output("active: ingesting", timeout=90)
    if moment == "mid-ingest":
        before = node.output().count("stored segment ")
        deadline = time.monotonic() + 30
        while node.output().count("stored segment ") <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))  # inside or right after a commit
    elif moment == "eviction":
        before = node.output().count("evicted segments ")
        deadline = time.monotonic() + 40
        while node.output().count("evicted segments ") <= before and time.monotonic() < deadline:
            time.sleep(0.005)
    else:  # queries run all the time from the hammer
        time.sleep(rng.uniform(0.2, 2.0))


def test_sigkill_loop_loses_no_announced_segment(tmp_path, model_dir):
    env = ros_env()
    memory = tmp_path / "memory.db"
    params = node_params(model_dir, memory, stride_frames=1, max_segments=MAX_SEGMENTS)
    rng = random.Random(11)
    announced: set[int] = set()
    evicted: set[int] = set()
    moments = [MOMENTS[k % len(MOMENTS)] for k in range(KILLS)]
    rng.shuffle(moments)
    publisher = hammer = None
    logs = []
    try:
        for k, moment in enumerate(moments):
            started = time.monotonic()
            node = start_node(tmp_path, env, *params, name=f"run{k}")
            if publisher is None:  # after the first node: the publisher waits for a reader
                publisher = helper(env, tmp_path / "publisher.log", "publish", "--seconds",
                                   "3600", "--speed", "2")
                hammer = helper(env, tmp_path / "hammer.log", "hammer", "--clients", "2",
                                "--seconds", "3600", "--timeout", "3")
            try:
                kill_at(node, moment, rng, started)
                assert node.alive(), f"run {k} exited by itself:\n{node.tail(30)}"
                node.signal(signal.SIGKILL)
                node.popen.wait(10)
            finally:
                node.stop()
            out = node.output()
            logs.append(out)
            assert "cannot configure" not in out and "Traceback" not in out, out[-3000:]
            assert " are lost " not in out and "corrupt" not in out, out[-3000:]
            announced |= set(stored_ids(out))
            evicted |= evicted_ids(out)
            if memory.exists():
                check_file(memory, announced, evicted)
            print(f"kill {k + 1}/{KILLS} at {moment}: {len(announced)} segments announced")
        final = start_node(tmp_path, env, *params, name="final")
        try:
            final.wait_for_output("active: ingesting", timeout=90)
            [answer] = run_helper(env, "call", '[{"text": "a road", "top_k": 1000}]')
            assert answer["success"], answer["message"]
        finally:
            final.stop()
    finally:
        for proc in (publisher, hammer):
            if proc is not None:
                proc.stop()
    assert " are lost " not in final.output() and "Traceback" not in final.output()
    rows = check_file(memory, announced, evicted)
    assert len(announced) >= KILLS  # ingest really ran between the kills
    assert sum("active: ingesting" in out for out in logs) >= KILLS // 2
    print(f"{KILLS} kills, {len(announced)} segments announced, {len(rows)} in the file")
