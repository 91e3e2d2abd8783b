"""Child processes that talk ROS 2: an isolated environment and a process-group handle.

Used by the demo and by the tests. Each run gets its own ROS_DOMAIN_ID with localhost-only
discovery, so parallel runs never see each other; each child starts its own session so that the
whole group can be stopped (a node started in the background from a shell ignores SIGINT).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO


# Domain ids handed out by this process: a random start, then the next id each call, so the runs
# of one test session never share a domain. A random pick per call collides often (20 draws from
# 100 ids repeat one with probability ~0.87), and runs sharing a domain see each other's topics.
# SPARTAN_DOMAIN_RANGE=LO-HI keeps them in a band, so test sessions running side by side on one
# machine never meet either (the default band 1..100 holds the ids safe on Linux).
def _domain_band() -> range:
    text = os.environ.get("SPARTAN_DOMAIN_RANGE", "1-100")
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"SPARTAN_DOMAIN_RANGE must look like 1-100, got {text!r}") from None
    if not 0 <= lo <= hi <= 232:
        raise ValueError(f"SPARTAN_DOMAIN_RANGE {text!r} is outside 0-232")
    band = range(lo, hi + 1)
    # pytest -n N (xdist): each worker takes its own slice of the band.
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get(
        "PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and workers.isdigit() and int(workers) > 1:
        n, k = int(workers), int(worker[2:])
        if len(band) < n:
            raise ValueError(f"SPARTAN_DOMAIN_RANGE {text!r} has fewer ids than the {n} workers")
        return band[k * len(band) // n:(k + 1) * len(band) // n]
    return band


_band = _domain_band()
_next_domain = itertools.count(random.SystemRandom().randrange(len(_band)))


def ros_env(domain_id: int | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with a ROS domain of its own (from SPARTAN_DOMAIN_RANGE,
    default 1..100; a different one on every call) and loopback-only discovery."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None
                               else _band[next(_next_domain) % len(_band)])
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """A child in its own session, with its output collected in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, name: str = "") -> None:
        self.name = name or Path(args[0]).name
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n".join("   | " + ln for ln in self.output().splitlines()[-lines:])

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
        """SIGINT the group (a clean ROS shutdown), SIGKILL what is left after ``timeout``."""
        if self.alive():
            self.signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout)
        self.signal(signal.SIGKILL)  # children that outlived the leader
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode


class SegmentWatch:
    """The segments a node announced on ``~/segments`` (published after each commit), collected
    by ``spartan_ros.node.segments_listener`` running as a child process.

    The listener subscribes transient-local, so starting it after the node still yields the last
    100 segments stored before it joined.
    """

    def __init__(self, env: dict[str, str], log: Path, topic: str = "/spartan/segments") -> None:
        args = [sys.executable, "-m", "spartan_ros.node.segments_listener", "--topic", topic,
                "--json"]
        self.process = Process(args, env, log, name="segments listener")

    def segments(self) -> list[dict]:
        text = self.process.output()
        complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
        return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]

    def ids(self) -> list[int]:
        return [s["id"] for s in self.segments()]

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict]:
        """Block until ``count`` segments arrived; AssertionError (with the log) otherwise."""
        deadline = time.monotonic() + timeout
        while len(got := self.segments()) < count:
            if not self.process.alive():
                raise AssertionError(f"the segments listener exited "
                                     f"({self.process.popen.returncode}):\n{self.process.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} of {count} segments on ~/segments after "
                                     f"{timeout:g} s")
            time.sleep(0.1)
        return got

    def stop(self) -> int:
        return self.process.stop()
