"""Client and TrafficManager handles.

A ``Client`` made by ``FakeCarlaServer.client_factory`` talks to that server in-process;
every call that is an RPC in LibCarla first checks the server is reachable at the client's
host and port and otherwise raises CARLA's time-out error with the client's timeout in it.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import carla

from .actors import Actor, Sensor, TrafficLight, Vehicle, Walker, WalkerAIController, _require
from .command import Response
from .state import ActorRecord
from .world import World

if TYPE_CHECKING:
    from .server import FakeCarlaServer

log = logging.getLogger(__name__)

CLIENT_VERSION = "0.9.16"
_HANDLE_CLASS: dict[str, type[Actor]] = {
    "vehicle": Vehicle, "walker": Walker, "controller": WalkerAIController, "sensor": Sensor,
    "traffic_light": TrafficLight, "spectator": Actor,
}


def timeout_error(host: str, port: int, timeout_ms: int) -> RuntimeError:
    # carla::client::TimeoutException's text.
    return RuntimeError(f"time-out of {timeout_ms}ms while waiting for the simulator, make sure the simulator is "
                        f"ready and connected to {host}:{port}")


class Client:
    def __init__(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0) -> None:
        _require(host, str, "Client.__init__")
        _require(port, int, "Client.__init__")
        self._host, self._port = host, port
        self._timeout_ms = 5000
        self._server: FakeCarlaServer | None = None  # set by FakeCarlaServer.client_factory
        self._connected = False

    def _rpc(self) -> FakeCarlaServer:
        server = self._server
        if server is not None and not self._connected:
            server.connect_attempts += 1
        if server is None or not server.reachable or (self._host, self._port) != (server.host, server.port):
            raise timeout_error(self._host, self._port, self._timeout_ms)
        self._connected = True
        return server

    def _server_episode_id(self) -> int:
        assert self._server is not None, "handles only come from a server"
        return self._server._episode.id

    def _server_for_actor(self) -> FakeCarlaServer:
        return self._rpc()

    def _handle(self, actor_id: int) -> Actor:
        assert self._server is not None
        record: ActorRecord = self._server._record(actor_id)
        return _HANDLE_CLASS[record.kind](record, self)

    def _is_alive(self, actor_id: int) -> bool:
        assert self._server is not None
        return actor_id in self._server._episode.actors

    def _destroy_actor(self, actor_id: int) -> bool:
        # LibCarla's Client::DestroyActor logs any failure and answers false.
        try:
            error = self._rpc()._destroy(actor_id)
        except RuntimeError as exc:
            error = str(exc)
        if error:
            log.error("failed to destroy actor %d : %s", actor_id, error)
        return not error

    def set_timeout(self, seconds: float) -> None:
        _require(seconds, (int, float), "Client.set_timeout")
        self._timeout_ms = int(1000.0 * seconds)

    def get_client_version(self) -> str:
        return CLIENT_VERSION

    def get_server_version(self) -> str:
        return self._rpc().version

    def get_available_maps(self) -> list[str]:
        return list(self._rpc().maps)

    def get_world(self) -> World:
        return World(self, self._rpc()._episode)

    def load_world(self, map_name: str, reset_settings: bool = True) -> World:
        _require(map_name, str, "Client.load_world")
        return World(self, self._rpc()._load_world(map_name, reset_settings))

    def generate_opendrive_world(self, opendrive: str, parameters: carla.OpendriveGenerationParameters | None = None,
                                 reset_settings: bool = True) -> World:
        _require(opendrive, str, "Client.generate_opendrive_world")
        if parameters is not None:
            _require(parameters, carla.OpendriveGenerationParameters, "Client.generate_opendrive_world")
        return World(self, self._rpc()._generate_opendrive_world(opendrive, reset_settings))

    def get_trafficmanager(self, port: int = 8000) -> TrafficManager:
        _require(port, int, "Client.get_trafficmanager")
        return self._rpc()._traffic_manager(port)

    def apply_batch_sync(self, commands: list[carla.command.DestroyActor], do_tick: bool = False
                         ) -> list[Response]:
        server = self._rpc()
        responses = []
        for command in commands:
            if not isinstance(command, carla.command.DestroyActor):
                raise NotImplementedError(f"the CARLA double's apply_batch_sync knows command.DestroyActor only, "
                                          f"not {type(command).__name__}: extend the contract and the double")
            error = server._destroy(command.actor_id)
            responses.append(Response(command.actor_id, error))
        if do_tick:
            server._tick()
        return responses


class TrafficManager:
    """One per port and server. Its settings live here; the server reads them every tick."""

    def __init__(self, port: int, server: FakeCarlaServer) -> None:
        self._port = port
        self._server = server
        self._synchronous_mode = False
        self._random_device_seed = 0  # fixed, so autopilot routes repeat from run to run
        self._rng = random.Random(self._random_device_seed)

    def get_port(self) -> int:
        return self._port

    def set_synchronous_mode(self, mode_switch: bool) -> None:
        _require(mode_switch, int, "TrafficManager.set_synchronous_mode")
        self._synchronous_mode = bool(mode_switch)

    def set_random_device_seed(self, value: int) -> None:
        _require(value, int, "TrafficManager.set_random_device_seed")
        self._random_device_seed = value
        self._rng.seed(value)

    def set_path(self, actor: Actor, path: list[carla.Location], empty_buffer: bool = True) -> None:
        _require(actor, Actor, "TrafficManager.set_path")
        if not all(isinstance(p, carla.Location) for p in path):
            raise TypeError("TrafficManager.set_path: path must be a list of carla.Location")
        record = actor._locked()
        new = [carla.Location(x=p.x, y=p.y, z=p.z) for p in path]
        record.path = new if empty_buffer else record.path + new
