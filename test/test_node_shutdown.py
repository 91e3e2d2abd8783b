"""Ctrl-C in a terminal: SIGINT reaches the whole process group (launch and node together, and
launch forwards one more). The node, started from its executable as `ros2 launch` / `ros2 run`
start it, stores what it has taken, closes the memory and exits 0 without a traceback."""

import contextlib
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ros_graph import Process, helper, node_params, ros_env, stored_ids

EXECUTABLE = Path(sys.prefix) / "lib" / "spartan_ros" / "spartan_node"  # by scripts/setup.sh
PARAMS_FILE = Path(sys.prefix) / "share" / "spartan_ros" / "config" / "spartan.yaml"


@contextlib.contextmanager
def node_on_a_drive(tmp_path: Path, *ros_args: str) -> Iterator[Process]:
    """The node from its executable, as `ros2 launch` / `ros2 run` start it, with a drive
    published on the bag's topics (/camera/image_raw, /odom); both stopped at the end."""
    env = ros_env()
    node = Process([str(EXECUTABLE), "--ros-args", *ros_args], env, tmp_path / "node.log")
    publisher = helper(env, tmp_path / "publisher.log", "publish", "--seconds", "60")
    try:
        yield node
    finally:
        node.stop()
        publisher.stop()


def test_sigint_to_the_group_during_ingest_exits_0_with_the_segments_stored(tmp_path, model_dir):
    memory = tmp_path / "memory.db"
    # The package's parameters file and the default topics, as `ros2 launch` starts the node;
    # stride 2: a segment every 0.2 s, so SIGINT lands while segments are being made.
    with node_on_a_drive(tmp_path, "--params-file", str(PARAMS_FILE),
                         *node_params(model_dir, memory, stride_frames=2)) as node:
        node.wait_for_output("stored segment 3 ", timeout=120)
        node.signal(signal.SIGINT)  # the terminal's Ctrl-C: the whole group
        time.sleep(0.05)
        node.signal(signal.SIGINT)  # launch forwards it once more while the node shuts down
        code = node.popen.wait(30)
    log = node.output()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "SIGINT: storing the last frames and closing the memory" in log
    reported = stored_ids(log)
    assert len(reported) >= 3
    with sqlite3.connect(memory) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0] for r in db.execute("SELECT id FROM segments")}
    assert rows == set(reported)  # everything reported is stored, nothing half-written


def test_sigterm_exits_0_too(tmp_path, model_dir):
    """launch escalates to SIGTERM when SIGINT did not end a process: also a clean stop."""
    env = ros_env()
    node = Process([str(EXECUTABLE), "--ros-args",
                    *node_params(model_dir, tmp_path / "memory.db")], env, tmp_path / "node.log")
    try:
        node.wait_for_output("configured:", timeout=120)
        node.signal(signal.SIGTERM)
        code = node.popen.wait(30)
    finally:
        node.stop()
    assert code == 0, node.output()[-3000:]
    assert "Traceback" not in node.output()


def test_sigusr1_prints_every_thread_stack_and_the_node_goes_on(tmp_path, model_dir):
    """For a node that stops answering: `kill -USR1` writes each thread's stack to its log."""
    params = node_params(model_dir, tmp_path / "memory.db", stride_frames=2)
    with node_on_a_drive(tmp_path, *params) as node:
        node.wait_for_output("stored segment 1 ", timeout=120)
        node.popen.send_signal(signal.SIGUSR1)  # the node alone, as `kill -USR1 <pid>`
        node.wait_for_output("most recent call first", timeout=30)
        stored_before = len(stored_ids(node.output()))
        node.wait_for_output(f"stored segment {stored_before + 2} ", timeout=60)
        node.signal(signal.SIGINT)
        code = node.popen.wait(30)
    log = node.output()
    assert code == 0, log[-3000:]
    dump = log[log.index("most recent call first"):]
    assert dump.count("(most recent call first)") >= 3, dump[:3000]  # all threads, not one
    assert "spartan_node.py" in dump  # the executor thread's frames
    assert "Traceback" not in log
