"""Runs for `delay_s` seconds, then exits with `exit_code` (a node that fails)."""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.node import Node


def main() -> None:
    rclpy.init()
    node = Node("crasher")
    delay_s = node.declare_parameter("delay_s", 1.0).value
    exit_code = node.declare_parameter("exit_code", 3).value
    end = time.monotonic() + delay_s
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.get_logger().error(f"failing with exit code {exit_code}")
    node.destroy_node()
    rclpy.shutdown()
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
