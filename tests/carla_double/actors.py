"""Actor handles, named and shaped like CARLA's (the API test checks names and parameters).

A handle reads its server record. Like LibCarla's ``EpisodeProxy::Lock``, calls on a handle
whose episode was replaced by ``load_world`` raise "trying to access an expired episode...",
and calls on a handle that ``destroy()``-ed its actor raise "trying to operate on a destroyed
actor..."; an actor destroyed any other way (batch, load_world) reads as a zero transform.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import carla

from . import scene
from .state import ActorRecord, ControllerRecord, LightRecord, SensorRecord, VehicleRecord

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger(__name__)

EXPIRED_EPISODE = ("trying to access an expired episode; a new episode was started in the simulation but an "
                   "object tried accessing the old one.")
DESTROYED_ACTOR = ("trying to operate on a destroyed actor; an actor's function was called, but the actor is "
                   "already destroyed.")


def _require(value: Any, kind: type | tuple[type, ...], method: str) -> None:
    # Boost.Python rejects a wrong argument type with ArgumentError, a TypeError.
    if not isinstance(value, kind):
        raise TypeError(f"Python argument types in {method} did not match C++ signature: got {type(value).__name__}")


class Actor:
    def __init__(self, record: ActorRecord, client: Client) -> None:
        self._record = record
        self._client = client
        self._cleared = False

    def _locked(self) -> ActorRecord:
        if self._cleared:
            raise RuntimeError(DESTROYED_ACTOR)
        if self._record.episode_id != self._client._server_episode_id():
            raise RuntimeError(EXPIRED_EPISODE)
        return self._record

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def type_id(self) -> str:
        return self._record.type_id

    @property
    def parent(self) -> Actor | None:
        record = self._locked()
        if record.parent_id is None or not self._client._is_alive(record.parent_id):
            return None  # CARLA looks the parent up among the episode's actors
        return self._client._handle(record.parent_id)

    @property
    def is_alive(self) -> bool:
        if self._cleared:
            return False
        return self._locked().alive

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self._record.attributes)

    @property
    def bounding_box(self) -> carla.BoundingBox:
        return scene.copy_box(self._record.bounding_box)

    def get_location(self) -> carla.Location:
        return self.get_transform().location

    def get_transform(self) -> carla.Transform:
        record = self._locked()
        # A dead actor is missing from the episode snapshot: CARLA then answers defaults.
        return scene.copy_transform(record.transform) if record.alive else carla.Transform()

    def get_velocity(self) -> carla.Vector3D:
        record = self._locked()
        return scene.vector(record.velocity) if record.alive else carla.Vector3D()

    def get_angular_velocity(self) -> carla.Vector3D:
        record = self._locked()
        return scene.vector(record.angular_velocity_dps) if record.alive else carla.Vector3D()

    def get_acceleration(self) -> carla.Vector3D:
        record = self._locked()
        return scene.vector(record.acceleration) if record.alive else carla.Vector3D()

    def destroy(self) -> bool:
        if self._cleared:
            log.warning("attempting to destroy an actor that is already dead: %s %d", self.type_id, self.id)
            return False
        self._locked()
        destroyed = self._client._destroy_actor(self._record.id)
        if destroyed:
            self._cleared = True
        return destroyed


class Vehicle(Actor):
    _record: VehicleRecord

    def apply_control(self, control: carla.VehicleControl) -> None:
        _require(control, carla.VehicleControl, "Vehicle.apply_control")
        record = self._locked()
        record.pending_control = carla.VehicleControl(
            throttle=control.throttle, steer=control.steer, brake=control.brake, hand_brake=control.hand_brake,
            reverse=control.reverse, manual_gear_shift=control.manual_gear_shift, gear=control.gear)

    def get_control(self) -> carla.VehicleControl:
        """The control of the last tick's snapshot: a control applied since shows after the next tick."""
        c = self._locked().applied_control
        return carla.VehicleControl(throttle=c.throttle, steer=c.steer, brake=c.brake, hand_brake=c.hand_brake,
                                    reverse=c.reverse, manual_gear_shift=c.manual_gear_shift, gear=c.gear)

    def set_autopilot(self, enabled: bool = True, tm_port: int = 8000) -> None:
        _require(enabled, int, "Vehicle.set_autopilot")  # Boost.Python's bool takes any int
        _require(tm_port, int, "Vehicle.set_autopilot")
        self._locked()
        self._client._server_for_actor()._set_autopilot(self._record, enabled, tm_port)

    def set_light_state(self, light_state: carla.VehicleLightState) -> None:
        _require(light_state, carla.VehicleLightState, "Vehicle.set_light_state")
        self._locked().light_state = light_state


class Walker(Actor):
    pass


class WalkerAIController(Actor):
    _record: ControllerRecord

    def start(self) -> None:
        self._locked().active = True

    def stop(self) -> None:
        record = self._locked()
        record.active = False
        record.target = None

    def go_to_location(self, destination: carla.Location) -> None:
        _require(destination, carla.Location, "WalkerAIController.go_to_location")
        self._locked().target = scene.copy_location(destination)

    def set_max_speed(self, speed: float) -> None:
        _require(speed, (int, float), "WalkerAIController.set_max_speed")
        self._locked().max_speed_mps = float(speed)


class TrafficLight(Actor):
    _record: LightRecord

    def get_state(self) -> carla.TrafficLightState:
        return self._locked().state

    def get_opendrive_id(self) -> str:
        return self._locked().opendrive_id

    def get_light_boxes(self) -> list[carla.BoundingBox]:
        return [scene.copy_box(box) for box in self._locked().light_boxes]


class Sensor(Actor):
    """Listening is per handle, as in LibCarla (``_is_listening`` lives in the client object)."""

    _record: SensorRecord

    def __init__(self, record: SensorRecord, client: Client) -> None:
        super().__init__(record, client)
        self._listening = False

    def listen(self, callback: Callable[[Any], None]) -> None:
        if not callable(callback):
            raise TypeError("Sensor.listen: callback is not callable")
        record = self._locked()
        record.listener, record.callback = self, callback
        record.previous_waypoint = None
        self._listening = True

    def is_listening(self) -> bool:
        return self._listening

    def stop(self) -> None:
        if not self._listening:
            log.warning("attempting to unsubscribe from stream but sensor wasn't listening: %s %d",
                        self.type_id, self.id)
            return
        self._listening = False
        record = self._record
        if record.listener is self:
            record.listener, record.callback = None, None

    def destroy(self) -> bool:
        if self._listening:
            self.stop()
        return super().destroy()
