"""spartan_node: the vehicle's visual memory as a managed (lifecycle) ROS 2 node.

configure:  validate the parameters, load the ONNX model, open the memory file
activate:   subscribe to the camera and odometry, start the encoder thread, serve ~/query,
            publish /diagnostics and ~/matches
deactivate: stop ingest and the service; cleanup: close the memory and unload the model.
With autostart (default) the node walks itself to active, so plain `ros2 run` works.

All the work is in ``spartan_ros.memory.service.MemoryService``; this file only moves messages.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
from rclpy.subscription import Subscription
from rclpy.task import Future
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image
from spartan_interfaces.srv import QuerySegments
from visualization_msgs.msg import MarkerArray

from spartan_ros.ingest.images import ImageError, decode_compressed, image_view, to_rgb
from spartan_ros.ingest.messages import odometry_fields, stamp_to_ns
from spartan_ros.memory.service import IngestWorker, MemoryService, ServiceConfig
from spartan_ros.memory.store import MemoryFileError, SegmentStore
from spartan_ros.node import parameters as params
from spartan_ros.node.conversions import match_to_msg, query_from_request
from spartan_ros.node.diagnostics import InputWatch, diagnostic_array
from spartan_ros.node.markers import matches_markers
from spartan_ros.node.qos import ODOMETRY_DEPTH, input_qos, qos_text
from spartan_ros.query import QueryError, validate_query

# Latched, so RViz started after a query still shows its answer.
MATCHES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
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
        max_segments=int(values["max_segments"]),
        default_top_k=int(values["default_top_k"]),
    )


def open_memory(values: dict[str, Any], logger: Any) -> MemoryService:
    """Load the model and open the memory file; ConfigError with one readable line if not."""
    model_dir = os.path.expanduser(values["model_dir"])
    if not os.path.isdir(model_dir):
        what = "is not a directory" if os.path.exists(model_dir) else "does not exist"
        raise ConfigError(f"model_dir {model_dir!r} {what}: export a model with "
                          "`spartan-export CHECKPOINT OUT_DIR` and point model_dir at OUT_DIR")
    from spartan_ros.runtime.engine import Engine, ModelLoadError  # onnxruntime: load lazily

    try:
        engine = Engine(model_dir, providers=tuple(values["execution_providers"]), logger=logger)
    except ModelLoadError as exc:
        raise ConfigError(f"cannot load the model in {model_dir}: {exc}") from exc
    try:
        store = SegmentStore(values["memory_path"] or None, engine.model_hash, engine.embed_dim,
                             head=engine.fusion_head,
                             synchronous=values.get("memory_synchronous", "full"))
    except MemoryFileError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        return MemoryService(engine, store, service_config(values), log=logger)
    except ValueError as exc:
        store.close()
        raise ConfigError(str(exc)) from exc


# Queries computed at once. A query is bounded work (one text encoding, one scan); more workers
# than cores only slow each other and ingest down.
QUERY_WORKERS = 2


def _lower_priority() -> None:
    """Query threads yield the CPU to ingest when both want it (a starved computer keeps
    storing what the camera sees; a query answers a little later)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
    except (AttributeError, OSError):
        pass


def ingest_summary(counts: dict[str, int]) -> str:
    """One line of what ingest did since the node was configured (logged when it stops)."""
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped"))
    return (f"ingest stopped: {counts.get('frames received', 0)} frames received, "
            f"{counts.get('frames taken', 0)} taken, {dropped} dropped, "
            f"{counts.get('segments stored', 0)} segments stored, "
            f"{counts.get('segments failed', 0)} failed")


class SpartanNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("spartan", **kwargs)
        for spec in params.PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        # Images, odometry, queries and timers each in their own group: a slow query never delays
        # frames, and a burst of images never holds odometry back.
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._odom_group = MutuallyExclusiveCallbackGroup()  # odometry never waits behind images
        self._query_group = ReentrantCallbackGroup()  # queries run side by side
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)  # runs without /clock too
        self.memory: MemoryService | None = None
        self._worker: IngestWorker | None = None
        self._values: dict[str, Any] = {}
        self._entities: list[Any] = []  # subscriptions, timers, publishers, service of "active"
        self._matches_pub: Any = None
        self._diag_pub: Any = None
        self._watches: list[InputWatch] = []
        self._warned: dict[str, float] = {}
        self._active = False
        self._auto_qos: set[int] = set()  # reliable inputs that turn best effort if need be
        # ~/query and the publishers live as long as the node: destroying a service while its
        # callback runs crashes the response (InvalidHandle). While not active it refuses.
        self._queries = 0  # in flight; cleanup waits for them before it closes the memory
        self._query_pool = ThreadPoolExecutor(QUERY_WORKERS, thread_name_prefix="spartan-query",
                                              initializer=_lower_priority)
        self._queries_done = threading.Condition()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._matches_pub = self.create_publisher(MarkerArray, "~/matches", MATCHES_QOS)
        self._service = self.create_service(QuerySegments, "~/query", self._on_query,
                                            callback_group=self._query_group)

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
            problems = params.validate(values)
            if problems:
                raise ConfigError("bad parameter: " + "; ".join(problems))
            if values["model_dir"]:
                self.memory = open_memory(values, python_logger(self.get_logger()))
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
                f"configured: model {engine.model_hash[:12]} (embed_dim {engine.embed_dim}, "
                f"providers {', '.join(getattr(engine, 'providers', []))}), memory "
                f"{'RAM only' if store.in_memory else store.path} with {len(store)} segments")
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
            self._worker = IngestWorker(self.memory)
            self._worker.start()
        self._entities.append(self.create_timer(v["diagnostics_period_s"], self._on_diagnostics,
                                                self._timer_group, clock=self._steady))
        self._entities.append(self.create_timer(0.5, self._on_watch, self._timer_group,
                                                clock=self._steady))
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
        sub = self.create_subscription(
            msg_type, topic, callback, qos, callback_group=group,
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
        self._active = False
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
            if self.memory is not None:  # frames already taken are stored; the stream ends here
                self.memory.flush()
                self.memory.end_stream()
                self.get_logger().info(ingest_summary(self.memory.stats()["counts"]))
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

    def _release(self) -> None:
        """Stop everything and close the memory (any state; also at exit)."""
        self._stop_active()
        with self._queries_done:  # queries are bounded work: let the ones in flight finish
            if not self._queries_done.wait_for(lambda: self._queries == 0, timeout=30.0):
                self.get_logger().warning(f"closing the memory with {self._queries} queries "
                                          "still running")
        if self.memory is not None:
            self.memory.store.close()
            self.memory = None

    # -- ingest -------------------------------------------------------------------------------
    def _ingesting(self, watch: int) -> MemoryService | None:
        """The memory to feed, or None while deactivating (a callback may still be running)."""
        memory, watches = self.memory, self._watches
        if memory is None or not self._active or len(watches) <= watch:
            return None
        watches[watch].seen(time.monotonic())
        return memory

    def _on_image(self, msg: Image) -> None:
        memory = self._ingesting(0)
        if memory is None:
            return
        try:
            pixels, encoding = image_view(msg)  # header checks only; converted in the worker
        except ImageError as exc:
            memory.reject_frame("malformed image", f"{exc}")
            return
        memory.add_frame(stamp_to_ns(msg.header.stamp),
                         functools.partial(to_rgb, pixels, encoding))

    def _on_compressed(self, msg: CompressedImage) -> None:
        memory = self._ingesting(0)
        if memory is not None:  # decoded in the worker
            memory.add_frame(stamp_to_ns(msg.header.stamp),
                             functools.partial(decode_compressed, msg.data))

    def _on_odometry(self, msg: Odometry) -> None:
        memory = self._ingesting(1)
        if memory is not None:
            memory.add_odometry(*odometry_fields(msg))

    # -- service ------------------------------------------------------------------------------
    async def _on_query(self, request: QuerySegments.Request,
                        response: QuerySegments.Response) -> QuerySegments.Response:
        with self._queries_done:
            if not self._active:
                response.success = False
                response.message = ("the node is not active: queries are answered again "
                                    "once it is activated")
                return response
            self._queries += 1
        try:
            # The work runs in the query pool, so the executor's threads stay free for frames
            # and odometry however many planners ask at once.
            answered: Future = Future(executor=self.executor)

            def work() -> None:
                try:
                    answered.set_result(self._answer(request, response))
                except Exception as exc:  # handed to the awaiting callback
                    answered.set_exception(exc)

            self._query_pool.submit(work)
            return await answered
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
        response.message = f"{len(result.matches)} of {result.candidates} candidates"
        response.candidates = int(result.candidates)
        response.segments = [match_to_msg(m) for m in result.matches]
        pub = self._matches_pub
        if pub is not None and self.get_parameter("publish_matches").value:
            pub.publish(matches_markers(result.matches, self.get_clock().now().to_msg()))
        return response

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
            info["provider"] = ", ".join(getattr(engine, "providers", []))
            stats = self.memory.stats()
        pub.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                     self.get_fully_qualified_name(), stats,
                                     self._input_problems(), info))


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = SpartanNode()
    code = 0
    try:
        if not node.autostart():
            code = 1  # on_configure / on_activate logged the one line saying why
        else:
            executor = MultiThreadedExecutor(num_threads=5)
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._release()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
