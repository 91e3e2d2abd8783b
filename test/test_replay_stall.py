"""A node that stalls mid-replay (a starved vehicle computer) loses nothing (real processes, DDS).

The node is frozen with SIGSTOP for 2 s while `spartan-bag play` goes on at rate 2 with
100 Hz odometry. What the stalled reader could not take, the player's reliable writers repair
once it runs again: only if the samples are still in their history and a heartbeat comes soon.
With a 100-sample history and Fast DDS's 3 s heartbeat the node lost odometry and windows here.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from ros_graph import Process, node_params, ros_env, start_node, stored_count, wait_idle
from spartan_train.bag.write import WriteConfig, read_captions, write_bag
from spartan_train.data.synth.generate import GenConfig, write_dataset

from spartan_ros.bag.play import HISTORY_S, PlayConfig, history_depths, open_bag

FRAMES = 120  # one sequence, 12 s at 10 Hz: (120 - 24) / 6 + 1 = 17 windows
ODOM_HZ = 100.0
RATE = 2.0


def make_bag(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_dataset(GenConfig(out=str(data), seed=3, sequences=1, frames=FRAMES))
    bag = tmp_path / "bag"
    write_bag(WriteConfig(data=data, seqs=["synth_000"], out=bag, storage="sqlite3",
                          odom_rate=ODOM_HZ, progress=False))
    return bag


def test_history_covers_seconds_of_each_topic(tmp_path: Path) -> None:
    bag = make_bag(tmp_path)
    reader = open_bag(bag)
    try:
        depths = history_depths(PlayConfig(bag=bag, rate=RATE), reader, list(reader.connections))
    finally:
        reader.close()
    # 5 s of playback: 100 Hz odometry at rate 2, and the 10 Hz camera at rate 2
    assert depths["/odom"] >= ODOM_HZ * RATE * HISTORY_S * 0.95
    assert 100 <= depths["/camera/image_raw"] <= 110


def test_a_node_stalled_mid_replay_stores_every_window(tmp_path: Path, model_dir: Path) -> None:
    bag = make_bag(tmp_path)
    captions = read_captions(bag)
    expected = (FRAMES - 24) // 6 + 1
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db",
                                                  input_timeout_s=600.0))
    player = None
    try:
        node.wait_for_output("active: ingesting")
        player = Process([sys.executable, "-m", "spartan_ros.bag", "play", str(bag),
                          "--rate", str(RATE), "--json"], env, tmp_path / "player.log")
        player.wait_for_output("playing", timeout=60)
        time.sleep(1.5)
        node.signal(signal.SIGSTOP)  # frozen: its DDS reader takes nothing for 2 s
        time.sleep(2.0)
        node.signal(signal.SIGCONT)
        assert player.popen.wait(60) == 0, player.tail()
        summary = json.loads(player.output().strip().splitlines()[-1])
        assert summary["counts"][captions["odom_topic"]] > (FRAMES - 1) / 10 * ODOM_HZ - 10
        stats = wait_idle(env)
        log = node.output()
        assert stored_count(stats) == expected, log
        assert "dropped" not in log, log
    finally:
        if player is not None:
            player.stop()
        node.signal(signal.SIGCONT)
        node.stop()
