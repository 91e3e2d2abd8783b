"""bench.query_load, the load generator the node's tests and benchmarks use: Ctrl-C ends a run
early and cleanly (real node and clients over DDS)."""

from __future__ import annotations

import json
import signal
import sys
import time

from ros_graph import Process, helper, node_params, ros_env, start_node


def test_ctrl_c_ends_the_run_with_its_summary_and_no_hang(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db"))
    publisher = helper(env, tmp_path / "publisher.log", "publish", "--seconds", "600")
    # Two client processes, as two planners; Ctrl-C in a terminal reaches the whole group.
    load = Process([sys.executable, "-m", "bench.query_load", "--processes", "--clients", "2",
                    "--seconds", "600", "--timeout", "20"], env, tmp_path / "load.log")
    try:
        node.wait_for_output("stored segment ", timeout=90)
        time.sleep(8.0)  # the clients are calling by now
        t0 = time.monotonic()
        load.signal(signal.SIGINT)
        code = load.popen.wait(40)
        took = time.monotonic() - t0
    finally:
        load.stop()
        publisher.stop()
        node.stop()
    out = load.output()
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    [summary] = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert summary["interrupted"] is True
    assert summary["counts"].get("answered", 0) > 0, summary["counts"]
    assert "timed out" not in summary["counts"] and "client failed" not in summary["counts"]
    print(f"stopped {took:.1f} s after Ctrl-C: {summary['counts']}")
