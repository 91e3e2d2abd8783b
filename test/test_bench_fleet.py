"""Smoke test of `make bench-fleet` at a tiny size: the table is produced and Milvus is exact.
Nothing here checks a timing."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_fleet_prints_its_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.fleet", "--sizes", "300", "--embed-dim",
                          "64", "--queries", "3", "--out", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout
    for measure in ("Milvus Lite insert rate", "query p50, Milvus Lite (exact)",
                    "query p99, in-RAM exact scan", "segments scored per query",
                    "recall@10 of Milvus vs the scan", "disk per segment",
                    "RAM per segment, Milvus Lite"):
        assert measure in table
    doc = json.loads((tmp_path / "bench.json").read_text())
    recalls = [r for r in doc["rows"] if r["measure"].startswith("recall@10")]
    assert len(recalls) == 2 and all(r["value"] == 1.0 and r["met"] for r in recalls)


def test_bench_fleet_stops_inserting_at_the_limit_and_measures_what_it_has(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.fleet", "--sizes", "3000", "--embed-dim",
                          "64", "--queries", "2", "--max-rss-gib", "0.01", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stopping the inserts there" in out.stderr
    assert "| N=1,000 | Milvus Lite insert rate (upserts of 1000 + flush" in out.stdout
    assert "3,000 asked, stopped: RSS" in out.stdout
    raw = json.loads((tmp_path / "bench.json").read_text())["sections"]["3000"]
    assert raw["n"] == 1000 and raw["target_n"] == 3000 and raw["stopped"].startswith("RSS")
    assert [t["segments"] for t in raw["insert_trace"]] == [1000]
    recalls = [r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]
               if r["measure"].startswith("recall@10")]
    assert recalls and all(r["value"] == 1.0 for r in recalls)


def test_bench_fleet_separate_passes_measure_recall_against_the_scan(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.fleet", "--sizes", "2000", "--embed-dim",
                          "64", "--queries", "2", "--separate", "--max-rss-gib", "0.01",
                          "--workdir", str(tmp_path / "work"), "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the scan pass follows in a new process" in out.stderr
    raw = json.loads((tmp_path / "bench.json").read_text())["sections"]["2000"]
    assert raw["n"] == 1000 and raw["stopped"].startswith("RSS")  # the scan covers what Milvus has
    for q in raw["queries"].values():
        assert len(q["scan_ids"]) == len(q["milvus_ids"]) == 2 and q["recall"] == [1.0, 1.0]
    assert raw["insert_cpu_s"] > 0 and raw["rss_peak_bytes"] >= raw["rss_start_bytes"]


def test_bench_fleet_ingest_prints_its_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.fleet_ingest", "--n", "1500",
                          "--embed-dim", "64", "--variants", "upsert-1000,insert-no-blobs",
                          "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for measure in ("insert rate (upserts of 1000)", "CPU per 1000 segments",
                    "wall seconds by stage", "RSS growth per segment", "disk per segment"):
        assert measure in out.stdout
    sections = json.loads((tmp_path / "bench.json").read_text())["sections"]
    assert sections["upsert-1000"]["stored"] == 1500 and sections["upsert-1000"]["searchable"]
    assert sections["insert-no-blobs"]["stored"] == 1500
