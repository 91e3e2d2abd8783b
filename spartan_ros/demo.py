"""The end-to-end demo behind `make demo`.

Starts the node as its own process (as `ros2 run spartan_ros spartan_node` would), asks it a
question through the real ROS 2 service from a second process, prints the answer and stops.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

QUERIES = ["the gas station where we turned left"]


def _ros_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env


def main() -> int:
    env = _ros_env()
    print(f"[demo] starting spartan_node (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})", flush=True)
    node = subprocess.Popen([sys.executable, "-m", "spartan_ros.node.spartan_node"], env=env,
                            start_new_session=True)
    try:
        for text in QUERIES:
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, "-m", "spartan_ros.node.query_client", text],
                                 env=env, capture_output=True, text=True, timeout=120)
            print(out.stdout.strip() or out.stderr.strip())
            print(f"[demo] answered in {time.monotonic() - t0:.1f} s (incl. client start-up)")
            if out.returncode != 0:
                return out.returncode
        return 0
    finally:
        os.killpg(node.pid, signal.SIGINT)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
