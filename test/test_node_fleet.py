"""The node mirroring a live drive to a fleet store (a Milvus Lite server in its own process) while
that store restarts, then killed mid-drive: nothing lost, nothing duplicated."""

import sqlite3
import time

from fleet_helpers import restart_milvus_server, start_milvus_server
from ros_graph import helper, node_params, query, ros_env, start_node, watch_segments

from spartan_ros.fleet.outbox import FleetMirror
from spartan_ros.fleet.sync import memory_meta
from spartan_ros.memory.milvus_store import Connection, MilvusSegmentStore


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_node_mirrors_across_a_store_restart_and_a_kill(tmp_path, model_dir):
    env = ros_env()
    servers = []  # every Milvus Lite server started here is stopped at the end, pass or fail
    try:
        check_mirroring(tmp_path, model_dir, env, servers)
    finally:
        for server in servers:
            server.stop(timeout=30)


def check_mirroring(tmp_path, model_dir, env, servers):
    server, uri = start_milvus_server(tmp_path, env, tmp_path / "fleet-data")
    servers.append(server)
    memory = tmp_path / "car1.db"
    node = start_node(tmp_path, env, *node_params(model_dir, memory, vehicle_id="car1",
                                                  fleet_uri=uri, input_timeout_s=600.0))
    publisher = None
    segments = watch_segments(tmp_path, env)
    try:
        node.wait_for_output("active: ingesting")
        assert "mirroring segments to the fleet" in node.output()
        # A drive longer than the test: stopping and restarting the fleet store takes a varying
        # time, and segments must still arrive after it (a 40 s drive could end before the store
        # was back, and "more segments" never came). The publisher is stopped below.
        publisher = helper(env, tmp_path / "publish.log", "publish", "--seconds", "600")
        wait_until(lambda: len(segments.ids()) >= 3, 90, "the first segments")
        model = file_model(memory)
        wait_until(lambda: fleet_count(uri, model) >= 1, 60, "the first mirrored segment")
        server.stop(timeout=30)  # the fleet store shuts down while the node keeps storing
        before = len(segments.ids())
        wait_until(lambda: len(segments.ids()) >= before + 4, 60,
                   "segments stored while the fleet store is down")
        server = restart_milvus_server(tmp_path, env, uri, tmp_path / "fleet-data")
        servers.append(server)
        # The segments stored while the store was down reach it: the mirror reconnected.
        wait_until(lambda: fleet_count(uri, model) >= before + 4, 90, "the queue sent")
        answer = query(env, "a straight road", "--fleet", "--top-k", "50")
        assert answer["success"], answer["message"]
        assert {s["vehicle_id"] for s in answer["segments"]} == {"car1"}
        n = len(segments.ids())
        wait_until(lambda: len(segments.ids()) >= n + 2, 60, "more segments")
        node.signal(9)  # SIGKILL mid-drive: no clean shutdown
        node.popen.wait(10)
    finally:
        if publisher is not None:
            publisher.stop()
        node.stop()
        segments.stop()
    assert "fleet store unreachable" in node.output()
    assert "Traceback" not in node.output()
    db = sqlite3.connect(memory)
    stored = {r[0] for r in db.execute("SELECT id FROM segments")}
    queued = {r[0] for r in db.execute("SELECT segment_id FROM fleet_outbox")}
    db.close()
    with MilvusSegmentStore(uri, *model, vehicle_id="car1") as fleet:
        rows, sent = fleet.count("car1"), fleet.segment_ids("car1")
    assert rows == len(sent)  # nothing duplicated
    # nothing lost
    assert stored == sent | queued, (f"lost {sorted(stored - sent - queued)}, unknown "
                                     f"{sorted((sent | queued) - stored)}")
    assert len(stored) >= 9
    # What was queued at the kill is sent by the next start (the node's own mirror code).
    mirror = FleetMirror(str(memory), Connection(uri), "car1")
    try:
        assert mirror.drain(60)
    finally:
        mirror.stop()
    with MilvusSegmentStore(uri, *model, vehicle_id="car1") as fleet:
        assert fleet.count("car1") == len(stored) and fleet.segment_ids("car1") == stored


def file_model(memory) -> tuple[str, int]:
    """(model hash, embed dim) of a memory file."""
    db = sqlite3.connect(memory)
    try:
        return memory_meta(db)
    finally:
        db.close()


def fleet_count(uri: str, model: tuple[str, int]) -> int:
    with MilvusSegmentStore(uri, *model, vehicle_id="watcher") as fleet:
        return fleet.count("car1")
