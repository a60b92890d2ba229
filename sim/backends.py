"""Choosing a simulator backend by name: the built-in simulator or a CARLA server."""

from __future__ import annotations

from sim.protocol import Simulator

SIMULATORS = ("builtin", "carla")


def make_simulator(name: str = "builtin", *, host: str = "127.0.0.1", port: int = 2000,
                   traffic_manager_port: int = 8000, timeout_s: float = 10.0) -> Simulator:
    """``builtin`` ignores the CARLA arguments; ``carla`` connects now (and fails now,
    naming host, port and versions, when it cannot)."""
    if name == "builtin":
        from sim.builtin import BuiltinSimulator
        return BuiltinSimulator()
    if name == "carla":
        from sim.carla_backend import CarlaEndpoint, CarlaSimulator
        return CarlaSimulator(CarlaEndpoint(host, port, timeout_s, traffic_manager_port=traffic_manager_port))
    raise ValueError(f"unknown simulator {name!r} (one of {', '.join(SIMULATORS)})")
