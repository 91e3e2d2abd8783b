"""spartan_node: the vehicle's visual memory as a managed (lifecycle) ROS 2 node.

configure:  validate the parameters, load the ONNX model, open the memory file
activate:   subscribe to the camera and odometry, start the encoder thread, serve ~/query,
            publish /diagnostics and ~/matches
deactivate: stop ingest and the service; cleanup: close the memory and unload the model.
With autostart (default) the node walks itself to active, so plain `ros2 run` works.

All the work is in ``spartan_ros.memory.service.MemoryService``; this file only moves messages.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.publisher import Publisher
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.service import Service
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image
from spartan_interfaces.msg import Segment
from spartan_interfaces.srv import QuerySegments
from visualization_msgs.msg import MarkerArray

from spartan_ros.ingest.cdr import compressed_fields, image_fields
from spartan_ros.ingest.images import ImageError, decode_compressed, image_view, to_rgb
from spartan_ros.ingest.messages import odometry_fields
from spartan_ros.memory.backend import MemoryBackend
from spartan_ros.memory.service import IngestWorker, MemoryService, ServiceConfig
from spartan_ros.memory.store import MemoryFileError, SegmentStore
from spartan_ros.node import parameters as params
from spartan_ros.node.conversions import PathCache, match_to_msg, query_from_request
from spartan_ros.node.diagnostics import CallbackTimes, InputWatch, diagnostic_array
from spartan_ros.node.markers import matches_markers
from spartan_ros.node.qos import ODOMETRY_DEPTH, QUERY_QOS, input_qos, qos_text
from spartan_ros.query import QueryError, validate_query
from spartan_ros.stop_signals import StopSignals
from spartan_ros.tokenizer import get_tokenizer

# Latched, so RViz started after a query still shows its answer.
MATCHES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# How often main() looks for SIGINT / SIGTERM while the executor spins in its thread.
_SIGNAL_POLL_S = 0.1
# Leave the ROS teardown (destroying entities, rclpy shutdown) after this long; `ros2 launch`
# escalates to SIGKILL 10 s after its SIGINT.
_TEARDOWN_TIMEOUT_S = 2.0
# Every stored segment, once committed: reliable, and the last 100 kept for late subscribers
# (a transient-local subscriber gets them on joining; a volatile one only what follows).
SEGMENTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ConfigError(RuntimeError):
    """Configuration failed; the message is the one line the user sees."""


class _ToRos(logging.Handler):
    """Forwards Python logging (engine, memory service) to the node's rclpy logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self.ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.ros.error(msg)
        elif record.levelno >= logging.WARNING:
            self.ros.warning(msg)
        elif record.levelno >= logging.INFO:
            self.ros.info(msg)
        else:
            self.ros.debug(msg)


def python_logger(ros_logger: Any) -> logging.Logger:
    log = logging.getLogger("spartan_ros.node")
    log.handlers = [_ToRos(ros_logger)]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _descriptor(spec: params.ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.min_value is not None and spec.max_value is not None:
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(spec.min_value),
                                            to_value=int(spec.max_value), step=1)]
        elif isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value),
                                                         to_value=float(spec.max_value))]
    elif spec.min_value is not None:
        d.additional_constraints = f">= {spec.min_value}"
    return d


def service_config(values: dict[str, Any]) -> ServiceConfig:
    return ServiceConfig(
        sample_rate_hz=float(values["sample_rate_hz"]),
        window_frames=int(values["window_frames"]),
        stride_frames=int(values["stride_frames"]),
        max_pose_gap_s=float(values["max_pose_gap_s"]),
        max_pending_frames=int(values["max_pending_frames"]),
        encode_batch_size=int(values["encode_batch_size"]),
        encode_every=int(values["encode_every"]),
        max_segments=int(values["max_segments"]),
        default_top_k=int(values["default_top_k"]),
        trajectory_speed=float(values["trajectory_speed"]),
    )


def check_precision(model_dir: str, precision: str) -> None:
    """ConfigError in one line when the export in ``model_dir`` has no ``precision`` graphs."""
    from spartan_ros.runtime.engine import read_model_json  # onnxruntime: load lazily

    exported = sorted(read_model_json(model_dir)["graphs"])
    if precision not in exported:
        flag = {"float16": "--fp16", "int8": "--int8"}.get(precision, "")
        raise ConfigError(f"precision {precision!r} is not in the export in {model_dir} (it has "
                          f"{', '.join(exported)}): set precision to one of those, or re-export "
                          f"with `spartan-export {flag}`")


def open_memory(values: dict[str, Any], logger: Any) -> MemoryService:
    """Load the model and open the memory file; ConfigError with one readable line if not."""
    model_dir = os.path.expanduser(values["model_dir"])
    if not os.path.isdir(model_dir):
        what = "is not a directory" if os.path.exists(model_dir) else "does not exist"
        raise ConfigError(f"model_dir {model_dir!r} {what}: export a model with "
                          "`spartan-export CHECKPOINT OUT_DIR` and point model_dir at OUT_DIR")
    from spartan_ros.runtime.engine import Engine, ModelLoadError  # onnxruntime: load lazily

    precision = str(values["precision"])
    try:
        check_precision(model_dir, precision)
        engine = Engine(model_dir, providers=tuple(values["execution_providers"]), logger=logger,
                        precision=precision, text_threads=QUERY_TEXT_THREADS)
    except ModelLoadError as exc:
        raise ConfigError(f"cannot load the model in {model_dir}: {exc}") from exc
    try:  # queries need it: fail now, not at the first query
        get_tokenizer()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the text tokenizer: {exc}") from exc
    try:
        store = open_store(values, engine)
    except (MemoryFileError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from exc
    try:
        return MemoryService(engine, store, service_config(values), log=logger,
                             wall_clock=time.monotonic)
    except ValueError as exc:
        store.close()
        raise ConfigError(str(exc)) from exc


def open_store(values: dict[str, Any], engine: Any) -> MemoryBackend:
    """The segment store the parameters name (memory_backend)."""
    vehicle = str(values["vehicle_id"])
    if values["memory_backend"] == "milvus":
        from spartan_ros.fleet.link import connection
        from spartan_ros.memory.milvus_store import MilvusSegmentStore

        return MilvusSegmentStore(connection(values, "milvus_uri"), engine.model_hash,
                                  engine.embed_dim, head=engine.fusion_head, vehicle_id=vehicle)
    return SegmentStore(values["memory_path"] or None, engine.model_hash, engine.embed_dim,
                        head=engine.fusion_head, vehicle_id=vehicle,
                        precision=str(values["precision"]),
                        synchronous=str(values["memory_synchronous"]))


def link_fleet(values: dict[str, Any], memory: MemoryService, logger: Any) -> Any:
    """Start mirroring to fleet_uri (or stop queueing when it is empty); the link or None."""
    from spartan_ros.fleet.link import FleetLink, turn_off

    store = memory.store
    if not isinstance(store, SegmentStore) or store.in_memory:
        return None
    if not values["fleet_uri"]:
        turn_off(store.path, logger)
        return None
    engine = memory.engine
    link = FleetLink(values, store.path, engine.model_hash, engine.embed_dim,
                     engine.fusion_head, logger)
    memory.fleet = link.reader
    return link


# The signal that prints every thread's stack (see main).
STACKS_SIGNAL = signal.SIGUSR1
# How long a thread may hold Python's lock while others wait for it (seconds; see main).
GIL_SWITCH_INTERVAL_S = 0.001
# The newest answer's markers go out at most this often (seconds).
MATCHES_PERIOD_S = 0.2
# Queries computed at once. A query is bounded work (one text encoding, one scan); more workers
# than cores only slow each other and ingest down.
QUERY_WORKERS = 2
# Executor threads: inputs, timers and lifecycle, plus threads that wait for queries in the pool.
EXECUTOR_THREADS = 10
# ONNX Runtime threads per text encoding: the query workers run side by side, one thread each,
# instead of sharing one pool while the encoder thread wants the same cores. The image session
# keeps ONNX Runtime's spinning threads: without them (spinning=False) each of the model's many
# small operators waits for its threads to wake, and on an idle 2-core machine the node encoded
# too slowly for the demo's drive at rate 2 (62 of 188 segments, against 188 with spinning).
QUERY_TEXT_THREADS = 1


def ingest_summary(counts: dict[str, int]) -> str:
    """One line of what ingest did since the node was configured (logged when it stops)."""
    drops = {k.removeprefix("dropped: "): v for k, v in counts.items() if k.startswith("dropped")}
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(drops.items()))
    return (f"ingest stopped: {counts.get('frames received', 0)} frames received, "
            f"{counts.get('frames taken', 0)} taken, {sum(drops.values())} dropped"
            f"{f' ({why})' if why else ''}, "
            f"{counts.get('segments stored', 0)} segments stored, "
            f"{counts.get('segments failed', 0)} failed")


class SpartanNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("spartan", **kwargs)
        self._parameter_problems: list[str] = []  # values refused at declaration
        for spec in params.PARAMETERS:
            self._declare(spec)
        # Images, odometry, queries and timers each in their own group: a slow query never delays
        # frames, and a burst of images never holds odometry back.
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._odom_group = MutuallyExclusiveCallbackGroup()  # odometry never waits behind images
        self._query_group = ReentrantCallbackGroup()  # queries run side by side
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)  # runs without /clock too
        self.memory: MemoryService | None = None
        self._fleet: Any = None  # fleet.link.FleetLink when fleet_uri is set
        self._worker: IngestWorker | None = None
        self._values: dict[str, Any] = {}
        self._entities: list[Any] = []  # subscriptions, timers, publishers, service of "active"
        self._matches_pub: Any = None
        self._last_matches: list[Any] | None = None  # newest answer whose markers are due
        self._paths = PathCache()  # path messages of recent answers
        self._diag_pub: Any = None
        self._watches: list[InputWatch] = []
        self._warned: dict[str, float] = {}
        self._image_times = CallbackTimes()  # how long the image callback holds the executor
        self._active = False
        self._auto_qos: set[int] = set()  # reliable inputs that turn best effort if need be
        # ~/query and the publishers live as long as the node: destroying a service while its
        # callback runs crashes the response (InvalidHandle). While not active it refuses.
        self._queries = 0  # in flight; cleanup waits for them before it closes the memory
        self._query_slots = threading.BoundedSemaphore(QUERY_WORKERS)
        self._queries_done = threading.Condition()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._matches_pub = self.create_publisher(MarkerArray, "~/matches", MATCHES_QOS)
        self._service = self.create_service(QuerySegments, "~/query", self._on_query,
                                            qos_profile=QUERY_QOS,
                                            callback_group=self._query_group)

    def _declare(self, spec: params.ParamSpec) -> None:
        """Declare one parameter; a value given on the command line or in a YAML file that its
        type or range refuses becomes one line for on_configure, not a traceback here."""
        try:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        except ParameterException as exc:
            given = getattr(self, "_parameter_overrides", {}).get(spec.name)
            lines = [] if given is None else params.validate({spec.name: given.value},
                                                             names=(spec.name,))
            self._parameter_problems += lines or [f"{spec.name}: {exc}"]
            self.declare_parameter(spec.name, spec.default, _descriptor(spec),
                                   ignore_override=True)

    def autostart(self) -> bool:
        """Walk to active if the autostart parameter says so; False when that failed."""
        if not self.get_parameter("autostart").value:
            self.get_logger().info("waiting for a lifecycle manager (autostart is false)")
            return True
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in params.PARAMETERS}

    # -- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self.values()
        try:
            problems = self._parameter_problems + params.validate(values)
            if problems:
                raise ConfigError("bad parameter: " + "; ".join(problems))
            if values["model_dir"]:
                self.memory = open_memory(values, python_logger(self.get_logger()))
                self._fleet = link_fleet(values, self.memory, python_logger(self.get_logger()))
        except ConfigError as exc:
            self.get_logger().error(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # one readable line, not a traceback
            self.get_logger().error(f"cannot configure: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._values = values
        if self.memory is None:
            self.get_logger().warning("no model_dir: ingest is off and queries answer "
                                      "'memory is empty'")
        else:
            engine, store = self.memory.engine, self.memory.store
            self.get_logger().info(
                f"configured: model {engine.model_hash[:12]} ({getattr(engine, 'precision', '?')}, "
                f"embed_dim {engine.embed_dim}, "
                f"providers {', '.join(getattr(engine, 'providers', []))}), memory "
                f"{store.describe()} with {len(store)} segments")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._start_active()
        except Exception as exc:  # e.g. an invalid topic name: one line, and nothing left over
            self._stop_active()
            self.get_logger().error(f"cannot activate: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        inputs = "" if not self._watches else (
            " ingesting " + " and ".join(f"{w.topic}" for w in self._watches) + ";")
        self.get_logger().info(f"active:{inputs} serving {self.resolve_service_name('~/query')}")
        return super().on_activate(state)

    def _start_active(self) -> None:
        v = self._values
        now = time.monotonic()
        self._watches, self._warned = [], {}
        if self.memory is not None:
            self._auto_qos.clear()
            reliability = v["input_reliability"]
            image_type = ("sensor_msgs/CompressedImage" if v["image_transport"] == "compressed"
                          else "sensor_msgs/Image")
            sub, image_qos = self._subscribe(0, reliability)
            odom, odom_qos = self._subscribe(1, reliability)
            self._watches = [
                InputWatch("image", sub.topic_name, image_type, qos_text(image_qos), now),
                InputWatch("odometry", odom.topic_name, "nav_msgs/Odometry", qos_text(odom_qos),
                           now),
            ]
            segments_pub = self.create_publisher(Segment, "~/segments", SEGMENTS_QOS)
            self._entities.append(segments_pub)
            self.memory.on_stored = lambda match: segments_pub.publish(match_to_msg(match))
            self._worker = IngestWorker(self.memory)
            self._worker.start()
        self._entities.append(self.create_timer(v["diagnostics_period_s"], self._on_diagnostics,
                                                self._timer_group, clock=self._steady))
        self._entities.append(self.create_timer(0.5, self._on_watch, self._timer_group,
                                                clock=self._steady))
        self._entities.append(self.create_timer(MATCHES_PERIOD_S, self._on_matches_timer,
                                                self._timer_group, clock=self._steady))
        self._active = True

    def _subscribe(self, watch: int, reliability: str) -> tuple[Subscription, QoSProfile]:
        """The image (watch 0) or odometry (1) subscription; with "auto", a best-effort
        publisher makes ``_on_watch`` subscribe again best effort."""
        v = self._values
        if watch == 1:
            spec: tuple[Any, ...] = (Odometry, v["odom_topic"], self._on_odometry,
                                     self._odom_group, ODOMETRY_DEPTH)
        elif v["image_transport"] == "compressed":
            spec = (CompressedImage, v["image_topic"].rstrip("/") + "/compressed",
                    self._on_compressed, self._image_group, v["image_queue_depth"])
        else:
            spec = (Image, v["image_topic"], self._on_image, self._image_group,
                    v["image_queue_depth"])
        msg_type, topic, callback, group, depth = spec
        qos = input_qos(reliability, depth)
        # No QoS event handlers: rclpy's executor crashes (InvalidHandle) when one is destroyed
        # while it builds its wait set, as at every deactivation. _on_watch checks the QoS of
        # the publishers instead.
        # Images arrive as their serialized bytes (raw=True): the callback reads the stamp and
        # the header fields and views the pixels in place; only frames the sampler takes are
        # ever converted or decoded, in the encoder thread.
        sub = self.create_subscription(
            msg_type, topic, callback, qos, callback_group=group, raw=watch == 0,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
        self._entities.append(sub)
        if reliability == "auto":
            self._auto_qos.add(watch)
        return sub, qos

    def _best_effort_again(self, watch: int) -> None:
        old = next(e for e in self._entities if isinstance(e, Subscription)
                   and e.topic_name == self._watches[watch].topic)
        self._entities.remove(old)
        self.destroy_subscription(old)
        _, qos = self._subscribe(watch, "best_effort")
        self._watches[watch].qos = qos_text(qos)
        self.get_logger().warning(
            f"a best-effort publisher on {self._watches[watch].topic}: subscribed best effort "
            "instead of reliable, so samples the transport drops under load are lost; publish "
            "reliable, or set input_reliability to best_effort to say this is intended")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_active()
        self.get_logger().info("inactive: ingest and ~/query stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: memory closed, model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_active(self) -> None:
        self._stop_ingest()
        for entity in self._entities:
            self._destroy(entity)
        self._entities, self._watches = [], []

    def _destroy(self, entity: Any) -> None:
        if isinstance(entity, Subscription):
            self.destroy_subscription(entity)
        elif isinstance(entity, Timer):
            self.destroy_timer(entity)
        elif isinstance(entity, Publisher):
            self.destroy_publisher(entity)
        elif isinstance(entity, Service):
            self.destroy_service(entity)

    def _stop_ingest(self) -> None:
        self._active = False
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
            if self.memory is not None:  # frames already taken are stored; the stream ends here
                self.memory.flush()
                self.memory.end_stream()
                self.get_logger().info(ingest_summary(self.memory.stats()["counts"]))
        if self.memory is not None:
            self.memory.on_stored = None  # ~/segments goes away with the other entities

    def close_memory(self) -> None:
        """Stop ingest, store the frames already taken, let queries in flight finish and close
        the memory file."""
        self._stop_ingest()
        with self._queries_done:  # queries are bounded work: let the ones in flight finish
            if not self._queries_done.wait_for(lambda: self._queries == 0, timeout=30.0):
                self.get_logger().warning(f"closing the memory with {self._queries} queries "
                                          "still running")
        if self._fleet is not None:  # the mirror reads the memory file's outbox: stop it first
            self._fleet.close()
            self._fleet = None
        memory, self.memory = self.memory, None
        if memory is not None:
            memory.store.close()

    def _release(self) -> None:
        """Stop everything and close the memory (any state; also at exit). The memory goes
        first: it is what must survive, whatever the middleware does while tearing down."""
        self.close_memory()
        self._stop_active()

    # -- ingest -------------------------------------------------------------------------------
    def _ingesting(self, watch: int) -> MemoryService | None:
        """The memory to feed, or None while deactivating (a callback may still be running)."""
        memory, watches = self.memory, self._watches
        if memory is None or not self._active or len(watches) <= watch:
            return None
        watches[watch].seen(time.monotonic())
        return memory

    def _on_image(self, raw: bytes) -> None:
        t0 = time.perf_counter()
        memory = self._ingesting(0)
        if memory is None:
            return
        try:
            msg = image_fields(raw)
            pixels, encoding = image_view(msg)  # header checks only; converted in the worker
        except ImageError as exc:
            memory.reject_frame("malformed image", f"{exc}")
            return
        memory.add_frame(msg.stamp_ns, functools.partial(to_rgb, pixels, encoding))
        self._image_times.add(time.perf_counter() - t0)

    def _on_compressed(self, raw: bytes) -> None:
        t0 = time.perf_counter()
        memory = self._ingesting(0)
        if memory is None:
            return
        try:
            msg = compressed_fields(raw)
        except ImageError as exc:
            memory.reject_frame("malformed image", f"{exc}")
            return
        # decoded in the worker, and only when the sampler takes the frame
        memory.add_frame(msg.stamp_ns, functools.partial(decode_compressed, msg.data))
        self._image_times.add(time.perf_counter() - t0)

    def _on_odometry(self, msg: Odometry) -> None:
        memory = self._ingesting(1)
        if memory is not None:
            memory.add_odometry(*odometry_fields(msg))

    # -- service ------------------------------------------------------------------------------
    def _on_query(self, request: QuerySegments.Request,
                  response: QuerySegments.Response) -> QuerySegments.Response:
        with self._queries_done:
            if not self._active:
                response.success = False
                response.message = ("the node is not active: queries are answered again "
                                    "once it is activated")
                return response
            self._queries += 1
        try:
            # QUERY_WORKERS answers are computed at a time, each in the executor thread that
            # took its request (no hand-off: each one costs a wait for Python's lock). The
            # executor has threads to spare, so frames and odometry keep flowing while
            # queries wait for a slot.
            with self._query_slots:
                return self._answer(request, response)
        finally:
            with self._queries_done:
                self._queries -= 1
                self._queries_done.notify_all()

    def _answer(self, request: QuerySegments.Request,
                response: QuerySegments.Response) -> QuerySegments.Response:
        try:
            query = query_from_request(request)
            if query.top_k == 0:
                query.top_k = int(self.get_parameter("default_top_k").value)
            if query.trajectory_speed == 0:
                query.trajectory_speed = float(self.get_parameter("trajectory_speed").value)
            if self.memory is None:
                validate_query(query)
                raise QueryError("memory is empty")
            result = self.memory.query(query)
        except QueryError as exc:
            response.success, response.message = False, str(exc)
            return response
        except Exception as exc:  # never let a request take the node down
            self.get_logger().error(f"query {request.text!r} failed: {type(exc).__name__}: {exc}")
            response.success = False
            response.message = f"internal error: {type(exc).__name__}: {exc}"
            return response
        response.success = True
        response.message = "; ".join([f"{len(result.matches)} of {result.candidates} candidates",
                                      *result.notes])
        response.candidates = int(result.candidates)
        response.segments = [match_to_msg(m, self._paths) for m in result.matches]
        if self.get_parameter("publish_matches").value:
            self._last_matches = result.matches  # the markers timer publishes the newest
        return response

    def _on_matches_timer(self) -> None:
        # Markers cost as much as the answer itself: built for the newest answer only, a few
        # times a second, not for every one of many planners' queries.
        matches, self._last_matches = self._last_matches, None
        pub = self._matches_pub
        if matches is not None and pub is not None:
            pub.publish(matches_markers(matches, self.get_clock().now().to_msg()))

    # -- visibility ---------------------------------------------------------------------------
    def _input_problems(self) -> list[str]:
        timeout = float(self.get_parameter("input_timeout_s").value)
        now = time.monotonic()
        problems = []
        for w in self._watches:
            p = w.problem(now, timeout, self.count_publishers(w.topic))
            if p is not None:
                problems.append(p)
        return problems

    def _on_watch(self) -> None:
        if not self._active:
            return
        for watch in sorted(self._auto_qos):
            if any(info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                   for info in self.get_publishers_info_by_topic(self._watches[watch].topic)):
                self._auto_qos.discard(watch)
                self._best_effort_again(watch)
        timeout = float(self.get_parameter("input_timeout_s").value)
        now = time.monotonic()
        for problem in self._input_problems():
            key = problem.split(" (", 1)[0].split(" for ")[0]  # "no image on /topic"
            if now - self._warned.get(key, -1e18) >= timeout:
                self._warned[key] = now
                self.get_logger().warning(problem)

    def _on_diagnostics(self) -> None:
        pub = self._diag_pub
        if pub is None:
            return
        info: dict[str, Any] = {"state": "active" if self._active else "inactive",
                                "memory_path": self._values.get("memory_path", "")}
        stats = None
        if self.memory is not None:
            engine = self.memory.engine
            info["model"] = engine.model_hash
            info["precision"] = str(getattr(engine, "precision", ""))
            info["provider"] = ", ".join(getattr(engine, "providers", []))
            stats = self.memory.stats()
        if self._fleet is not None:
            info["fleet"] = self._fleet.stats()
        pub.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                     self.get_fully_qualified_name(), stats,
                                     self._input_problems(), info,
                                     self._image_times.percentiles_ms()))


def _spin(executor: MultiThreadedExecutor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:  # the context was shut down from elsewhere
        pass


def main(args: list[str] | None = None) -> int:
    # A thread waiting for Python's lock gets it after at most this long (default 5 ms): a
    # query's few short steps each wait behind the encoder's Python work, and at 5 ms a turn
    # those waits made the slowest answers several times slower under load.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Ctrl-C under `ros2 launch` comes twice; an exception in the middle of the shutdown would
    # lose the last frames: the signal only asks, and the loop below stops once.
    stop = StopSignals()
    # `kill -USR1 <pid>` prints every thread's Python stack to the log and the node goes on:
    # for a node that stops answering or ingesting, it shows where each thread waits.
    faulthandler.register(STACKS_SIGNAL, all_threads=True, chain=False)
    node = SpartanNode()
    code = 0
    try:
        if not node.autostart():
            code = 1  # on_configure / on_activate logged the one line saying why
        elif not stop.requested:
            executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
            executor.add_node(node)
            spinner = threading.Thread(target=_spin, args=(executor,), name="spartan-executor",
                                       daemon=True)
            spinner.start()
            while not stop.requested and spinner.is_alive():
                spinner.join(_SIGNAL_POLL_S)
            executor.shutdown()  # waits for running callbacks; no new ones start
            spinner.join()
    finally:
        if stop.received is not None:
            node.get_logger().info(f"{signal.Signals(stop.received).name}: storing the last "
                                   "frames and closing the memory")
        node.close_memory()
        # Fast DDS can deadlock deleting a reader while it drops a vanished remote participant
        # (seen once under `ros2 launch`): with the memory closed, never hang on the teardown.
        watchdog = threading.Timer(_TEARDOWN_TIMEOUT_S, _teardown_stuck, args=(code,))
        watchdog.daemon = True
        watchdog.start()
        faulthandler.dump_traceback_later(2 * _TEARDOWN_TIMEOUT_S, exit=True)  # if the GIL is held
        node._release()
        node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
        faulthandler.unregister(STACKS_SIGNAL)
        watchdog.cancel()
        stop.restore()
    return code


def _teardown_stuck(code: int) -> None:
    print(f"spartan_node: the ROS middleware did not shut down within {_TEARDOWN_TIMEOUT_S} s; "
          "the memory is closed, exiting", file=sys.stderr, flush=True)
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
