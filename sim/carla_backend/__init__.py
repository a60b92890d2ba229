"""The CARLA backend: the ``Simulator`` protocol on a CARLA 0.9.15/0.9.16 server.

Modules: ``connection`` (timeout, retries, version check), ``simulator`` (episodes in
synchronous mode), ``blueprints`` and ``sensor_data`` (our sensor configs to CARLA
sensors and their data back), ``weather``, ``world_state`` and ``ground_truth`` (actors,
lights and labels in REP 103), ``cleanup`` (no leaked actors, settings restored).
Frame conversions live in ``sim.carla_frames``.
"""

from sim.carla_backend.connection import SUPPORTED_VERSIONS, CarlaEndpoint
from sim.carla_backend.errors import (
    CarlaConnectionError, CarlaError, CarlaSensorTimeout, CarlaTownError, CarlaVersionError)

__all__ = ["SUPPORTED_VERSIONS", "CarlaEndpoint", "CarlaConnectionError", "CarlaError", "CarlaSensorTimeout",
           "CarlaTownError", "CarlaVersionError", "CarlaSimulator"]


def __getattr__(name: str):
    # The simulator pulls in the built-in simulator's modules; import it when asked for.
    if name == "CarlaSimulator":
        from sim.carla_backend.simulator import CarlaSimulator
        return CarlaSimulator
    raise AttributeError(name)
