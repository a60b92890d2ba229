"""Test-wide setup: ROS 2 isolation.

Nodes started by tests discover only this machine (`ROS_AUTOMATIC_DISCOVERY_RANGE`)
and only their own run: each pytest process gets its own `ROS_DOMAIN_ID`, so two
test runs, or two xdist workers of one run, never see each other's topics. Set before
any test imports rclpy; child processes inherit it.
"""

from __future__ import annotations

import os

# 1..96: domain ids whose ports never collide with Linux's ephemeral range. xdist
# workers (gw0, gw1, ...) share their controller's pid and differ by worker number.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_run = os.getppid() if _worker else os.getpid()
_index = int(_worker[2:]) if _worker.startswith("gw") else 0
os.environ["ROS_DOMAIN_ID"] = str(1 + (_run % 12) * 8 + _index % 8)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)


def pytest_addoption(parser):
    parser.addoption("--update-refs", action="store_true", default=False,
                     help="regenerate the process-replay reference bags (tests/data/replay) instead of "
                          "comparing against them; review and commit the new bags deliberately")
