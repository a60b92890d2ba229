"""Publishes `<message> <n>` on `chatter` at 20 Hz (`message` is a parameter)."""

from __future__ import annotations

import rclpy
from rclpy.node import Node
from std_msgs.msg import String

from ros_test_nodes._spin import spin_until_shutdown


class Talker(Node):
    def __init__(self) -> None:
        super().__init__("talker")
        self.message = self.declare_parameter("message", "hello").value
        self.publisher = self.create_publisher(String, "chatter", 10)
        self.sent = 0
        self.create_timer(0.05, self.publish)

    def publish(self) -> None:
        self.publisher.publish(String(data=f"{self.message} {self.sent}"))
        self.sent += 1


def main() -> None:
    rclpy.init()
    spin_until_shutdown(Talker())


if __name__ == "__main__":
    main()
