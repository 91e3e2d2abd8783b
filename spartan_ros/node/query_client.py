"""spartan_query: ask a running spartan node a question from the command line.

spartan_query "the gas station where we turned left" --top-k 3
spartan_query "a red light" --since 1700000000 --near 10 20 0 --radius 30 --json
spartan_query "turning left at the lights" --trajectory left_turn.tum
spartan_query "a fallen tree by a crossing" --fleet --vehicle car7
spartan_query "turning left at the lights" --trajectory planned_path.tum --trajectory-speed 8

--trajectory reads a TUM file (one pose per line: t x y z qx qy qz qw; # starts a comment).
A path without timing (every t equal, e.g. 0) is timed by the node at --trajectory-speed m/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.client import Client
from spartan_interfaces.srv import QuerySegments

from spartan_ros.answers import format_answer, read_tum
from spartan_ros.ingest.messages import stamp_to_ns
from spartan_ros.node.conversions import ns_to_stamp
from spartan_ros.node.qos import QUERY_QOS
from spartan_ros.node.service_calls import Spin, handshake, node_spin


def query_handshake(client: Client, spin: Spin, timeout: float) -> bool:
    """``handshake`` for ~/query: an empty text is refused at once and searches nothing."""
    return handshake(client, QuerySegments.Request, spin, timeout)


def build_request(args: argparse.Namespace) -> QuerySegments.Request:
    req = QuerySegments.Request()
    req.text = args.text
    req.top_k = args.top_k
    req.since = ns_to_stamp(int(args.since * 1e9), Time)
    req.until = ns_to_stamp(int(args.until * 1e9), Time)
    if args.near is not None:
        req.near.x, req.near.y, req.near.z = args.near
    req.radius = args.radius
    req.min_score = args.min_score
    req.scope = QuerySegments.Request.SCOPE_FLEET if args.fleet else \
        QuerySegments.Request.SCOPE_VEHICLE
    req.vehicle_id = args.vehicle
    req.trajectory_speed = args.trajectory_speed
    for row in args.trajectory if args.trajectory is not None else []:
        ps = PoseStamped()
        ps.header.stamp = ns_to_stamp(int(round(row[0] * 1e9)), Time)
        p, q = ps.pose.position, ps.pose.orientation
        p.x, p.y, p.z, q.x, q.y, q.z, q.w = (float(v) for v in row[1:8])
        req.trajectory.append(ps)
    return req


def response_to_dict(res: QuerySegments.Response) -> dict:
    segments = []
    for s in res.segments:
        p = s.start_pose.pose.position
        segments.append({
            "id": int(s.id), "rank": int(s.rank), "score": float(s.score),
            "start_ns": stamp_to_ns(s.start), "end_ns": stamp_to_ns(s.end),
            "frame_count": int(s.frame_count), "frame_id": s.path.header.frame_id,
            "start_position": [p.x, p.y, p.z], "distance": float(s.distance),
            "path": [[q.pose.position.x, q.pose.position.y, q.pose.position.z]
                     for q in s.path.poses],
            "vehicle_id": s.vehicle_id,
        })
    return {"success": bool(res.success), "message": res.message,
            "candidates": int(res.candidates), "segments": segments}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--service", default="/spartan/query")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--since", type=float, default=0.0, help="seconds (stamp), 0 = unbounded")
    parser.add_argument("--until", type=float, default=0.0, help="seconds (stamp), 0 = unbounded")
    parser.add_argument("--near", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"))
    parser.add_argument("--radius", type=float, default=0.0)
    parser.add_argument("--min-score", type=float, default=0.0)
    parser.add_argument("--trajectory", type=read_tum, default=None, metavar="TUM_FILE",
                        help="motion to match (>= 2 poses); default: each segment's own")
    parser.add_argument("--fleet", action="store_true",
                        help="ask every vehicle's memory (the node's fleet_uri)")
    parser.add_argument("--vehicle", default="", help="only segments of this vehicle")
    parser.add_argument("--trajectory-speed", type=float, default=0.0, metavar="M_PER_S",
                        help="speed for a trajectory without stamps (0 = the node's default)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    args = parser.parse_args(argv)

    rclpy.init()
    node = rclpy.create_node("spartan_query_client")
    try:
        client: Client = node.create_client(QuerySegments, args.service, qos_profile=QUERY_QOS)
        deadline = time.monotonic() + args.timeout
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"service {args.service} not available after {args.timeout:.0f} s",
                  file=sys.stderr)
            return 2
        spin = node_spin(node)
        future = None
        if query_handshake(client, spin, deadline - time.monotonic()):
            future = client.call_async(build_request(args))
            spin(future, max(0.0, deadline - time.monotonic()))
        if future is None or not future.done() or future.result() is None:
            print(f"no answer from {args.service} within {args.timeout:.0f} s", file=sys.stderr)
            return 3
        answer = response_to_dict(future.result())
        print(json.dumps(answer) if args.json else format_answer(answer, args.text))
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
