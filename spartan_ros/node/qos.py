"""QoS of the node's camera and odometry subscriptions, and of ~/query.

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
# 10 s of 100 Hz odometry (a sample is ~700 bytes): after a stall of the node (CPU starvation),
# DDS hands over the backlog and its repairs faster than the executor takes them, and a
# keep-last reader history overwrites what it has not yet given to the callback.
ODOMETRY_DEPTH = 1000
# ~/query, for the service and for its clients. DDS sends every response to every client of the
# service, and each client keeps only its own when it takes them one by one; with the ROS
# default for services (keep last 10) a client's answer is pushed out unread by ten answers to
# the others (a fast caller, or the instant refusals while the node is inactive), and that call
# times out. A reply is small; a deep history costs memory only while replies wait to be taken.
QUERY_DEPTH = 1000
QUERY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=QUERY_DEPTH,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last ``depth``, volatile; reliable unless ``reliability`` is "best_effort"."""
    policy = (ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
              else ReliabilityPolicy.RELIABLE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def qos_text(qos: QoSProfile) -> str:
    rel = "best effort" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable"
    return f"{rel}, keep last {qos.depth}"
