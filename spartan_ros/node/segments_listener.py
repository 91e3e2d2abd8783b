"""Follow a spartan node's memory as it grows: one line per segment published on ~/segments.

python -m spartan_ros.node.segments_listener                 # every segment, until Ctrl-C
python -m spartan_ros.node.segments_listener --count 10 --json

The node publishes each segment once its SQLite commit returned, so a segment printed here
survives a crash of the node. The subscription is transient-local: on joining it also receives
the last 100 segments stored before (``--new-only`` skips them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from spartan_interfaces.msg import Segment

from spartan_ros.ingest.messages import stamp_to_ns


def segment_to_dict(seg: Segment) -> dict:
    p = seg.start_pose.pose.position
    return {"id": int(seg.id), "start_ns": stamp_to_ns(seg.start), "end_ns": stamp_to_ns(seg.end),
            "frame_count": int(seg.frame_count), "frame_id": seg.path.header.frame_id,
            "poses": len(seg.path.poses), "start_position": [p.x, p.y, p.z],
            "distance": float(seg.distance)}


def format_segment(d: dict) -> str:
    x, y, z = d["start_position"]
    return (f"segment {d['id']}: t=[{d['start_ns'] * 1e-9:.2f}, {d['end_ns'] * 1e-9:.2f}] s, "
            f"{d['frame_count']} frames, {d['distance']:.1f} m from ({x:.1f}, {y:.1f}, {z:.1f}) "
            f"in {d['frame_id'] or '?'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", default="/spartan/segments")
    parser.add_argument("--count", type=int, default=0, help="exit after this many (0 = never)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="exit with code 4 when --count segments did not come within this "
                             "many seconds (0 = wait forever)")
    parser.add_argument("--new-only", action="store_true",
                        help="only segments stored after joining (volatile subscription)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)

    rclpy.init()
    node = rclpy.create_node("spartan_segments_listener")
    durability = (DurabilityPolicy.VOLATILE if args.new_only
                  else DurabilityPolicy.TRANSIENT_LOCAL)
    # KEEP_ALL: a burst of segments is never thinned out before this process takes it.
    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                     durability=durability)
    seen = 0

    def on_segment(msg: Segment) -> None:
        nonlocal seen
        seen += 1
        d = segment_to_dict(msg)
        print(json.dumps(d) if args.json else format_segment(d), flush=True)

    node.create_subscription(Segment, args.topic, on_segment, qos)
    print(f"listening on {node.resolve_topic_name(args.topic)}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else float("inf")
    code = 0
    try:
        while rclpy.ok() and not (args.count and seen >= args.count):
            if time.monotonic() > deadline:
                print(f"{seen} of {args.count} segments after {args.timeout:g} s",
                      file=sys.stderr)
                code = 4
                break
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
