"""The ROS 2 bridge with ``sim:=carla`` against an in-process double of the server, for
graph tests: ``python -m tests.carla_double.serve_bridge --ros-args -p sim:=carla ...``.

The bridge is ``ros_nodes.sim_bridge_node.main`` unchanged; only ``carla.Client`` is the
double's. At the end it prints how many actors the bridge left on the server.
"""

from __future__ import annotations

import sys

import carla

from sim.towns import town_path
from tests.carla_double import FakeCarlaServer


def main() -> int:
    from ros_nodes import sim_bridge_node
    towns = {f"/Game/Carla/Maps/{name}": town_path(name).read_text() for name in ("grid_town", "multilane_town")}
    with FakeCarlaServer(towns) as server:
        carla.Client = server.client_factory
        code = sim_bridge_node.main(sys.argv[1:])
        print(f"destroyed actors left: {len(server.live_actor_ids())}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
