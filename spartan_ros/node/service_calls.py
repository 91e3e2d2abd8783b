"""Calling a ROS 2 service from a client made moments ago, without losing the first answer.

A new client sees a service as available once the client has matched the service's endpoints,
but the service may not have matched the client's answer reader yet. An answer sent in
between is lost: the middleware waits a moment for the match (Fast DDS: the writer's
max_blocking_time, 100 ms by default), then drops the answer, and the call never returns. On a
busy computer (a vehicle's CPU under load, a CI runner) discovery can take longer than that.

``handshake`` sends a harmless request (one the server answers at once and that changes
nothing) until one answer comes back: from then on the service knows the client, and every
answer arrives (the service QoS is reliable). It costs one round trip per new client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rclpy.client import Client
from rclpy.task import Future

Spin = Callable[[Future, float], object]  # spin until the future is done or the seconds pass
FIRST_GAP_S = 0.25  # the first resend; each next one waits twice as long
MAX_GAP_S = 2.0
SLICE_S = 0.05  # how often the pending requests are checked while spinning


def handshake(client: Client, make_request: Callable[[], Any], spin: Spin,
              timeout: float) -> bool:
    """True once the service has answered one of the requests ``make_request`` builds; False
    when ``timeout`` seconds pass first. Earlier requests stay pending while new ones are sent
    (a slow answer counts as much as a fast one); what is still pending at the end is dropped."""
    deadline = time.monotonic() + timeout
    pending: list[Future] = []
    gap = FIRST_GAP_S
    try:
        while time.monotonic() < deadline:
            pending.append(client.call_async(make_request()))
            resend_at = min(time.monotonic() + gap, deadline)
            while time.monotonic() < resend_at:
                spin(pending[-1], SLICE_S)
                if any(f.done() for f in pending):
                    return True
            gap = min(2 * gap, MAX_GAP_S)
        return False
    finally:
        for future in pending:
            if not future.done():
                client.remove_pending_request(future)


def node_spin(node: Any) -> Spin:
    """A ``Spin`` on rclpy's global executor for one node."""
    import rclpy

    return lambda future, seconds: rclpy.spin_until_future_complete(node, future,
                                                                    timeout_sec=seconds)
