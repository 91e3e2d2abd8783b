"""`make bench-reliability` in its short form: the table and the JSON come out (not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(480)  # a model export, a drive replay and the short sections on 2 cores
def test_quick_reliability_run_writes_the_table(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.reliability", "--quick", "--sections",
                          "inputs,damage,sync,load", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=460, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = (tmp_path / "reliability.md").read_text()
    doc = json.loads((tmp_path / "reliability.json").read_text())
    assert "| section | case | tried | survived | clear error | lost unsaid | note |" in table
    cases = {o["case"]: o for o in doc["outcomes"]}
    assert cases["single-bit flip in the file"]["tried"] == 5
    assert all(o["lost_unsaid"] == 0 for o in doc["outcomes"]), doc["outcomes"]
    inputs = [o for o in doc["outcomes"] if o["section"] == "inputs"]
    assert {o["case"] for o in inputs} >= {"thin images (raw and PNG strips)", "odometry abuse",
                                           "bad requests", "huge query texts"}
    assert all(o["tried"] == 8 and o["survived"] == 8 for o in inputs), inputs
    assert "| inputs | compressed images | 8 | 8 |" in table
    load = doc["figures"]["load"]
    for key in ("queries/s", "p50 ms", "p99 ms", "query errors", "lost in transport",
                "segments stored", "segments expected"):
        assert key in load and f"| {key} |" in table
    assert load["queries answered"] > 0 and load["images played"] > 0
    assert set(doc["figures"]["sync"]) == {"full", "normal"} and "| memory_synchronous |" in table
