"""SIGINT / SIGTERM as a request to stop, instead of an exception or rclpy's shutdown.

A ROS process that lets rclpy handle Ctrl-C has its context shut down under its threads (one
sending a request or a response at that moment can hang inside DDS), and one that lets Python
raise KeyboardInterrupt loses what it was writing. Under ``ros2 launch`` the signal also comes
twice (from the terminal and from launch). So the node, ``spartan-bag play`` and the query load
generator only note the signal here and stop at a point of their own choosing, once; they start
rclpy with ``signal_handler_options=SignalHandlerOptions.NO``.
"""

from __future__ import annotations

import signal
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Installs the handlers when created; ``restore()`` (or leaving a ``with`` block) puts the
    previous ones back. Install from the main thread."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first stop signal
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
