"""Helpers for tests that run real ROS 2 processes talking over DDS on loopback.

Every test gets its own ROS_DOMAIN_ID and localhost-only discovery, so parallel runs never see each
other; every process starts in its own session and the whole group is killed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from spartan_train.processes import (  # noqa: F401 - re-exported for tests
    Process,
    SegmentWatch,
    ros_env,
)

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def repo_build_lock() -> Iterator[None]:
    """Held while a test builds the package from the source tree (pip and colcon write build/
    and the egg-info there): with pytest -n, two such builds must not overlap."""
    tag = hashlib.sha1(bytes(REPO)).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"spartan-build-{tag}.lock"
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_node(tmp_path: Path, env: dict[str, str], *ros_args: str, name: str = "node") -> Process:
    args = [sys.executable, "-m", "spartan_ros.node.spartan_node", "--ros-args", *ros_args]
    return Process(args, env, tmp_path / f"{name}.log")


def node_params(model_dir: Path, memory: Path | str = "", **params: object) -> list[str]:
    """--ros-args for a node on a model (CPU only) and memory file, plus any parameters."""
    values: dict[str, object] = {"model_dir": str(model_dir), "memory_path": str(memory),
                                 "execution_providers": "[cpu]", **params}
    out = []
    for name, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        text = text or "''"  # YAML for the empty string (rcl rejects `name:=`)
        out += ["-p", f"{name}:={text}"]
    return out


def wait_idle(env: dict[str, str], timeout: float = 60.0) -> dict[str, dict[str, str]]:
    """Wait for a /diagnostics message saying no frame is waiting for the encoder; returns its
    statuses as {name suffix: {key: value}} (call after the publisher has finished)."""
    [msg] = run_helper(env, "echo", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray",
                       "--contains", '"key": "frames pending", "value": "0"',
                       "--timeout", str(timeout), timeout=timeout + 30)
    return diagnostics_values(msg)


def diagnostics_values(msg: dict) -> dict[str, dict[str, str]]:
    out = {}
    for status in msg["status"]:
        values = {kv["key"]: kv["value"] for kv in status["values"]}
        values["_level"] = str(status["level"][0])
        values["_message"] = status["message"]
        out[status["name"].rsplit(": ", 1)[-1]] = values
    return out


def watch_segments(tmp_path: Path, env: dict[str, str], name: str = "segments",
                   topic: str = "/spartan/segments") -> SegmentWatch:
    """A listener on the node's ~/segments (each segment published after its commit)."""
    return SegmentWatch(env, tmp_path / f"{name}.log", topic)


def stored_ids(log_text: str) -> list[int]:
    """Segment ids a node's finished log reports stored (it logs each after its commit). To wait
    for segments while a node runs, use ``watch_segments``."""
    return [int(line.split("stored segment ", 1)[1].split()[0])
            for line in log_text.splitlines() if "stored segment " in line]


def stored_count(diagnostics: dict[str, dict[str, str]]) -> int:
    """'segments stored' of an ingest status returned by ``wait_idle``."""
    return int(diagnostics["ingest"].get("segments stored", "0"))


def query(env: dict[str, str], text: str, *args: str, service: str = "/spartan/query",
          timeout: float = 60.0) -> dict:
    """Call the service from a separate client process; return the decoded answer."""
    cmd = [sys.executable, "-m", "spartan_ros.node.query_client", text, "--service", service,
           "--json", "--timeout", str(timeout), *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 30,
                         start_new_session=True)
    assert out.returncode == 0, f"client failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- a tiny exported model ----------------------------------------------------------------------

def tiny_model(base: Path, seed: int = 0, int8: bool = False) -> Path:
    """Export a random-weight `tiny` SPARTAN model once under ``base`` (reused when present);
    ``int8`` adds the dynamically quantised image graph."""
    out = Path(base) / (f"tiny{seed}-int8" if int8 else f"tiny{seed}")
    if (out / "model.json").exists():
        return out
    import torch
    from spartan_train.export.onnx_export import export_model
    from spartan_train.model import build_model, save_checkpoint

    torch.manual_seed(seed)
    model = build_model("tiny")
    checkpoint = save_checkpoint(model, Path(base) / f"checkpoint{seed}")
    export_model(checkpoint, out, model=model, int8=int8, log=lambda _line: None)
    return out


# -- a synthetic drive, shared by the publisher process and ROS-free tests -----------------------

START_NS = 1_700_000_000_000_000_000
VELOCITY = (5.0, 1.0, 0.0)  # m/s: straight line, so linear interpolation is exact
YAW = math.atan2(VELOCITY[1], VELOCITY[0])
QUAT = (0.0, 0.0, math.sin(YAW / 2), math.cos(YAW / 2))


def drive_position(stamp_ns: int, start_ns: int = START_NS) -> tuple[float, float, float]:
    t = (stamp_ns - start_ns) * 1e-9
    return (VELOCITY[0] * t, VELOCITY[1] * t, VELOCITY[2] * t)


def drive_image(index: int, width: int = 64, height: int = 48):
    """A frame whose content changes along the drive (a moving bar over a gradient)."""
    import numpy as np

    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    img[..., 1] = (index * 7) % 256
    col = (index * 3) % width
    img[:, col : col + 4, 2] = 255
    return img


# -- helper processes: `python test/ros_graph.py publish|echo|lifecycle|call ...` ---------------

def helper(env: dict[str, str], log: Path, *args: str) -> Process:
    """Start one of the helper commands below as its own process."""
    return Process([sys.executable, str(Path(__file__).resolve()), *args], env, log)


def run_helper(env: dict[str, str], *args: str, timeout: float = 90.0) -> list[dict]:
    """Run a helper to the end; its stdout lines are JSON objects."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                         capture_output=True, text=True, timeout=timeout, start_new_session=True)
    assert out.returncode == 0, f"helper {args[0]} failed ({out.returncode}):\n{out.stdout}\n" \
                                f"{out.stderr}"
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _wait_matched(node, pubs, timeout: float) -> None:
    import rclpy

    deadline = time.monotonic() + timeout
    while any(p.get_subscription_count() == 0 for p in pubs):
        if time.monotonic() > deadline:
            raise SystemExit("no subscriber appeared")
        rclpy.spin_once(node, timeout_sec=0.05)


def _publish(args) -> int:
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = rclpy.create_node("drive_publisher")
    image_type = CompressedImage if args.compressed else Image
    image_topic = args.image_topic + ("/compressed" if args.compressed else "")
    # Reliable like `spartan-bag play` and most camera drivers; --best-effort like the others.
    image_qos = qos_profile_sensor_data if args.best_effort else QoSProfile(depth=100)
    image_pub = node.create_publisher(image_type, image_topic, image_qos)
    odom_pub = node.create_publisher(Odometry, args.odom_topic, QoSProfile(depth=200))
    pubs = ([] if args.no_images else [image_pub]) + ([] if args.no_odom else [odom_pub])
    _wait_matched(node, pubs, 60.0)
    # The writer sees the node's reader before the node has matched this writer; best-effort
    # images sent in between are dropped by the reader, so give discovery a moment to finish.
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("publisher ready", flush=True)

    img_period = int(round(1e9 / args.image_hz))
    odom_period = int(round(1e9 / args.odom_hz))
    span = int(args.seconds * 1e9)
    bad_images: dict[int, list[str]] = {}
    nan_odom: set[int] = set()
    for item in args.bad:
        kind, _, at = item.partition("@")
        if kind == "nan_odom":
            nan_odom.add(int(round(float(at) * 1e9 / odom_period)))
        else:
            bad_images.setdefault(int(round(float(at) * 1e9 / img_period)), []).append(kind)

    def stamp(msg, ns):
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)

    def image_msg(i: int, ns: int, kind: str = ""):
        pixels = drive_image(i, args.width, args.height)
        if args.compressed:
            import io

            from PIL import Image as PILImage
            msg = CompressedImage(format="png")
            buf = io.BytesIO()
            PILImage.fromarray(pixels).save(buf, format="PNG")
            msg.data = buf.getvalue() if kind != "garbage" else b"not an image"
        else:
            msg = Image(height=args.height, width=args.width, encoding="rgb8",
                        step=3 * args.width)
            msg.data = pixels.tobytes()
            if kind == "step":
                msg.step = 2 * args.width
            elif kind == "length":
                msg.data = pixels.tobytes()[:-7]
            elif kind == "encoding":
                msg.encoding = "nv21"
        msg.header.frame_id = "camera"
        stamp(msg, ns)
        return msg

    def odom_msg(ns: int, nan: bool = False):
        msg = Odometry()
        msg.header.frame_id, msg.child_frame_id = args.frame_id, "base_link"
        stamp(msg, ns)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        p.x, p.y, p.z = drive_position(ns, args.start_ns)
        q.x, q.y, q.z, q.w = QUAT
        if nan:
            p.x = float("nan")
        return msg

    images = odoms = 0
    last_image_ns = 0
    lead = int(args.odom_lead * 1e9)
    for _loop in range(args.loops):
        wall0 = time.monotonic()
        i = j = 0
        while i * img_period <= span:
            now = int((time.monotonic() - wall0) * args.speed * 1e9)
            while not args.no_odom and j * odom_period <= min(now + lead, span + lead):
                odom_pub.publish(odom_msg(args.start_ns + j * odom_period, nan=j in nan_odom))
                odoms += 1
                j += 1
            while i * img_period <= min(now, span):
                ns = args.start_ns + i * img_period
                for kind in bad_images.get(i, []):
                    image_pub.publish(image_msg(i, ns, kind))
                if not (args.no_images or args.only_bad):
                    image_pub.publish(image_msg(i, ns))
                    images += 1
                    last_image_ns = ns
                i += 1
            time.sleep(0.005)
    from rclpy.duration import Duration

    for pub in pubs:  # reliable readers fetch what they have not acknowledged yet
        pub.wait_for_all_acked(Duration(seconds=5))
    print(json.dumps({"images": images, "odometry": odoms, "last_image_ns": last_image_ns,
                      "image_period_ns": img_period}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _to_plain(msg):
    """A ROS message as plain Python data (for JSON)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: _to_plain(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)) or type(msg).__name__ == "array":
        return [_to_plain(v) for v in msg]
    if isinstance(msg, bytes):
        return list(msg)
    if hasattr(msg, "tolist"):
        return msg.tolist()
    return msg


def _echo(args) -> int:
    import importlib

    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile

    pkg, _, name = args.type.replace("/msg/", "/").partition("/")
    msg_type = getattr(importlib.import_module(f"{pkg}.msg"), name)
    rclpy.init()
    node = rclpy.create_node("echo")
    qos = QoSProfile(depth=10)
    if args.transient_local:
        qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    got: list = []

    def on_msg(msg) -> None:
        text = json.dumps(_to_plain(msg))
        if args.contains is None or args.contains in text:
            got.append(text)

    node.create_subscription(msg_type, args.topic, on_msg, qos)
    deadline = time.monotonic() + args.timeout
    while len(got) < args.count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    for text in got[: args.count]:
        print(text, flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if len(got) >= args.count else 4


def _lifecycle(args) -> int:
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from spartan_ros.node.service_calls import handshake, node_spin

    rclpy.init()
    node = rclpy.create_node("lifecycle_client")
    change = node.create_client(ChangeState, f"{args.node}/change_state")
    get = node.create_client(GetState, f"{args.node}/get_state")
    known: set = set()  # clients whose first answer came back

    # Requests the node answers at once, changing nothing.
    harmless = {change: lambda: ChangeState.Request(transition=Transition(
        label="no such transition")), get: GetState.Request}

    def call(client, request):
        if not client.wait_for_service(timeout_sec=args.timeout):
            raise SystemExit(f"{client.srv_name} not available")
        if client not in known and not handshake(client, harmless[client], node_spin(node),
                                                 args.timeout):
            raise SystemExit(f"no answer from {client.srv_name}")
        known.add(client)
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if future.result() is None:
            raise SystemExit(f"no answer from {client.srv_name}")
        return future.result()

    import random

    rng = random.Random(args.seed)
    for name in args.transitions * args.repeat:
        req = ChangeState.Request()
        req.transition.id = getattr(Transition, f"TRANSITION_{name.upper()}")
        ok = call(change, req).success
        state = call(get, GetState.Request()).current_state.label
        print(json.dumps({"transition": name, "success": bool(ok), "state": state}), flush=True)
        if name == "activate" and args.hold > 0:  # stay active a while: ingest and queries run
            time.sleep(rng.uniform(0.0, args.hold))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _publishers(args) -> int:
    """The QoS of every publisher on a topic, once at least one is discovered."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("qos_probe")
    deadline = time.monotonic() + args.timeout
    infos = []
    while not infos and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        infos = node.get_publishers_info_by_topic(args.topic)
    for info in infos:
        qos = info.qos_profile
        print(json.dumps({"node": info.node_name, "type": info.topic_type,
                          "reliability": qos.reliability.name, "durability": qos.durability.name,
                          "history": qos.history.name, "depth": qos.depth}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if infos else 4


def _call(args) -> int:
    """Several QuerySegments requests (JSON list of request dicts) from one process."""
    import rclpy
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseStamped
    from spartan_interfaces.srv import QuerySegments

    from spartan_ros.node.conversions import ns_to_stamp
    from spartan_ros.node.qos import QUERY_QOS
    from spartan_ros.node.query_client import query_handshake, response_to_dict
    from spartan_ros.node.service_calls import node_spin

    rclpy.init()
    node = rclpy.create_node("query_batch_client")
    client = node.create_client(QuerySegments, args.service, qos_profile=QUERY_QOS)
    if not client.wait_for_service(timeout_sec=args.timeout):
        raise SystemExit(f"{args.service} not available")
    t0 = time.monotonic()
    if not query_handshake(client, node_spin(node), args.timeout):
        raise SystemExit(f"no answer from {args.service} to a refused request (handshake) in "
                         f"{time.monotonic() - t0:.1f} s")
    for spec in json.loads(args.requests):
        req = QuerySegments.Request(text=spec.get("text", ""), top_k=spec.get("top_k", 0),
                                    radius=float(spec.get("radius", 0.0)),
                                    min_score=float(spec.get("min_score", 0.0)),
                                    trajectory_speed=float(spec.get("trajectory_speed", 0.0)))
        req.since = ns_to_stamp(spec.get("since_ns", 0), Time)
        req.until = ns_to_stamp(spec.get("until_ns", 0), Time)
        req.near.x, req.near.y, req.near.z = (float(v) for v in spec.get("near", (0, 0, 0)))
        for row in spec.get("trajectory", []):
            ps = PoseStamped()
            ps.header.stamp = ns_to_stamp(int(round(row[0] * 1e9)), Time)
            p, q = ps.pose.position, ps.pose.orientation
            p.x, p.y, p.z, q.x, q.y, q.z, q.w = (float(v) for v in row[1:8])
            req.trajectory.append(ps)
        t0 = time.monotonic()
        future = client.call_async(req)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if future.result() is None:
            raise SystemExit(f"no answer from {args.service} in {time.monotonic() - t0:.1f} s "
                             "(after the handshake)")
        answer = response_to_dict(future.result())
        for seg, msg in zip(answer["segments"], future.result().segments, strict=True):
            seg["path_stamps_ns"] = [p.header.stamp.sec * 1_000_000_000 + p.header.stamp.nanosec
                                     for p in msg.path.poses]
            seg["path_frames"] = sorted({p.header.frame_id for p in msg.path.poses})
        print(json.dumps(answer), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _set_params(args) -> int:
    """SetParameters calls, one parameter each (JSON list of [name, value]); prints each result."""
    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from spartan_ros.node.service_calls import handshake, node_spin

    rclpy.init()
    node = rclpy.create_node("parameter_client")
    client = node.create_client(SetParameters, f"{args.node}/set_parameters")
    if not client.wait_for_service(timeout_sec=args.timeout):
        raise SystemExit(f"{client.srv_name} not available")
    # An empty request sets nothing.
    if not handshake(client, SetParameters.Request, node_spin(node), args.timeout):
        raise SystemExit(f"no answer from {client.srv_name}")
    for name, value in json.loads(args.values):
        value = float("nan") if value == "nan" else value
        msg = Parameter(name, value=value).to_parameter_msg()
        request = SetParameters.Request(parameters=[msg])
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if future.result() is None:
            raise SystemExit(f"no answer from {client.srv_name}")
        [result] = future.result().results
        print(json.dumps({"name": name, "successful": bool(result.successful),
                          "reason": result.reason}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _hammer(args) -> int:
    from bench.query_load import run_clients

    return run_clients(args.clients, args.seconds, args.service, args.top_k, args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="helper processes for the node tests")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="publish a synthetic drive (Image + Odometry)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--image-hz", type=float, default=20.0)
    p.add_argument("--odom-hz", type=float, default=50.0)
    p.add_argument("--odom-lead", type=float, default=0.1, help="odometry runs ahead (s)")
    p.add_argument("--speed", type=float, default=1.0, help="message time per wall second")
    p.add_argument("--start-ns", type=int, default=START_NS)
    p.add_argument("--loops", type=int, default=1, help="replay the drive (stamps go back)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=48)
    p.add_argument("--frame-id", default="odom")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--odom-topic", default="/odom")
    p.add_argument("--compressed", action="store_true")
    p.add_argument("--best-effort", action="store_true", help="publish images best effort")
    p.add_argument("--no-odom", action="store_true")
    p.add_argument("--no-images", action="store_true")
    p.add_argument("--bad", action="append", default=[], metavar="KIND@SECONDS",
                   help="step|length|encoding|garbage (an extra bad image), nan_odom")
    p.add_argument("--only-bad", action="store_true", help="publish no good images")
    e = sub.add_parser("echo", help="print messages of a topic as JSON lines")
    e.add_argument("topic")
    e.add_argument("type", help="e.g. diagnostic_msgs/msg/DiagnosticArray")
    e.add_argument("--count", type=int, default=1)
    e.add_argument("--contains", default=None, help="only messages whose JSON has this text")
    e.add_argument("--transient-local", action="store_true")
    e.add_argument("--timeout", type=float, default=30.0)
    lc = sub.add_parser("lifecycle", help="drive a lifecycle node with ChangeState")
    lc.add_argument("node", help="e.g. /spartan")
    lc.add_argument("transitions", nargs="+", help="configure activate deactivate cleanup ...")
    lc.add_argument("--timeout", type=float, default=30.0)
    lc.add_argument("--repeat", type=int, default=1, help="run the transitions this many times")
    lc.add_argument("--hold", type=float, default=0.0,
                    help="after each activate, stay active up to this many seconds (random)")
    lc.add_argument("--seed", type=int, default=0)
    h = sub.add_parser("hammer", help="concurrent query clients as fast as they can")
    h.add_argument("--clients", type=int, default=2)
    h.add_argument("--seconds", type=float, default=10.0)
    h.add_argument("--top-k", type=int, default=5)
    h.add_argument("--timeout", type=float, default=10.0, help="per call")
    h.add_argument("--service", default="/spartan/query")
    c = sub.add_parser("call", help="several QuerySegments requests from one process")
    c.add_argument("requests", help="JSON list of request dicts")
    c.add_argument("--service", default="/spartan/query")
    c.add_argument("--timeout", type=float, default=30.0)
    sp = sub.add_parser("set-params", help="set parameters of a node, one call each")
    sp.add_argument("node", help="e.g. /spartan")
    sp.add_argument("values", help='JSON list of [name, value] ("nan" for NaN)')
    sp.add_argument("--timeout", type=float, default=30.0)
    q = sub.add_parser("publishers", help="print the QoS of a topic's publishers")
    q.add_argument("topic")
    q.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    return {"publish": _publish, "echo": _echo, "lifecycle": _lifecycle, "call": _call,
            "set-params": _set_params, "publishers": _publishers,
            "hammer": _hammer}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
