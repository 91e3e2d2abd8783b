"""QoS of the node's camera and odometry subscriptions.

Reliable where the publisher allows it: a best-effort reader loses every sample the DDS transport
drops (a full shared-memory queue while the machine is busy, a burst after a pause) and nobody
notices; a reliable reader gets them repaired from the publisher's history. A reliable
subscription does not match a best-effort publisher, so ``input_reliability: auto`` starts
reliable and, when a best-effort publisher shows up on the topic, subscribes again best effort
and says so. The history is deep so that a stall of the executor (CPU
starvation on a busy vehicle computer) is absorbed instead of overwriting unread frames.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY_CHOICES = ("auto", "reliable", "best_effort")
ODOMETRY_DEPTH = 200  # 4 s of 50 Hz odometry; a sample is ~700 bytes


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last ``depth``, volatile; reliable unless ``reliability`` is "best_effort"."""
    policy = (ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
              else ReliabilityPolicy.RELIABLE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def qos_text(qos: QoSProfile) -> str:
    rel = "best effort" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable"
    return f"{rel}, keep last {qos.depth}"
