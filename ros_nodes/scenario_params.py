"""The parameters that name an episode's scenario, shared by every node that needs it
(bridge, recorder): all of them resolve the same scenario from the same launch args."""

from __future__ import annotations

from rclpy.node import Node

from sim.scenario import Scenario, resolve_scenario

# name -> default; "" and -1 keep the scenario file's own value.
SCENARIO_PARAMETERS = (("scenario", "default"), ("seed", -1), ("sensors", ""), ("weather", ""),
                       ("npc_vehicles", -1), ("pedestrians", -1))


def declare_scenario_parameters(node: Node) -> dict:
    return {name: node.declare_parameter(name, default).value for name, default in SCENARIO_PARAMETERS}


def scenario_from_params(p: dict) -> Scenario:
    return resolve_scenario(p["scenario"], seed=p["seed"] if p["seed"] >= 0 else None,
                            sensors=p["sensors"] or None, weather=p["weather"] or None,
                            npc_vehicles=p["npc_vehicles"] if p["npc_vehicles"] >= 0 else None,
                            pedestrians=p["pedestrians"] if p["pedestrians"] >= 0 else None)
