"""recorder: writes topics of the graph into a rosbag2 bag (MCAP) through BagWriter.

Topics: the `topics` parameter (each one's type and QoS found from the graph, retried
until a publisher appears), or, when it is empty, every recorded topic of the topic
table for the scenario's sensor suite (the scenario parameters, as the bridge gets
them), plus with ``record_perception`` the camera perception node's outputs and with
``record_obstacles`` the LiDAR obstacles (ros_nodes.topics.perception_topics, where the
suite has the camera or LiDAR they need), with ``record_planning`` the mission's and
planner's outputs (ros_nodes.topics.planning_topics) and with ``record_policy`` the
policy node's proposals (``/drivestack/policy/control``). Messages stay CDR bytes end to
end (raw subscriptions). Log time: the stamp at the start of the message (std_msgs/Header
first, or Clock) read from the bytes, else the node's clock (simulation time with
use_sim_time). Once subscribed to every topic it says ready (the bridge's start-up
handshake). SIGINT and SIGTERM close the bag (summary and metadata.yaml) once the
messages already on their way are in it (spinning on until none came for 0.3 s, 2 s at
most; a second signal stops at once); after a kill -9, `drivestack bag recover`
restores all but the last `flush_interval_s` of it.

Run: ``python -m ros_nodes.recorder_node --ros-args -p out:=out/bag -p topics:="['/a', '/b']"``
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from ros_nodes import topics
from ros_nodes.bag.errors import BagError
from ros_nodes.bag.writer import BagWriter
from ros_nodes.graph import announce_ready, qos_profile, rclpy_class
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params
from ros_nodes.typestore import cdr_stamp_ns, leading_stamp, typestore

log = logging.getLogger("recorder")

DISCOVERY_PERIOD_S = 0.1
WARN_UNDISCOVERED_AFTER_S = 5.0
SPIN_TIMEOUT_S = 0.05  # how soon the main loop sees a stop request
DRAIN_QUIET_S = 0.3  # after a stop: closed once no message came for this long ...
DRAIN_MAX_S = 2.0  # ... or after this long at most


def _rosbags_qos(profile: QoSProfile):  # -> rosbags.interfaces.Qos
    """rclpy's QoS as rosbags stores it in the bag (rosbag2's offered_qos_profiles)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def time(duration) -> QosTime:  # noqa: ANN001 (an rclpy Duration)
        sec, nsec = divmod(duration.nanoseconds, 1_000_000_000)
        return QosTime(sec, nsec) if sec < 2**31 - 1 else QosTime(2**31 - 1, 2**32 - 1)  # rosbag2's "infinite"
    return Qos(QosHistory(int(profile.history)), profile.depth, QosReliability(int(profile.reliability)),
               QosDurability(int(profile.durability)), time(profile.deadline), time(profile.lifespan),
               QosLiveliness(int(profile.liveliness)), time(profile.liveliness_lease_duration),
               profile.avoid_ros_namespace_conventions)


def matching_qos(offered: list[QoSProfile]) -> QoSProfile:
    """A subscription QoS every publisher matches, keeping as much as they offer:
    reliable unless one is best effort, transient local only if all of them are."""
    best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in offered)
    latched = bool(offered) and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class Recorder(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        out = str(self.declare_parameter("out", "").value)
        listed = [t for t in self.declare_parameter("topics", [""]).value if t]
        metadata_json = str(self.declare_parameter("metadata_json", "").value)
        compression = str(self.declare_parameter("compression", "").value)  # "", "zstd" or "lz4" chunks
        record_perception = bool(self.declare_parameter("record_perception", False).value)
        record_obstacles = bool(self.declare_parameter("record_obstacles", False).value)
        record_planning = bool(self.declare_parameter("record_planning", False).value)
        record_policy = bool(self.declare_parameter("record_policy", False).value)
        scenario_params = declare_scenario_parameters(self)
        if not out:
            raise ValueError("parameter `out` (the bag path) is required")
        try:
            metadata = json.loads(metadata_json) if metadata_json else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"metadata_json is not JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise ValueError("metadata_json must be a JSON object")
        table: tuple[topics.Topic, ...] = ()
        if not listed:
            scenario = scenario_from_params(scenario_params)
            # The recorder needs names, types and QoS only: the rate (dt) is not used.
            table = topics.recorded_topics(topics.topic_table(scenario.sensors, 0.05))
            table += tuple(t for t in topics.perception_topics(scenario.sensors, 0.05)
                           if (record_obstacles if t.name == topics.OBSTACLES else record_perception))
            table += topics.planning_topics(0.05) if record_planning else ()
            table += (topics.POLICY_CONTROL_TOPIC,) if record_policy else ()
            metadata = {"scenario": scenario.name, "town": scenario.town, "seed": scenario.seed,
                        "weather": scenario.weather, **metadata}
            if scenario_params["sensors"]:
                metadata.setdefault("sensors", scenario_params["sensors"])
        self.writer = BagWriter(out, metadata, compression=compression)
        self.counts: dict[str, int] = {}
        self.last_message_at = 0.0  # time.monotonic()
        for topic in table:
            self._record(topic.name, topic.msgtype, qos_profile(topic.qos))
        self.pending = [t for t in listed if t not in self.counts]
        self._ready_pub = None
        self._warned = False
        # Steady time: with use_sim_time a node's timers wait for /clock, which the
        # bridge starts only after this node is ready.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._steady_start = self._steady.now()
        self._discovery = self.create_timer(DISCOVERY_PERIOD_S, self._discover, clock=self._steady)
        self._discover()

    def _discover(self) -> None:
        if self.pending:
            graph = dict(self.get_topic_names_and_types())
            for name in list(self.pending):
                types = graph.get(name)
                if not types:
                    continue
                if len(types) > 1:
                    self.get_logger().warning(f"{name} has several types {types}: recording {types[0]}")
                offered = [info.qos_profile for info in self.get_publishers_info_by_topic(name)]
                if not offered:
                    continue  # known only from subscribers so far: wait for a publisher's QoS
                self._record(name, types[0], matching_qos(offered), offered)
                self.pending.remove(name)
            waited_s = (self._steady.now() - self._steady_start).nanoseconds / 1e9
            if self.pending and waited_s > WARN_UNDISCOVERED_AFTER_S and not self._warned:
                self._warned = True
                self.get_logger().warning(f"still waiting for publishers of {', '.join(self.pending)}")
        if not self.pending:
            self._discovery.cancel()
            if self._ready_pub is None:
                self._ready_pub = announce_ready(self)
                self.get_logger().info(f"recording {len(self.counts)} topics to {self.writer.path}")

    def _record(self, name: str, msgtype: str, qos: QoSProfile, offered: list[QoSProfile] | None = None) -> None:
        try:
            msg_class = rclpy_class(msgtype)
            self.writer.add_topic(name, msgtype, qos_profiles=[_rosbags_qos(p) for p in offered or [qos]])
        except (ImportError, AttributeError, ValueError, BagError) as exc:
            self.get_logger().error(f"not recording {name} ({msgtype}): {exc}")
            return
        stamped = leading_stamp(msgtype)
        is_result = name == topics.EPISODE_RESULT and msgtype == "std_msgs/msg/String"
        self.counts[name] = 0

        def on_message(data: bytes) -> None:
            self.last_message_at = time.monotonic()
            # A header stamp is the message's time even when it is 0 (the first frame).
            stamp_ns = cdr_stamp_ns(data) if stamped else self.get_clock().now().nanoseconds
            self.writer.write(name, stamp_ns, data)
            self.counts[name] += 1
            if is_result:
                text = typestore().deserialize_cdr(data, msgtype).data
                self.writer.update_metadata({"episode_result": text})  # on disk now: survives a crash
        # Keep-all: a reliable writer's samples wait in our reader until we take them,
        # so a burst is slow to record but never dropped.
        keep_all = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=qos.reliability, durability=qos.durability)
        self.create_subscription(msg_class, name, on_message, keep_all, raw=True)

    def close(self) -> None:
        # Python logging: /rosout may have no subscriber left by now.
        path = self.writer.close()
        summary = ", ".join(f"{name} {count}" for name, count in self.counts.items())
        log.info("bag %s closed: %d messages (%s)", path, sum(self.counts.values()), summary)
        if self.pending:
            log.warning("never found a publisher of %s", ", ".join(self.pending))


class _StopRequest:
    """SIGINT and SIGTERM, caught: the main loop then drains the subscriptions and
    closes the bag itself (rclpy's own handlers would shut the context down at once and
    lose what is still queued). A second signal cuts the drain short."""

    def __init__(self) -> None:
        self.count = 0
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = _StopRequest()
    try:
        node = Recorder()
    except (ValueError, BagError) as exc:
        print(f"error: recorder: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.count:
            executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        _drain(executor, node, stop)
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _drain(executor: SingleThreadedExecutor, node: Recorder, stop: _StopRequest) -> None:
    """Spin on until no message came for DRAIN_QUIET_S (at most DRAIN_MAX_S): what the
    DDS readers hold when the stop comes still goes into the bag."""
    start = time.monotonic()
    while stop.count < 2:
        now = time.monotonic()
        if now - max(node.last_message_at, start) >= DRAIN_QUIET_S:
            return
        if now - start >= DRAIN_MAX_S:
            log.warning("messages still arriving %.1f s after the stop: closing the bag anyway", DRAIN_MAX_S)
            return
        executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)


if __name__ == "__main__":
    sys.exit(main())
