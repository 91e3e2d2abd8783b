"""Concurrent query clients, each calling ~/query as fast as it can (a load generator).

    python -m bench.query_load --clients 4 --seconds 60 [--service /spartan/query] [--processes]

Prints one JSON line: calls answered / refused (success false, with their messages) / timed out,
and the latency of every answered call. Each client is its own rclpy node and executor in its
own thread, so the clients' calls overlap as separate planners' calls would; with
``--processes`` each client is a process of its own, as separate planners are (the threads of
one process share its interpreter, and each is handed every client's answers to sort out).
Ctrl-C (SIGINT) or SIGTERM ends the run early: each client drops the call it waits for and
leaves DDS cleanly, and the line says ``"interrupted": true``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

from spartan_ros.stop_signals import StopSignals

TEXTS = ("a road", "the gas station where we turned left", "a red car at the crossing",
         "trees on both sides", "stopping at a light", "a long straight street at night",
         "a parked truck on the right", "turning right after the bridge")


# How often a client waiting for an answer looks whether the run was stopped (seconds).
STOP_POLL_S = 0.1


def run_clients(clients: int, seconds: float, service: str = "/spartan/query", top_k: int = 5,
                timeout: float = 10.0, fresh_texts: bool = False, first: int = 0) -> int:
    """``fresh_texts``: every call asks a text never asked before (no cached text features);
    ``first``: the number of the first client (texts differ between clients)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from spartan_interfaces.srv import QuerySegments

    from spartan_ros.node.qos import QUERY_QOS
    from spartan_ros.node.query_client import query_handshake

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = StopSignals()  # a client mid-call when rclpy shut down hung in rcl_send_request
    counts: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop(k: int) -> None:
        node = rclpy.create_node(f"query_load_{k}")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # QUERY_QOS: with the default history, answers to the other clients push this
        # client's answer out before it is taken (spartan_ros/node/qos.py says how).
        client: Any = node.create_client(QuerySegments, service, qos_profile=QUERY_QOS)
        client.wait_for_service(timeout_sec=30.0)
        # Outside the measurement: until the service has matched this client's answer reader,
        # its answers are lost (spartan_ros/node/service_calls.py).
        query_handshake(client, executor.spin_until_future_complete, 30.0)
        i = k
        while time.monotonic() < stop_at and not stop.requested:
            text = TEXTS[i % len(TEXTS)] + (f" number {k} {i}" if fresh_texts else "")
            req = QuerySegments.Request(text=text, top_k=top_k)
            i += 1
            t0 = time.perf_counter()
            future = client.call_async(req)
            while not (future.done() or stop.requested) and time.perf_counter() - t0 < timeout:
                executor.spin_until_future_complete(future, timeout_sec=STOP_POLL_S)
            dt = time.perf_counter() - t0
            answer: Any = future.result() if future.done() else None
            if answer is None:
                client.remove_pending_request(future)
                if stop.requested:
                    break  # stopped while waiting: neither answered nor timed out
            with lock:
                if answer is None:
                    counts["timed out"] += 1
                elif answer.success:
                    counts["answered"] += 1
                    latencies.append(dt)
                else:
                    counts["refused"] += 1
                    messages[answer.message] += 1
        executor.shutdown()
        node.destroy_node()

    threads = [threading.Thread(target=client_loop, args=(k,))
               for k in range(first, first + clients)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    rclpy.try_shutdown()
    print(json.dumps({"counts": dict(counts), "messages": dict(messages),
                      "latencies_s": latencies, "seconds": wall, "clients": clients,
                      "fresh_texts": fresh_texts, "interrupted": stop.requested}),
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--service", default="/spartan/query")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--timeout", type=float, default=10.0, help="per call, seconds")
    p.add_argument("--fresh-texts", action="store_true",
                   help="a new text in every call (what the text cache cannot help)")
    p.add_argument("--processes", action="store_true", help="one process per client")
    p.add_argument("--first-client", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.processes:
        return run_processes(a, argv if argv is not None else sys.argv[1:])
    return run_clients(a.clients, a.seconds, a.service, a.top_k, a.timeout, a.fresh_texts,
                       a.first_client)


def run_processes(a: argparse.Namespace, argv: list[str]) -> int:
    """One client per process; prints the merged JSON line."""
    import subprocess

    # Ctrl-C reaches the clients too (one process group): each ends its run and prints its line.
    stop = StopSignals()
    args = [x for x in argv if x != "--processes"]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.query_load", *args, "--clients",
                               "1", "--first-client", str(k)], stdout=subprocess.PIPE,
                              text=True) for k in range(a.clients)]
    counts: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    latencies: list[float] = []
    seconds = 0.0
    for proc in procs:
        out, _ = proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            counts["client failed"] += 1
            continue
        doc = json.loads(lines[-1])
        counts.update(doc["counts"])
        messages.update(doc["messages"])
        latencies += doc["latencies_s"]
        seconds = max(seconds, doc["seconds"])
    print(json.dumps({"counts": dict(counts), "messages": dict(messages),
                      "latencies_s": latencies, "seconds": seconds, "clients": a.clients,
                      "fresh_texts": a.fresh_texts, "processes": True,
                      "interrupted": stop.requested}), flush=True)
    return 0 if not counts.get("client failed") else 1


if __name__ == "__main__":
    sys.exit(main())
