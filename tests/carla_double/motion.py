"""One physics step of the double: traffic lights, autopilot, walkers, manual cars, contacts.

Simple but consistent: manual vehicles follow sim.vehicle_dynamics' kinematic bicycle (run
directly in CARLA's frame: with y to the right and yaw clockwise the equations are the same,
and CARLA's steer + = right turns the yaw clockwise); autopilot vehicles move along the real
map's lanes (``Waypoint.next``) and stop for red lights and for actors ahead; walkers head
straight for their AI controller's target. Everything stands on the ground plane z = 0. A
move that would make two boxes overlap is cancelled and reported as a contact, which is
what the collision sensor listens to.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from dataclasses import dataclass

import carla
import numpy as np

from sim import vehicle_dynamics
from . import scene
from .state import DEFAULT_SPEED_LIMIT_MPS, ActorRecord, ControllerRecord, Episode, LightRecord, VehicleRecord

GREEN_S, YELLOW_S, ALL_RED_S = 10.0, 3.0, 2.0  # CARLA's default light timings
DEFAULT_DT_S = 0.05  # variable-step mode: the double has no wall clock, so it steps like 20 FPS
AUTOPILOT_SPEED_FRACTION = 0.7  # the traffic manager drives 30 % under the limit by default
AUTOPILOT_ACCEL_MPS2, AUTOPILOT_BRAKE_MPS2, COMFORT_DECEL_MPS2 = 3.0, 8.0, 4.0
FOLLOW_MARGIN_M = 2.5
JUNCTION_LOOKAHEAD_M = 30
MASS_KG = {"vehicle": 1500.0, "walker": 80.0}


@functools.lru_cache(maxsize=1)
def _bicycle_params() -> vehicle_dynamics.VehicleParams:
    return vehicle_dynamics.VehicleParams.load()


@dataclass
class Pose:
    x: float
    y: float
    z: float
    yaw_deg: float

    @classmethod
    def of(cls, t: carla.Transform) -> Pose:
        return cls(t.location.x, t.location.y, t.location.z, t.rotation.yaw)

    def transform(self) -> carla.Transform:
        return carla.Transform(carla.Location(x=self.x, y=self.y, z=self.z), carla.Rotation(yaw=self.yaw_deg))


@dataclass
class Contact:
    actor_id: int
    other_id: int
    impulse: np.ndarray  # N s on actor_id, world frame; other_id gets the opposite


@dataclass
class _Proposal:
    pose: Pose
    speed_mps: float = 0.0
    steer_angle_rad: float = 0.0
    waypoint: carla.Waypoint | None = None
    control: carla.VehicleControl | None = None


def light_state(light: LightRecord, elapsed_s: float) -> carla.TrafficLightState:
    """Lights of a junction turn green one after another, as a CARLA traffic-light group."""
    if light.frozen_state is not None:
        return light.frozen_state
    slot = GREEN_S + YELLOW_S + ALL_RED_S
    t = elapsed_s % (slot * light.group_size) - slot * light.group_index
    if 0.0 <= t < GREEN_S:
        return carla.TrafficLightState.Green
    if GREEN_S <= t < GREEN_S + YELLOW_S:
        return carla.TrafficLightState.Yellow
    return carla.TrafficLightState.Red


def distance_to_junction(wp: carla.Waypoint, horizon_m: int = JUNCTION_LOOKAHEAD_M) -> tuple[float, int] | None:
    """(distance, junction id) of the first junction ahead along the lane, if within the horizon."""
    for d in range(1, horizon_m + 1):
        for nxt in wp.next(float(d)):
            if nxt.is_junction:
                return float(d), nxt.junction_id
    return None


def step(episode: Episode, dt: float, rngs: dict[int, random.Random]) -> list[Contact]:
    """Advance every actor by ``dt``; returns the contacts of this step."""
    lights = [r for r in episode.actors.values() if isinstance(r, LightRecord)]
    for light in lights:
        light.state = light_state(light, episode.elapsed_s)
    lights_by_lane = {lane: light for light in lights for lane in light.controlled_lanes}

    proposals: dict[int, _Proposal] = {}
    manual: list[VehicleRecord] = []
    for record in episode.actors.values():
        if isinstance(record, VehicleRecord):
            if record.autopilot:
                rng = rngs.get(record.tm_port) or random.Random(0)
                proposals[record.id] = _autopilot(episode, record, dt, rng, lights_by_lane)
            else:
                manual.append(record)
        elif record.kind == "walker":
            proposals[record.id] = _Proposal(Pose.of(record.transform))
    proposals.update(_bicycle(manual, dt))
    for controller in episode.alive("controller"):
        assert isinstance(controller, ControllerRecord)
        walker = episode.actors.get(controller.parent_id or -1)
        if walker is not None and walker.kind == "walker" and controller.active:
            proposals[walker.id] = _walk(walker, controller, dt)
    for record_id, proposal in proposals.items():
        record = episode.actors[record_id]
        # Everything rests on the ground plane: cars by their origin, walkers by their box.
        proposal.pose.z = record.bounding_box.extent.z if record.kind == "walker" else 0.0

    contacts = _resolve_contacts(episode, proposals, dt)
    _commit(episode, proposals, dt)
    _follow_parents(episode)
    return contacts


def _bicycle(vehicles: list[VehicleRecord], dt: float) -> dict[int, _Proposal]:
    if not vehicles:
        return {}
    state = vehicle_dynamics.BicycleState.zeros(len(vehicles))
    for i, v in enumerate(vehicles):
        state.x_m[i], state.y_m[i] = v.transform.location.x, v.transform.location.y
        state.yaw_rad[i] = math.radians(v.transform.rotation.yaw)
        state.speed_mps[i], state.steer_angle_rad[i] = v.speed_mps, v.steer_angle_rad
    controls = [v.pending_control for v in vehicles]
    throttle = np.array([min(max(c.throttle, 0.0), 1.0) for c in controls])
    steer = np.array([min(max(c.steer, -1.0), 1.0) for c in controls])
    brake = np.array([1.0 if c.hand_brake else min(max(c.brake, 0.0), 1.0) for c in controls])
    reverse = np.array([c.reverse for c in controls])
    vehicle_dynamics.step(state, _bicycle_params(), throttle, steer, brake, reverse, dt)
    return {v.id: _Proposal(Pose(float(state.x_m[i]), float(state.y_m[i]), 0.0,
                                 math.degrees(float(state.yaw_rad[i]))),
                            float(state.speed_mps[i]), float(state.steer_angle_rad[i]), None, controls[i])
            for i, v in enumerate(vehicles)}


def _autopilot(episode: Episode, record: VehicleRecord, dt: float, rng: random.Random,
               lights_by_lane: dict[tuple[int, int], LightRecord]) -> _Proposal:
    carla_map = episode.carla_map
    if record.waypoint is None:
        record.waypoint = carla_map.get_waypoint(record.transform.location)
    wp = record.waypoint
    if wp is None:
        return _Proposal(Pose.of(record.transform), 0.0)
    cruise = episode.speed_limits.get(wp.road_id, DEFAULT_SPEED_LIMIT_MPS) * AUTOPILOT_SPEED_FRACTION
    gap = min(_leader_gap(episode, record), _light_gap(record, wp, lights_by_lane))
    allowed = min(cruise, math.sqrt(2.0 * COMFORT_DECEL_MPS2 * max(gap, 0.0)))
    speed = record.speed_mps
    speed = min(allowed, speed + AUTOPILOT_ACCEL_MPS2 * dt) if speed < allowed else \
        max(allowed, speed - AUTOPILOT_BRAKE_MPS2 * dt)
    new_wp = wp
    travel = speed * dt
    if travel > 1e-4:
        options = wp.next(travel)
        if options:
            new_wp = _choose(options, record.path, rng)
        else:
            speed = 0.0  # a dead end: the traffic manager would stop here too
    accel = (speed - record.speed_mps) / dt
    yaw_rate = math.radians(((new_wp.transform.rotation.yaw - wp.transform.rotation.yaw + 180.0) % 360.0) - 180.0) / dt
    params = _bicycle_params()
    steer = yaw_rate * params.wheelbase_m / max(speed, 1.0) / params.max_steer_angle_rad
    control = carla.VehicleControl(throttle=min(max(accel / AUTOPILOT_ACCEL_MPS2, 0.0), 1.0),
                                   brake=min(max(-accel / AUTOPILOT_BRAKE_MPS2, 0.0), 1.0),
                                   steer=min(max(steer, -1.0), 1.0))
    loc = new_wp.transform.location
    return _Proposal(Pose(loc.x, loc.y, loc.z, new_wp.transform.rotation.yaw), speed, 0.0, new_wp, control)


LOOKAHEAD_M = 15.0  # how far into each branch a path choice looks


def _choose(options: list[carla.Waypoint], path: list[carla.Location], rng: random.Random) -> carla.Waypoint:
    if len(options) == 1:
        return options[0]
    if path:
        # Branches at a junction mouth start at one place: take the one whose centre line
        # passes nearest the next path point within the next few metres.
        target = path[0]

        def miss_m(option: carla.Waypoint) -> float:
            ahead = [w for k in range(1, int(LOOKAHEAD_M) + 1) for w in option.next(float(k))[:1]]
            return min(w.transform.location.distance(target) for w in [option, *ahead])
        return min(options, key=miss_m)
    return options[rng.randrange(len(options))]


def _leader_gap(episode: Episode, record: VehicleRecord) -> float:
    yaw = math.radians(record.transform.rotation.yaw)
    forward = np.array([math.cos(yaw), math.sin(yaw)])
    right = np.array([-math.sin(yaw), math.cos(yaw)])
    here = scene.xyz(record.transform.location)[:2]
    ego_len, ego_half_width = record.bounding_box.extent.x, record.bounding_box.extent.y
    gap = math.inf
    for other in episode.actors.values():
        if other is record or not other.physical:
            continue
        rel = scene.xyz(other.transform.location)[:2] - here
        reach = max(other.bounding_box.extent.x, other.bounding_box.extent.y)
        ahead, lateral = float(rel @ forward), float(rel @ right)
        if 0.0 < ahead < 50.0 and abs(lateral) < ego_half_width + reach + 0.3:
            gap = min(gap, ahead - ego_len - reach - FOLLOW_MARGIN_M)
    return gap


def _light_gap(record: VehicleRecord, wp: carla.Waypoint, lights_by_lane: dict[tuple[int, int], LightRecord]
               ) -> float:
    light = lights_by_lane.get((wp.road_id, wp.lane_id))
    if light is None or wp.is_junction or light.state == carla.TrafficLightState.Green:
        return math.inf
    ahead = distance_to_junction(wp)
    if ahead is None:
        return math.inf
    gap = ahead[0] - record.bounding_box.extent.x - 0.5
    if light.state == carla.TrafficLightState.Yellow and record.speed_mps ** 2 > 3.0 * COMFORT_DECEL_MPS2 * gap:
        return math.inf  # too close to stop for yellow: go on
    return gap


def _walk(walker: ActorRecord, controller: ControllerRecord, dt: float) -> _Proposal:
    pose = Pose.of(walker.transform)
    if controller.target is None:
        return _Proposal(pose)
    dx, dy = controller.target.x - pose.x, controller.target.y - pose.y
    distance = math.hypot(dx, dy)
    reach = controller.max_speed_mps * dt
    heading = math.degrees(math.atan2(dy, dx)) if distance > 1e-9 else pose.yaw_deg
    if distance <= reach:
        controller.target = None  # arrived: CARLA's crowd agent stops there
        return _Proposal(Pose(pose.x + dx, pose.y + dy, pose.z, heading))
    return _Proposal(Pose(pose.x + dx / distance * reach, pose.y + dy / distance * reach, pose.z, heading))


def _box_at(record: ActorRecord, pose: Pose) -> scene.Box:
    return scene.Box.of(record.id, 0, 0, pose.transform(), record.bounding_box, (0, 0, 0))


def _resolve_contacts(episode: Episode, proposals: dict[int, _Proposal], dt: float) -> list[Contact]:
    physical = [r for r in episode.actors.values() if r.physical]
    final = {r.id: Pose.of(r.transform) for r in physical}
    contacts: list[Contact] = []
    for record_id in sorted(proposals):
        record, proposal = episode.actors[record_id], proposals[record_id]
        current = final[record_id]
        moved = (abs(proposal.pose.x - current.x) + abs(proposal.pose.y - current.y) > 1e-9
                 or abs(proposal.pose.yaw_deg - current.yaw_deg) > 1e-9)
        if not moved:
            final[record_id] = proposal.pose
            continue
        box = _box_at(record, proposal.pose)
        hit = [o for o in physical if o.id != record_id and scene.boxes_overlap(box, _box_at(o, final[o.id]))]
        if not hit:
            final[record_id] = proposal.pose
            continue
        # Blocked: the move is cancelled and the mover stops, as a car does against an obstacle.
        velocity = np.array([proposal.pose.x - current.x, proposal.pose.y - current.y]) / dt
        proposals[record_id] = dataclasses.replace(proposal, pose=dataclasses.replace(current, z=proposal.pose.z),
                                                   speed_mps=0.0, waypoint=None)
        final[record_id] = proposals[record_id].pose
        for other in hit:
            away = np.array([current.x - other.transform.location.x, current.y - other.transform.location.y])
            away = away / max(float(np.linalg.norm(away)), 1e-9)
            relative = float(np.linalg.norm(velocity - other.velocity[:2]))
            impulse = np.array([away[0], away[1], 0.0]) * MASS_KG.get(record.kind, 1000.0) * relative
            contacts.append(Contact(record_id, other.id, impulse))
    return contacts


def _commit(episode: Episode, proposals: dict[int, _Proposal], dt: float) -> None:
    for record_id, proposal in proposals.items():
        record = episode.actors[record_id]
        old = Pose.of(record.transform)
        new = proposal.pose
        velocity = np.array([(new.x - old.x) / dt, (new.y - old.y) / dt, 0.0])
        record.acceleration = (velocity - record.velocity) / dt
        record.velocity = velocity
        yaw_rate_dps = (((new.yaw_deg - old.yaw_deg + 180.0) % 360.0) - 180.0) / dt
        record.angular_velocity_dps = np.array([0.0, 0.0, yaw_rate_dps])
        record.transform = new.transform()
        if isinstance(record, VehicleRecord):
            record.speed_mps, record.steer_angle_rad = proposal.speed_mps, proposal.steer_angle_rad
            if record.autopilot and proposal.waypoint is not None:
                record.waypoint = proposal.waypoint
            if proposal.control is not None:
                record.applied_control = proposal.control
            if record.path and record.transform.location.distance(record.path[0]) < 4.0:
                record.path.pop(0)


def _follow_parents(episode: Episode) -> None:
    for record in sorted(episode.actors.values(), key=lambda r: r.id):
        if record.parent_id is None or record.relative is None:
            continue
        parent = episode.actors.get(record.parent_id)
        if parent is not None:  # a sensor whose parent died stays where it was
            record.transform = scene.compose(parent.transform, record.relative)
            record.velocity, record.acceleration = parent.velocity.copy(), parent.acceleration.copy()
            record.angular_velocity_dps = parent.angular_velocity_dps.copy()
