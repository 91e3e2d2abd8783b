"""Property-based fuzzing of everything the node receives (hypothesis, derandomised).

Images, compressed images, odometry and QuerySegments requests are generated from their field
types (``bench/fuzz_inputs.py``) as real ROS messages and fed through the node's ROS-free path
into a MemoryService on a real ONNX model and a real SQLite file, while a clean drive goes on
between the cases. Each class checks: no exception escapes, every refused input is counted
under a reason, traced memory stays bounded, and every segment announced as stored is in the
file when it is opened again, with ``PRAGMA integrity_check`` ok. ``SPARTAN_FUZZ_EXAMPLES=N``
runs N cases per class instead of the default (a longer run).
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import pytest
from ros_graph import tiny_model

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bench/ is a top-level folder beside spartan_ros/, not installed
    sys.path.insert(0, str(REPO))

from bench.fuzz_inputs import CLASSES, Harness, examples_from_env, run_cases  # noqa: E402
from spartan_ros.memory.service import MemoryService, ServiceConfig  # noqa: E402
from spartan_ros.memory.store import SegmentStore  # noqa: E402
from spartan_ros.runtime.engine import Engine  # noqa: E402

# Python and numpy allocations of one class of cases, at their peak. A frame the model reads
# needs a few MB; a 1 x 20000 strip resized before cropping needed 3 GB.
TRACED_PEAK_MB = 200


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(tiny_model(tmp_path_factory.getbasetemp() / "models"), providers=("cpu",))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.parametrize("kind", CLASSES)
def test_fuzzed_inputs_never_crash_grow_or_lose_data(kind, engine, tmp_path):
    path = tmp_path / "memory.db"
    store = SegmentStore(path, engine.model_hash, engine.embed_dim, head=engine.fusion_head)
    memory = MemoryService(engine, store, ServiceConfig(window_frames=8, stride_frames=4))
    harness = Harness(memory)
    harness.drive(16)  # something to query, and a window in progress
    assert len(harness.stored) >= 3
    rss_before = rss_mb()
    tracemalloc.start()
    try:
        tally = run_cases(harness, kind, examples_from_env())
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    harness.drive(16)
    print(kind, tally.as_dict(), f"traced peak {peak_mb:.1f} MB")
    assert tally.tried >= examples_from_env() and tally.survived == tally.tried
    assert tally.unexplained == 0 and not tally.failures
    assert tally.accepted > 0 and tally.clear_error > 0  # both sides were exercised
    assert peak_mb < TRACED_PEAK_MB
    assert rss_mb() - rss_before < 300  # nothing kept growing
    announced = [s.id for s in harness.stored]
    assert len(set(announced)) == len(announced)
    store.close()
    with SegmentStore(path, engine.model_hash, engine.embed_dim,
                      head=engine.fusion_head) as reopened:
        assert reopened.integrity_check() == "ok"
        assert sorted(reopened.all_ids()) == sorted(announced)
