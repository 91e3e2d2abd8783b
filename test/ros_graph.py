"""Helpers for tests that run real ROS 2 processes talking over DDS on loopback.

Every test gets its own ROS_DOMAIN_ID and localhost-only discovery, so parallel runs never see each
other; every process starts in its own session and the whole group is killed at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ros_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # Domain ids 1..100 are safe on Linux with the default port mapping; pick at random.
    env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """A child process in its own session, with its output collected in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited ({self.popen.returncode}) before "
                                     f"printing {text!r}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} after {timeout} s:\n{self.output()}")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT the process group, then SIGKILL what is left."""
        if self.alive():
            self.signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout)
        self.signal(signal.SIGKILL)  # children that outlived their parent
        self._log.close()
        return self.popen.returncode


def start_node(tmp_path: Path, env: dict[str, str], *ros_args: str, name: str = "node") -> Process:
    args = [sys.executable, "-m", "spartan_ros.node.spartan_node", "--ros-args", *ros_args]
    return Process(args, env, tmp_path / f"{name}.log")


def query(env: dict[str, str], text: str, *args: str, service: str = "/spartan/query",
          timeout: float = 60.0) -> dict:
    """Call the service from a separate client process; return the decoded answer."""
    cmd = [sys.executable, "-m", "spartan_ros.node.query_client", text, "--service", service,
           "--json", "--timeout", str(timeout), *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 30,
                         start_new_session=True)
    assert out.returncode == 0, f"client failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])
