"""replayer: publishes a recorded bag with ``/clock`` so nodes run on the log as live.

Every message goes out as its recorded CDR bytes on its own topic and type (the QoS of
the topic table where the topic is ours: latched map and route stay latched). Time:
the bag's ``/clock`` when it has one, else a ``/clock`` made from the log times, so
nodes with ``use_sim_time`` follow the log. ``rate`` scales log time to wall time;
``rate`` 0 is as fast as the graph takes it. With ``lockstep_topic`` (a node's output,
e.g. the control), each frame waits for that node's answer stamped with the frame's
time, as the bridge waits for the control: the process-replay regression gate.
``exclude_topics`` are not published (the live node produces them instead).

Damage in the bag (torn tail, corrupt message, type without definition) is reported
with topic and time and skipped; the rest of the bag still plays. The node exits 0 at
the end of the bag, after every subscriber acknowledged what it got.

Run: ``python -m ros_nodes.replayer_node --ros-args -p bag:=out/run/bag -p rate:=0.0``
"""

from __future__ import annotations

import logging
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from ros_nodes import topics
from ros_nodes.bag.errors import BagError
from ros_nodes.bag.reader import BagReader
from ros_nodes.convert_sensors import msg_class, time_msg
from ros_nodes.graph import encode, qos_profile, rclpy_class, readers_matched, watch_ready
from ros_nodes.topics import Qos
from ros_nodes.typestore import cdr_stamp_ns, leading_stamp

log = logging.getLogger("replayer")

_LATCHED = {topics.MAP, topics.ROUTE, topics.EPISODE_RESULT}


class Replayer(Node):
    def __init__(self) -> None:
        super().__init__("replayer")
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("bag", ""), ("rate", 1.0), ("topics", [""]), ("exclude_topics", [""]), ("lockstep_topic", ""),
            ("lockstep_timeout_s", 5.0), ("wait_for_nodes", [""]), ("startup_timeout_s", 60.0))}
        if not p["bag"]:
            raise ValueError("parameter `bag` (the bag to play) is required")
        if not p["rate"] >= 0.0:
            raise ValueError(f"rate {p['rate']} must be >= 0 (0 = as fast as possible)")
        self.p = p
        self.reader = BagReader(p["bag"])
        wanted = {t for t in p["topics"] if t}
        excluded = {t for t in p["exclude_topics"] if t}
        self.topics = {name: msgtype for name, msgtype in self.reader.topics.items()
                       if (not wanted or name in wanted) and name not in excluded}
        self.pubs = {}
        # Full speed without lockstep: keep-all writers block instead of dropping when a
        # subscriber (the recorder keeps all too) falls behind.
        flow = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE) \
            if p["rate"] == 0.0 and not p["lockstep_topic"] else None
        for name, msgtype in self.topics.items():
            try:
                self.pubs[name] = self.create_publisher(rclpy_class(msgtype), name, qos_profile(Qos.LATCHED)
                                                        if name in _LATCHED else flow or qos_profile(Qos.SENSOR))
            except (ImportError, AttributeError, ValueError) as exc:
                self.get_logger().error(f"cannot publish {name}: no ROS 2 type {msgtype} here ({exc}); skipped")
        self.has_clock = topics.CLOCK in self.pubs
        self.clock_pub = self.pubs.get(topics.CLOCK) or self.create_publisher(
            rclpy_class("rosgraph_msgs/msg/Clock"), topics.CLOCK, flow or qos_profile(Qos.CLOCK))
        self.answers: set[int] = set()
        self.ready_nodes: dict[str, tuple[str, ...]] = {}
        watch_ready(self, self.ready_nodes)
        if p["lockstep_topic"]:
            msgtype = self.topics.get(p["lockstep_topic"]) or _table_type(p["lockstep_topic"])
            if not leading_stamp(msgtype):
                raise ValueError(f"lockstep_topic {p['lockstep_topic']} ({msgtype}) has no header stamp to match")
            self.create_subscription(rclpy_class(msgtype), p["lockstep_topic"],
                                     lambda data: self.answers.add(cdr_stamp_ns(data)),
                                     qos_profile(Qos.CONTROL), raw=True)
        self.published = 0
        self.missed_answers = 0

    def wait_for_graph(self) -> bool:
        wanted = {n for n in self.p["wait_for_nodes"] if n}
        deadline = time.monotonic() + float(self.p["startup_timeout_s"])
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.05)
            if wanted <= self.ready_nodes.keys() and readers_matched(self.pubs, self.ready_nodes) and all(
                    pub.get_subscription_count() >= self.count_subscribers(name) for name, pub in self.pubs.items()):
                return True
        self.get_logger().error(f"node(s) {', '.join(sorted(wanted - self.ready_nodes.keys()))} not ready after "
                                f"{self.p['startup_timeout_s']} s")
        return False

    def play(self) -> int:
        rate = float(self.p["rate"])
        wall_start = log_start = None
        frame_ns = None
        for message in self.reader.messages(list(self.pubs)):
            if wall_start is None:
                wall_start, log_start = time.monotonic(), message.stamp_ns
            if rate > 0.0:
                delay = (message.stamp_ns - log_start) / 1e9 / rate - (time.monotonic() - wall_start)
                if delay > 0.0:
                    time.sleep(delay)
            if message.stamp_ns != frame_ns:  # a new frame: the previous one is complete
                if frame_ns is not None:
                    self._await_answer(frame_ns)
                frame_ns = message.stamp_ns
                if not self.has_clock:
                    self._publish_clock(frame_ns)
            self.pubs[message.topic].publish(bytes(message.data))
            self.published += 1
            if not rclpy.ok():
                return 130
        if frame_ns is not None:
            self._await_answer(frame_ns)
        self._wait_acked(10.0)
        problems = self.reader.problems
        self.get_logger().info(f"replayed {self.published} messages of {len(self.pubs)} topics; "
                               f"{len(problems)} problem(s) in the bag, {self.missed_answers} frame(s) unanswered")
        return 0

    def _publish_clock(self, stamp_ns: int) -> None:
        clock = msg_class("rosgraph_msgs/msg/Clock")(clock=time_msg(stamp_ns))
        self.clock_pub.publish(encode(clock, "rosgraph_msgs/msg/Clock"))

    def _await_answer(self, stamp_ns: int) -> None:
        if not self.p["lockstep_topic"]:
            rclpy.spin_once(self, timeout_sec=0.0)
            return
        deadline = time.monotonic() + float(self.p["lockstep_timeout_s"])
        while stamp_ns not in self.answers and time.monotonic() < deadline and rclpy.ok():
            rclpy.spin_once(self, timeout_sec=0.05)
        if stamp_ns in self.answers:
            self.answers.discard(stamp_ns)
        else:
            self.missed_answers += 1
            self.get_logger().warning(f"no {self.p['lockstep_topic']} for t={stamp_ns * 1e-9:.3f} s "
                                      f"within {self.p['lockstep_timeout_s']} s")

    def _wait_acked(self, timeout_s: float) -> None:
        for pub in self.pubs.values():
            pub.wait_for_all_acked(rclpy.duration.Duration(seconds=timeout_s))

    def close(self) -> None:
        self.reader.close()


def _table_type(name: str) -> str:
    from sim.sensors.suite import SensorSuite
    known = (*topics.topic_table(SensorSuite(), 0.05), *topics.camera_perception_topics("front"), topics.OBSTACLES_TOPIC)
    for topic in known:
        if topic.name == name:
            return topic.msgtype
    raise ValueError(f"lockstep_topic {name}: not in the bag or the topic table; its type is unknown")


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    try:
        node = Replayer()
    except (ValueError, BagError) as exc:
        print(f"error: replayer: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        if not node.wait_for_graph():
            return 1
        return node.play()
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    except Exception:
        if rclpy.ok():
            raise
        return 130  # the signal landed inside rclpy (RCLError on the dead context)
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
