"""Fleet sync against a Milvus Lite server in its own process: push (killed and resumed), the
outbox mirror across a fleet-store restart, and fleet queries on two vehicles' real drives."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fleet_helpers import (
    drive_memory,
    random_segments,
    restart_milvus_server,
    start_milvus_server,
    text_queries,
)
from ros_graph import QUAT, START_NS
from spartan_train.processes import Process, ros_env

from spartan_ros.fleet import outbox
from spartan_ros.fleet.link import FleetReader
from spartan_ros.fleet.outbox import FleetMirror
from spartan_ros.fleet.sync import push
from spartan_ros.memory.milvus_store import Connection, MilvusSegmentStore
from spartan_ros.memory.store import SegmentStore
from spartan_ros.query import QueryError
from spartan_ros.runtime.engine import Engine


@pytest.fixture
def fleet(tmp_path):
    env = ros_env()
    server, uri = start_milvus_server(tmp_path, env, tmp_path / "fleet-data")
    yield env, server, uri
    server.stop()


def fleet_rows(uri, model_hash, embed_dim, vehicle):
    """(rows, distinct segment ids) of a vehicle in the fleet collection."""
    with MilvusSegmentStore(uri, model_hash, embed_dim, vehicle_id=vehicle) as store:
        return store.count(vehicle), store.segment_ids(vehicle)


def memory_file(path, n, embed_dim=32, seed=0):
    head, segs = random_segments(n, embed_dim, seed=seed)
    with SegmentStore(path, "m-sync", embed_dim, head=head) as store:
        store._conn.execute("PRAGMA synchronous=OFF")  # a fixture: no fsync per segment
        for s in segs:
            store.add(s)
    return head, segs


def test_push_is_resumable_after_a_kill_and_idempotent(tmp_path, fleet):
    env, _, uri = fleet
    n = 800
    memory_file(tmp_path / "car1.db", n)
    cmd = [sys.executable, "-m", "spartan_ros.fleet.cli", "push", str(tmp_path / "car1.db"),
           "--uri", uri, "--vehicle", "car1", "--batch-size", "2"]
    # The watcher connects (and creates the collection) before the push starts: opening it
    # takes about a second, and a push started first could finish in that time (800 segments
    # take 0.8 s on an idle machine), leaving nothing to kill mid-way.
    with MilvusSegmentStore(uri, "m-sync", 32, vehicle_id="watcher") as watch:
        pusher = Process(cmd, env, tmp_path / "push.log")
        try:
            deadline = time.monotonic() + 120
            while watch.count("car1") < 100 and time.monotonic() < deadline:
                assert pusher.alive(), pusher.output()
                time.sleep(0.05)
            pusher.signal(signal.SIGKILL)
            pusher.popen.wait(10)
        finally:
            pusher.stop()
    rows, ids = fleet_rows(uri, "m-sync", 32, "car1")
    assert 100 <= rows < n and rows == len(ids)  # killed mid-way, nothing doubled
    assert "push car1" in pusher.output()  # the progress bar

    cmd[-1] = "256"  # the resumed run in big batches
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{n} segments, {rows} already in the fleet, {n - rows} sent" in again.stdout
    rows, ids = fleet_rows(uri, "m-sync", 32, "car1")
    assert rows == n and ids == set(range(1, n + 1))

    third = subprocess.run(cmd + ["--quiet"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert f"{n} already in the fleet, 0 sent" in third.stdout
    assert fleet_rows(uri, "m-sync", 32, "car1")[0] == n
    status = subprocess.run([sys.executable, "-m", "spartan_ros.fleet.cli", "status", "--uri",
                             uri], env=env, capture_output=True, text=True, timeout=120)
    assert "model m-sync (embed_dim 32)" in status.stdout and f"car1: {n}" in status.stdout


def test_outbox_keeps_segments_while_the_fleet_store_is_down(tmp_path, fleet):
    env, server, uri = fleet
    path = tmp_path / "car3.db"
    head, segs = random_segments(60, 32, seed=3)
    store = SegmentStore(path, "m-sync", 32, head=head)
    for s in segs[:10]:
        store.add(s)  # stored before mirroring was turned on: queued by enable()
    assert outbox.enable(str(path)) == 10
    mirror = FleetMirror(str(path), Connection(uri, timeout_s=3.0), "car3", batch_size=8,
                         poll_s=0.05, max_backoff_s=0.5)
    mirror.start()
    try:
        for s in segs[10:30]:
            store.add(s)
        deadline = time.monotonic() + 60
        while mirror.stats.sent < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mirror.stats.sent == 30

        server.stop(timeout=30)  # the fleet store shuts down while segments keep coming
        t0 = time.monotonic()
        for s in segs[30:50]:
            store.add(s)  # never waits for the network
        assert time.monotonic() - t0 < 5.0
        time.sleep(1.5)
        assert mirror.stats.failures > 0 and mirror.stats.pending == 20
        assert "unreachable" in mirror.stats.last_error or mirror.stats.last_error

        server2 = restart_milvus_server(tmp_path, env, uri, tmp_path / "fleet-data")
        try:
            for s in segs[50:]:
                store.add(s)
            deadline = time.monotonic() + 60
            while mirror.stats.sent < 60 and time.monotonic() < deadline:
                time.sleep(0.1)
            rows, ids = fleet_rows(uri, "m-sync", 32, "car3")
            assert rows == 60 and ids == set(range(1, 61))
            assert mirror.stats.pending == 0
        finally:
            mirror.stop()
            server2.stop()
    finally:
        mirror.stop()
        store.close()


def test_a_fleet_query_right_after_the_store_comes_back_is_answered(tmp_path, fleet):
    """A planner's fleet query in the first second after a long outage is answered: the node's
    reader connects afresh at once instead of waiting out gRPC's grown reconnect pause."""
    env, server, uri = fleet
    head, segs = random_segments(20, 32, seed=9)
    with MilvusSegmentStore(uri, "m-sync", 32, head=head, vehicle_id="car9") as store:
        store.add_many(segs)
        store.flush()
    t = text_queries(head, segs, 1)[0]
    reader = FleetReader(Connection(uri), "m-sync", 32, head)
    try:
        assert len(reader.search(5, t).found) == 5
        server.stop(timeout=30)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:  # queries keep failing through a 10 s outage
            with pytest.raises(QueryError, match="fleet store unreachable"):
                reader.search(5, t)
            time.sleep(1.0)
        server = restart_milvus_server(tmp_path, env, uri, tmp_path / "fleet-data")
        try:
            t1 = time.monotonic()
            assert len(reader.search(5, t).found) == 5
            assert time.monotonic() - t1 < 5.0
        finally:
            server.stop()
    finally:
        reader.close()


def test_two_vehicles_real_drives_exact_and_named(tmp_path, fleet, model_dir):
    env, _, uri = fleet
    engine = Engine(model_dir, providers=("cpu",))
    car1 = drive_memory(engine, tmp_path / "car1.db", 7.0, vehicle_id="car1")
    car2 = drive_memory(engine, tmp_path / "car2.db", 5.0, offset=(1000.0, 0.0),
                        image_shift=40, vehicle_id="car2")
    for path, vehicle in ((car1, "car1"), (car2, "car2")):
        report = push(path, Connection(uri), vehicle, progress=False)
        assert report.sent == report.total > 0

    # The fleet copy of car1 answers exactly as car1's own memory, for every kind of request.
    local = SegmentStore(car1, engine.model_hash, engine.embed_dim, head=engine.fusion_head,
                         vehicle_id="car1")
    remote = MilvusSegmentStore(uri, engine.model_hash, engine.embed_dim,
                                head=engine.fusion_head)
    try:
        texts = ["a straight road", "a red car at a crossing", "turning left at the lights"]
        traj = np.array([[t, 5 * t, t, 0, *QUAT] for t in np.linspace(0, 3, 7)])
        filters = [{}, {"since_ns": START_NS + 2_000_000_000},
                   {"until_ns": START_NS + 4_000_000_000}, {"near": (0, 0, 0), "radius": 6.0}]
        for text in texts:
            t = engine.encode_text([text])[0]
            q = engine.encode_query([text], engine.resample_window(traj)[None])[0]
            for kw in filters:
                for a, b in ((local.search(5, t, **kw),
                              remote.search(5, t, vehicle_id="car1", **kw)),
                             (local.search(5, query_embedding=q, **kw),
                              remote.search(5, query_embedding=q, vehicle_id="car1", **kw))):
                    assert [f.segment.id for f in a.found] == [f.segment.id for f in b.found]
                    np.testing.assert_allclose([f.score for f in a.found],
                                               [f.score for f in b.found], atol=1e-5)
    finally:
        local.close()
        remote.close()

    def fleet_query(*args):
        out = subprocess.run([sys.executable, "-m", "spartan_ros.fleet.cli", "query",
                              "a straight road", "--uri", uri, "--model", str(model_dir),
                              "--providers", "cpu", *args], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    every = json.loads(fleet_query("--top-k", "100", "--json"))
    assert {s["vehicle_id"] for s in every["segments"]} == {"car1", "car2"}
    near2 = [s for s in every["segments"] if s["start_position"][0] > 900]
    assert near2 and {s["vehicle_id"] for s in near2} == {"car2"}
    only1 = fleet_query("--vehicle", "car1", "--top-k", "3", "--near", "0,0", "--radius", "20")
    assert only1.count("vehicle=car1") == 3 and "car2" not in only1
    assert only1.startswith("query 'a straight road': 3 segments")
