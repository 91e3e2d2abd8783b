"""`make bench-ingest` in its short form: a recorded camera replayed into the live node over DDS.
Only that the benchmark runs and reports is checked; its figures are timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_short_ingest_benchmark_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench.ingest", "--seconds", "3", "--cases",
                           "640x480,jpeg", "--dds-profile", "package", "--witness",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| camera | needed frames taken | frames received |" in proc.stdout
    assert "| 640x480 rgb8, 30 Hz |" in proc.stdout and "| 1920x1080 JPEG, 30 Hz |" in proc.stdout
    assert "| camera | published (player) | a second DDS reader: received / reported lost |" \
        in proc.stdout
    doc = json.loads((out / "ingest.json").read_text())
    assert [c["case"] for c in doc["cases"]] == ["640x480", "jpeg"]
    for case in doc["cases"]:
        assert case["published"] > 0 and case["needed"] > 0 and case["peak_rss_mb"] > 0
        assert case["dds_profile"] == "package" and case["player"]["dds_profile"]
        assert case["witness_received"] is not None and case["witness_lost"] is not None
    assert doc["run"]["versions"]["ros-rclpy"] and doc["run"]["player"]["qos"] == "sensor"
    assert set(doc["tables"]) == {"ingest", "where_lost", "handoff"}
