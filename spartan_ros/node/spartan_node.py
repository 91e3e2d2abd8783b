"""spartan_node: the vehicle's visual memory as a managed (lifecycle) ROS 2 node.

configure: read and validate parameters (later: load the model, open the memory)
activate:  create the ~/query service (later: start ingest)
deactivate / cleanup: release them again.
With autostart (default) the node walks itself to active, so plain `ros2 run` works.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.service import Service
from spartan_interfaces.srv import QuerySegments

from spartan_ros.node import parameters as params
from spartan_ros.node.conversions import query_from_request
from spartan_ros.query import QueryError, validate_query


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


class SpartanNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("spartan", **kwargs)
        for spec in params.PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self._query_group = MutuallyExclusiveCallbackGroup()
        self._query_srv: Service | None = None
        self._memory_size = 0

    def autostart(self) -> bool:
        """Walk to active if the autostart parameter says so; False when configuring failed."""
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
        problems = params.validate(self.values())
        for p in problems:
            self.get_logger().error(f"bad parameter: {p}")
        if problems:
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._query_srv = self.create_service(
            QuerySegments, "~/query", self._on_query, callback_group=self._query_group)
        self.get_logger().info(f"active: serving {self.resolve_service_name('~/query')}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._query_srv is not None:
            self.destroy_service(self._query_srv)
            self._query_srv = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    # -- service --------------------------------------------------------------------------------
    def _on_query(self, request: QuerySegments.Request,
                  response: QuerySegments.Response) -> QuerySegments.Response:
        try:
            query = query_from_request(request)
            validate_query(query)
            if self._memory_size == 0:
                raise QueryError("memory is empty")
        except QueryError as err:
            response.success = False
            response.message = str(err)
            return response
        response.success = True
        return response


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = SpartanNode()
    try:
        if not node.autostart():
            node.get_logger().fatal("could not start; see the lines above")
            return 1
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
