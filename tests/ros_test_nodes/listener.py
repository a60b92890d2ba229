"""Subscribes to `heard`; logs each message and exits 0 after `count` of them."""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.task import Future
from std_msgs.msg import String


class Listener(Node):
    def __init__(self) -> None:
        super().__init__("listener")
        self.count = self.declare_parameter("count", 3).value
        self.received = 0
        self.done = Future()
        self.create_subscription(String, "heard", self.on_message, 10)

    def on_message(self, message: String) -> None:
        self.received += 1
        self.get_logger().info(f"heard on {self.resolve_topic_name('heard')}: {message.data}")
        if self.received >= self.count:
            self.done.set_result(True)


def main() -> None:
    rclpy.init()
    node = Listener()
    try:
        rclpy.spin_until_future_complete(node, node.done)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
