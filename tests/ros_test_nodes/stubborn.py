"""A node that ignores the signals named on its command line (`args: SIGINT SIGTERM`).

It exercises the launcher's escalation: SIGINT, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import signal
import sys

# Before the slow rclpy import, so that a launcher signalling early already finds them ignored.
IGNORED = sys.argv[1:sys.argv.index("--ros-args")] if "--ros-args" in sys.argv else sys.argv[1:]
for name in IGNORED:
    signal.signal(signal.Signals[name], signal.SIG_IGN)

import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402


def main() -> None:
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("stubborn")
    node.get_logger().info("ignoring " + " ".join(IGNORED))
    while True:
        rclpy.spin_once(node, timeout_sec=0.1)


if __name__ == "__main__":
    main()
