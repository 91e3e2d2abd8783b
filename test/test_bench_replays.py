"""bench.replays in its short form: a fresh node per run, the table and the JSON (real DDS)."""

import json
import subprocess
import sys

from ros_graph import REPO, ros_env


def test_one_replay_fills_the_table(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.replays", "--runs", "1", "--rates", "2", "--sequences", "1",
         "--frames", "48", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        cwd=REPO, env=ros_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| 2 | 1 | 1 of 1 | 5 of 5 | 0 | 0 |" in out.stdout, out.stdout
    doc = json.loads((tmp_path / "out" / "replays.json").read_text())
    [run] = doc["runs"]
    assert run["expected"] == run["stored"] == 5
    assert run["images_sent"] == run["frames_received"] == 48
    assert doc["every_segment_every_run"] is True
