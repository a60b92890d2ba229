"""What every node of the graph shares: QoS profiles, typed raw publishers and
subscriptions, and the start-up handshake.

Messages travel as CDR bytes serialised by the `rosbags` typestore (rclpy publishes
bytes as they are and hands raw bytes to ``raw=True`` subscriptions): one conversion
layer (ros_nodes.convert_*) serves live topics and bags, and a subscriber decodes only
what it reads. rclpy still needs each type's generated package for its type support.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable, Iterable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ros_nodes.topics import Qos, Topic
from ros_nodes.typestore import typestore

READY = "/drivestack/ready"  # std_msgs/String: the name of a node that is ready for frame 0

_PROFILES = {
    Qos.SENSOR: QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE),
    Qos.CONTROL: QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE),
    Qos.LATCHED: QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL),
    Qos.CLOCK: QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE),
}


def qos_profile(qos: Qos) -> QoSProfile:
    return _PROFILES[qos]


def rclpy_class(msgtype: str) -> type:
    """The generated rclpy class of ``pkg/msg/Name`` (for type support only)."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def encode(msg: object, msgtype: str) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msgtype))


def decode(data: bytes, msgtype: str) -> object:
    return typestore().deserialize_cdr(data, msgtype)


class Publishers:
    """A node's publishers for a set of table topics; ``publish`` takes typestore messages."""

    def __init__(self, node: Node, table: Iterable[Topic]) -> None:
        self.topics = {t.name: t for t in table}
        self._pubs = {t.name: node.create_publisher(rclpy_class(t.msgtype), t.name, qos_profile(t.qos))
                      for t in self.topics.values()}

    def publish(self, topic: str, msg: object) -> None:
        self._pubs[topic].publish(encode(msg, self.topics[topic].msgtype))

    def matched(self, node: Node, ready: dict[str, tuple[str, ...]]) -> bool:
        """Every subscription the graph knows of, and every one a ready node announced,
        is matched to our writers."""
        return readers_matched(self._pubs, ready) and all(
            pub.get_subscription_count() >= node.count_subscribers(name) for name, pub in self._pubs.items())

    def wait_for_all_acked(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for pub in self._pubs.values():
            remaining = max(deadline - time.monotonic(), 0.0)
            if not pub.wait_for_all_acked(rclpy.duration.Duration(seconds=remaining)):
                return False
        return True


def subscribe(node: Node, topic: Topic, callback: Callable[[object], None]):
    """A raw subscription whose callback gets the decoded typestore message."""
    return node.create_subscription(rclpy_class(topic.msgtype), topic.name,
                                    lambda data: callback(decode(data, topic.msgtype)),
                                    qos_profile(topic.qos), raw=True)


def watch_ready(node: Node, ready: dict[str, tuple[str, ...]]):
    """Collect announcements into ``ready``: node name -> the topics it subscribes to.

    Every node latches its own announcement; the subscription keeps many, since nodes
    that start together would otherwise overwrite each other in a depth-1 queue."""
    from std_msgs.msg import String

    def on_ready(msg) -> None:
        announcement = json.loads(msg.data)
        ready[announcement["node"]] = tuple(announcement["subscribed"])
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return node.create_subscription(String, READY, on_ready, qos)


def readers_matched(publishers: dict[str, object], ready: dict[str, tuple[str, ...]]) -> bool:
    """Every subscription a ready node announced is matched to our writer of that topic.

    The graph's subscriber counts lag behind a node's announcement, so they cannot tell;
    a writer's matched-reader count is what decides whether a message reaches it."""
    return all(pub.get_subscription_count() >= sum(topic in subscribed for subscribed in ready.values())
               for topic, pub in publishers.items())


def announce_ready(node: Node):
    """Tell the bridge (or replayer) this node and its subscriptions exist (latched)."""
    from std_msgs.msg import String
    subscribed = sorted({sub.topic_name for sub in node.subscriptions})
    pub = node.create_publisher(String, READY, qos_profile(Qos.LATCHED))
    pub.publish(String(data=json.dumps({"node": node.get_name(), "subscribed": subscribed})))
    return pub


def spin_main(label: str, make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """A spinning node's whole life: a bad parameter (ValueError while building it) is
    one ``error:`` line and exit 2; Ctrl-C or SIGTERM ends it cleanly with exit 0."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except ValueError as exc:
        print(f"error: {label}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A SIGTERM that lands while the executor builds its wait set surfaces as an
        # RCLError on the dead context: a shutdown all the same.
        if rclpy.ok():
            raise
    finally:
        if hasattr(node, "close"):
            node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
