"""An in-process test double of the CARLA 0.9.16 server, for the CARLA backend's tests.

    from tests.carla_double import FakeCarlaServer
    from sim.towns import town_path

    server = FakeCarlaServer({"/Game/Carla/Maps/grid_town": town_path("grid_town").read_text()})
    client = server.client_factory("127.0.0.1", 2000)   # where the backend calls carla.Client
    world = client.get_world()

The classes below are named, and their members and parameters named and ordered, like
CARLA's (checked by tests/test_carla_double_api.py against the installed carla package), and
they offer only what the backend's contract uses. Value types are the real carla ones
(Transform, WorldSettings, VehicleControl, Waypoint, LaneMarking...); ``world.get_map()`` is a
real ``carla.Map`` whose subclass ``Map`` only adds the level's spawn points. Underscore
names are the double's own and never CARLA API; the server's test hooks are listed on
:class:`FakeCarlaServer`.
"""

from . import command
from .actors import Actor, Sensor, TrafficLight, Vehicle, Walker, WalkerAIController
from .client import Client, TrafficManager
from .sensor_data import (CollisionEvent, GnssMeasurement, Image, IMUMeasurement, LaneInvasionEvent,
                          SemanticLidarMeasurement, SensorData)
from .server import FakeCarlaServer
from .state import Map
from .world import ActorBlueprint, ActorList, BlueprintLibrary, World, WorldSnapshot

__all__ = [
    "Actor", "ActorBlueprint", "ActorList", "BlueprintLibrary", "Client", "CollisionEvent", "FakeCarlaServer",
    "GnssMeasurement", "IMUMeasurement", "Image", "LaneInvasionEvent", "Map", "SemanticLidarMeasurement", "Sensor",
    "SensorData", "TrafficLight", "TrafficManager", "Vehicle", "Walker", "WalkerAIController", "World",
    "WorldSnapshot", "command",
]
