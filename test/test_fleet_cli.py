"""`spartan-fleet query` against Milvus Lite: with a trajectory file (timed, or a planner's path
without stamps) or text alone, it prints the answer the node gives from the same segments in
its SQLite memory, in `spartan_query`'s table."""

import json

import numpy as np
import pytest
from fleet_helpers import drive_memory
from ros_graph import QUAT

from spartan_ros.answers import format_answer, match_dict
from spartan_ros.fleet import cli
from spartan_ros.fleet.sync import push
from spartan_ros.memory.milvus_store import Connection
from spartan_ros.memory.service import MemoryService, ServiceConfig
from spartan_ros.memory.store import SegmentStore
from spartan_ros.query import Query
from spartan_ros.runtime.engine import Engine

TEXT = "turning left at the lights"


def write_tum(path, rows):
    lines = ["# t x y z qx qy qz qw"] + [" ".join(f"{v:.9g}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def memories(tmp_path_factory, model_dir):
    """car1's drive in its SQLite memory and, pushed, in a Milvus Lite fleet store."""
    tmp = tmp_path_factory.mktemp("fleet-cli")
    engine = Engine(model_dir, providers=("cpu",))
    car1 = drive_memory(engine, tmp / "car1.db", 7.0, vehicle_id="car1")
    uri = str(tmp / "fleet.db")
    report = push(car1, Connection(uri), "car1", progress=False)
    assert report.sent == report.total > 0
    store = SegmentStore(car1, engine.model_hash, engine.embed_dim, head=engine.fusion_head,
                         vehicle_id="car1")
    yield engine, MemoryService(engine, store, ServiceConfig()), uri, tmp
    store.close()


def fleet_query(capsys, model_dir, uri, *args):
    rc = cli.main(["query", TEXT, "--uri", uri, "--model", str(model_dir), "--providers", "cpu",
                   *args])
    return rc, capsys.readouterr()


timed = np.array([[t, 5 * t, 0.4 * t * t, 0, *QUAT] for t in np.linspace(0, 3, 7)])
path = timed.copy()
path[:, 0] = 0.0  # a planner's path: positions only, timed at the trajectory speed


@pytest.mark.parametrize("rows, options, extra", [
    (timed, [], {}),
    (path, [], {}),
    (path, ["--trajectory-speed", "8"], {"trajectory_speed": 8.0}),
    (timed, ["--since", "1700000002", "--near", "20,4", "--radius", "12"],
     {"since_ns": 1_700_000_002_000_000_000, "near": (20.0, 4.0, 0.0), "radius": 12.0}),
    (None, ["--until", "1700000004"], {"until_ns": 1_700_000_004_000_000_000}),
], ids=["timed", "path", "path-8mps", "timed-filters", "text-only"])
def test_fleet_query_with_a_trajectory_is_the_nodes_answer(capsys, model_dir, memories, rows,
                                                          options, extra):
    engine, local, uri, tmp = memories
    args = ["--top-k", "5", *options]
    if rows is not None:
        args += ["--trajectory", str(write_tum(tmp / "traj.tum", rows))]
    rc, out = fleet_query(capsys, model_dir, uri, *args, "--json")
    assert rc == 0, out.out + out.err
    fleet = json.loads(out.out)
    mine = local.query(Query(text=TEXT, top_k=5, trajectory=rows, **extra))
    want = [match_dict(m) for m in mine.matches]
    assert fleet["success"] and len(fleet["segments"]) == len(want) > 0
    assert [s["id"] for s in fleet["segments"]] == [s["id"] for s in want]
    np.testing.assert_allclose([s["score"] for s in fleet["segments"]],
                               [s["score"] for s in want], atol=1e-5)
    assert {s["vehicle_id"] for s in fleet["segments"]} == {"car1"}
    # The notes (how an untimed path was timed) are the node's; only the candidate counts differ
    # (the fleet scores the few segments its bound leaves, SQLite every filtered one).
    assert fleet["message"].partition("; ")[2] == "; ".join(mine.notes)
    if rows is not path:
        return
    assert "trajectory without stamps timed" in fleet["message"]
    rc, table = fleet_query(capsys, model_dir, uri, *args)  # the table, as spartan_query prints
    assert rc == 0
    lines = table.out.strip().splitlines()
    assert lines[0].startswith(f"query {TEXT!r}: {len(want)} segments (of ")
    answer = {"success": True, "message": "", "candidates": mine.candidates, "segments": want}
    assert lines[1:] == format_answer(answer, TEXT).splitlines()[1:]


def test_bad_trajectory_files_and_requests_are_clear_errors(capsys, model_dir, memories):
    _, _, uri, tmp = memories
    bad = tmp / "bad.tum"
    bad.write_text("0 1 2 3 0 0 0 1\n0.5 1 2\n")
    with pytest.raises(SystemExit) as exit_info:
        fleet_query(capsys, model_dir, uri, "--trajectory", str(bad))
    assert exit_info.value.code == 2
    assert "bad.tum line 2: expected 't x y z qx qy qz qw' (3 fields)" in capsys.readouterr().err

    one = write_tum(tmp / "one.tum", timed[:1])
    rc, out = fleet_query(capsys, model_dir, uri, "--trajectory", str(one))
    assert rc == 1
    assert out.out.strip() == f"query {TEXT!r} failed: trajectory needs at least 2 poses, got 1"

    backwards = write_tum(tmp / "backwards.tum", timed[::-1])
    rc, out = fleet_query(capsys, model_dir, uri, "--trajectory", str(backwards), "--json")
    assert rc == 1 and "strictly increasing" in json.loads(out.out)["message"]
