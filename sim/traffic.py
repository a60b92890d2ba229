"""NPC traffic: lane following, IDM car following, junction rules, vectorised over NPCs.

Each NPC drives along the lane graph: its current lane, the next lane and the one after
(picked at random at branches). Longitudinal control is IDM against the nearest
obstacle among: the car ahead on those lanes, anything in a short geometric corridor
(cars merging, the ego changing lanes, pedestrians on the road), the stop line of a
red light, and the junction entry when a conflicting connector is occupied or the exit
lane has no room ("don't block the box"). Lateral control is Stanley at the front
axle, so NPCs stay on their lane centre in turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivestack.config import load_params
from drivestack.schema import TrafficLightState
from sim.control import front_axle_xy, idm_accel, pedals_for_accel, stanley_steer
from sim.lane_arrays import LaneArrays
from sim.road_map import RoadMap
from sim.traffic_lights import TrafficLightController
from sim.vehicle_dynamics import BicycleState, VehicleParams

DEFAULT_TRAFFIC_PARAMS = Path(__file__).parent / "config" / "traffic.yaml"
NO_LANE = -1


@dataclass(frozen=True)
class TrafficParams:
    idm_time_gap_s: float
    idm_min_gap_m: float
    idm_max_accel_mps2: float
    idm_comfort_decel_mps2: float
    idm_accel_exponent: float
    speed_factor_min: float
    speed_factor_max: float
    stanley_gain_per_s: float
    stanley_soft_speed_mps: float
    yellow_max_stop_decel_mps2: float
    junction_lookahead_m: float
    junction_commit_time_s: float
    exit_clearance_m: float
    corridor_length_m: float
    pedestrian_clearance_m: float
    crossing_yield_half_width_m: float
    spawn_min_gap_m: float

    @classmethod
    def load(cls, path: str | Path = DEFAULT_TRAFFIC_PARAMS) -> TrafficParams:
        return load_params(cls, path)


@dataclass(frozen=True)
class EgoLaneInfo:
    """Where the ego is on the lane graph (from a map query), for NPC decisions."""

    lane: int = NO_LANE
    s_m: float = 0.0


class TrafficManager:
    """NPC vehicles occupy rows ``first_row .. first_row + n`` of the shared bicycle state."""

    def __init__(self, road_map: RoadMap, lanes: LaneArrays, params: TrafficParams,
                 vehicle: VehicleParams, rng: np.random.Generator, first_row: int = 1) -> None:
        self.map = road_map
        self.lanes = lanes
        self.p = params
        self.vehicle = vehicle
        self.rng = rng
        self.first_row = first_row
        self.n = 0
        self.lane = np.zeros(0, dtype=np.int64)
        self.next_lane = np.zeros(0, dtype=np.int64)
        self.exit_lane = np.zeros(0, dtype=np.int64)
        self.s_m = np.zeros(0)
        self.speed_factor = np.zeros(0)
        self.granted = np.zeros(0, dtype=bool)
        self.lateral_offset_m = np.zeros(0)
        # Why each NPC is held, for the deadlock check and debugging (0 = free).
        self.waiting_at_junction = np.full(0, NO_LANE, dtype=np.int64)
        self._successors = [np.array(seg.successors, dtype=np.int64) for seg in road_map.lanes]
        self._incoming_to_junction = np.array(
            [not seg.in_junction and any(road_map.lanes[c].in_junction for c in seg.successors)
             for seg in road_map.lanes])
        # Connectors leaving the same lanes as each connector: while the ego is in a
        # junction its lane query cannot tell siblings apart where they overlap.
        self._siblings = {seg.segment_id: {c for p in seg.predecessors for c in road_map.lanes[p].successors}
                          for seg in road_map.lanes if seg.in_junction}
        self._stop_s = np.array([
            (sl.s_m if (sl := road_map.stop_line(seg.segment_id)) else seg.length_m - 1.0)
            for seg in road_map.lanes])

    # -- spawning ---------------------------------------------------------------------

    def spawn(self, count: int, state: BicycleState, occupied_xy: list[tuple[float, float]]) -> None:
        """Place ``count`` NPCs at rest on random free slots outside junctions.

        Slots lie every ``spawn_min_gap_m`` along each lane, so a dense town fills up
        like CARLA's spawn points instead of failing a random rejection search.
        """
        slots = self._free_slots(occupied_xy)
        if len(slots) < count:
            raise ValueError(f"{self.map.name}: room for only {len(slots)} of {count} NPC vehicles")
        chosen = sorted(self.rng.choice(len(slots), size=count, replace=False).tolist())
        self.n = count
        self.lane = np.array([slots[i][0] for i in chosen], dtype=np.int64)
        self.s_m = np.array([slots[i][1] for i in chosen])
        self.next_lane = np.array([self._pick_successor(int(k)) for k in self.lane], dtype=np.int64)
        self.exit_lane = np.array([self._pick_successor(int(k)) for k in self.next_lane], dtype=np.int64)
        self.speed_factor = self.rng.uniform(self.p.speed_factor_min, self.p.speed_factor_max, count)
        self.granted = np.zeros(count, dtype=bool)
        self.lateral_offset_m = np.zeros(count)
        self.waiting_at_junction = np.full(count, NO_LANE, dtype=np.int64)
        rows = self._rows
        x, y, yaw, _ = self.lanes.reference(self.lane, self.s_m)
        state.x_m[rows], state.y_m[rows], state.yaw_rad[rows] = x, y, yaw

    def _free_slots(self, occupied_xy: list[tuple[float, float]]) -> list[tuple[int, float]]:
        gap = self.p.spawn_min_gap_m
        slots = []
        for lane in np.flatnonzero(~self.lanes.in_junction):
            length = self.lanes.length_m[lane]
            for s in np.arange(gap / 2, length - gap / 2, gap):
                slots.append((int(lane), float(s)))
        if not slots:
            return []
        lanes = np.array([sl[0] for sl in slots])
        x, y, _, _ = self.lanes.reference(lanes, np.array([sl[1] for sl in slots]))
        free = np.ones(len(slots), dtype=bool)
        for ox, oy in occupied_xy:  # keep clear of the ego and its first route stretch
            free &= np.hypot(x - ox, y - oy) > gap
        return [sl for sl, ok in zip(slots, free) if ok]

    @property
    def _rows(self) -> slice:
        return slice(self.first_row, self.first_row + self.n)

    def _pick_successor(self, lane: int) -> int:
        if lane == NO_LANE:
            return NO_LANE
        options = self._successors[lane]
        if not len(options):
            return NO_LANE
        return int(options[self.rng.integers(len(options))])

    # -- control ------------------------------------------------------------------------

    def controls(self, state: BicycleState, ego: EgoLaneInfo, lights: TrafficLightController,
                 pedestrians_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Throttle, steer and brake for every NPC (arrays of shape (n,))."""
        if self.n == 0:
            empty = np.zeros(0)
            return empty, empty, empty
        rows = self._rows
        v = state.speed_mps[rows]
        half_len = self.vehicle.length_m / 2
        gap, lead_v = self._lane_leaders(state, ego)
        corridor_gap, corridor_v = self._corridor_obstacles(state, pedestrians_xy)
        closer = corridor_gap < gap
        gap = np.where(closer, corridor_gap, gap)
        lead_v = np.where(closer, corridor_v, lead_v)
        stop_gap = self._junction_stops(state, ego, lights) - half_len
        closer = stop_gap < gap
        gap = np.where(closer, stop_gap, gap)
        lead_v = np.where(closer, 0.0, lead_v)
        p = self.p
        accel = idm_accel(v, self._desired_speed(), gap, lead_v, time_gap_s=p.idm_time_gap_s,
                          min_gap_m=p.idm_min_gap_m, max_accel_mps2=p.idm_max_accel_mps2,
                          comfort_decel_mps2=p.idm_comfort_decel_mps2, exponent=p.idm_accel_exponent,
                          max_decel_mps2=self.vehicle.max_brake_decel_mps2)
        throttle, brake = pedals_for_accel(accel, v, self.vehicle)
        return throttle, self._stanley(state), brake

    def _lane_leaders(self, state: BicycleState, ego: EgoLaneInfo) -> tuple[np.ndarray, np.ndarray]:
        """Gap (front bumper to rear bumper) to the nearest car ahead on the planned lanes."""
        all_lane = np.concatenate([[ego.lane], self.lane])
        all_s = np.concatenate([[ego.s_m], self.s_m])
        all_v = np.concatenate([[state.speed_mps[0]], state.speed_mps[self._rows]])
        length_here = self.lanes.length_m[self.lane]
        length_next = np.where(self.next_lane >= 0, self.lanes.length_m[self.next_lane], 0.0)
        d = np.full((self.n, self.n + 1), np.inf)
        same = (all_lane[None, :] == self.lane[:, None]) & (all_s[None, :] > self.s_m[:, None])
        d = np.where(same, all_s[None, :] - self.s_m[:, None], d)
        on_next = (all_lane[None, :] == self.next_lane[:, None]) & (self.next_lane[:, None] >= 0)
        d = np.minimum(d, np.where(on_next, length_here[:, None] - self.s_m[:, None] + all_s[None, :], np.inf))
        on_exit = (all_lane[None, :] == self.exit_lane[:, None]) & (self.exit_lane[:, None] >= 0)
        d = np.minimum(d, np.where(
            on_exit, length_here[:, None] - self.s_m[:, None] + length_next[:, None] + all_s[None, :], np.inf))
        d[np.arange(self.n), np.arange(self.n) + 1] = np.inf
        nearest = np.argmin(d, axis=1)
        gap = d[np.arange(self.n), nearest] - self.vehicle.length_m
        lead_v = np.where(np.isfinite(gap), all_v[nearest], 0.0)
        # Dead ends (foreign maps): stop at the end of the lane; the NPC respawns there.
        end_gap = length_here - self.s_m - self.vehicle.length_m / 2
        at_end = (self.next_lane < 0) & (end_gap < gap)
        return np.where(at_end, end_gap, gap), np.where(at_end, 0.0, lead_v)

    def _corridor_obstacles(self, state: BicycleState, pedestrians_xy: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Anything in a short box straight ahead: merging cars, the ego, pedestrians."""
        rows = self._rows
        x, y, yaw = state.x_m[rows], state.y_m[rows], state.yaw_rad[rows]
        c, s = np.cos(yaw), np.sin(yaw)
        ox = np.concatenate([state.x_m, pedestrians_xy[:, 0]])
        oy = np.concatenate([state.y_m, pedestrians_xy[:, 1]])
        dx = ox[None, :] - x[:, None]
        dy = oy[None, :] - y[:, None]
        ahead = c[:, None] * dx + s[:, None] * dy
        side = -s[:, None] * dx + c[:, None] * dy
        n_veh = len(state)
        is_ped = np.arange(len(ox)) >= n_veh
        # A pedestrian on the carriageway is crossing it: wait until the whole road is
        # clear, not just our lane, or the car rolls into their path as they reach it.
        lateral_limit = np.where(is_ped, self.p.crossing_yield_half_width_m, self.vehicle.width_m + 0.2)[None, :]
        # Only cars heading roughly our way: oncoming cars on a curve are not obstacles.
        other_yaw = np.concatenate([state.yaw_rad, np.zeros(len(pedestrians_xy))])
        same_way = is_ped[None, :] | (np.cos(other_yaw[None, :] - yaw[:, None]) > 0.3)
        hit = (ahead > 0.0) & (ahead < self.p.corridor_length_m + self.vehicle.length_m) \
            & (np.abs(side) < lateral_limit) & same_way
        hit[np.arange(self.n), np.arange(self.n) + self.first_row] = False
        extent = np.where(is_ped, 0.3 + self.p.pedestrian_clearance_m, self.vehicle.length_m / 2)[None, :]
        gap = np.where(hit, ahead - self.vehicle.length_m / 2 - extent, np.inf)
        # Whatever is in the box may be crossing our path: treat it as standing.
        return gap.min(axis=1), np.zeros(self.n)

    def _junction_stops(self, state: BicycleState, ego: EgoLaneInfo, lights: TrafficLightController
                        ) -> np.ndarray:
        """Distance from each NPC's centre to where it must stop before a junction (inf if none)."""
        stop = np.full(self.n, np.inf)
        to_end = self.lanes.length_m[self.lane] - self.s_m
        approaching = self._incoming_to_junction[self.lane] & ~self.granted & (to_end < self.p.junction_lookahead_m)
        self.waiting_at_junction[:] = NO_LANE
        if not approaching.any():
            return stop
        occupied = self._occupied_connectors(ego)
        v = state.speed_mps[self._rows]
        for i in np.flatnonzero(approaching):
            lane, conn = int(self.lane[i]), int(self.next_lane[i])
            to_stop = self._stop_s[lane] - self.s_m[i]
            light = self.map.light_of_segment(lane)
            state_now = lights.state(light) if light >= 0 else TrafficLightState.GREEN
            front_past_line = to_stop < self.vehicle.length_m / 2 - 0.5
            if state_now == TrafficLightState.YELLOW and not front_past_line:
                can_stop = to_stop - self.vehicle.length_m / 2 > v[i] ** 2 / (2 * self.p.yellow_max_stop_decel_mps2)
                state_now = TrafficLightState.RED if can_stop else TrafficLightState.GREEN
            if state_now == TrafficLightState.RED and not front_past_line:
                stop[i] = to_stop
                self.waiting_at_junction[i] = conn
                continue
            commit_distance = max(8.0, v[i] * self.p.junction_commit_time_s + 6.0)
            if to_stop > commit_distance:
                continue
            if self._may_enter(i, conn, occupied):
                self.granted[i] = True
                occupied.add(conn)
            else:
                stop[i] = max(to_stop, self.vehicle.length_m / 2)
                self.waiting_at_junction[i] = conn
        return stop

    def _occupied_connectors(self, ego: EgoLaneInfo) -> set[int]:
        in_junction = self.lanes.in_junction[self.lane]
        occupied = set(self.lane[in_junction].tolist()) | set(self.next_lane[self.granted].tolist())
        if ego.lane >= 0:
            if self.lanes.in_junction[ego.lane]:
                occupied.update(self._siblings[ego.lane] | {ego.lane})
            elif self._incoming_to_junction[ego.lane] and self.lanes.length_m[ego.lane] - ego.s_m < 15.0:
                # The ego's turn is unknown: it may take any connector from its lane.
                occupied.update(self._successors[ego.lane].tolist())
        return occupied

    def _may_enter(self, i: int, connector: int, occupied: set[int]) -> bool:
        if self.map.connector_conflicts.get(connector, frozenset()) & occupied:
            return False
        exit_lane = int(self.exit_lane[i])
        if exit_lane < 0:
            return True
        # Room behind the last car on the exit lane, so nobody stops inside the junction.
        on_exit = self.s_m[self.lane == exit_lane]
        room_needed = self.vehicle.length_m * 1.5 + self.p.exit_clearance_m
        others_heading_there = np.count_nonzero((self.next_lane == connector) & self.granted)
        return not (on_exit < room_needed * (1 + others_heading_there)).any()

    def _desired_speed(self) -> np.ndarray:
        b = self.p.idm_comfort_decel_mps2
        v0 = self.lanes.speed_limit_mps[self.lane] * self.speed_factor
        v0 = np.minimum(v0, self.lanes.turn_speed_mps[self.lane])
        to_end = np.maximum(self.lanes.length_m[self.lane] - self.s_m, 0.0)
        nxt = np.maximum(self.next_lane, 0)
        v_next = np.where(self.next_lane >= 0, self.lanes.turn_speed_mps[nxt] * self.speed_factor, v0)
        # Slow down ahead of a tight connector so the turn starts at its comfortable speed.
        return np.maximum(np.minimum(v0, np.sqrt(v_next**2 + 2 * b * to_end)), 0.5)

    def _stanley(self, state: BicycleState) -> np.ndarray:
        rows = self._rows
        yaw = state.yaw_rad[rows]
        fx, fy = front_axle_xy(state.x_m[rows], state.y_m[rows], yaw, self.vehicle)
        # Project the front axle itself onto the plan (two Newton steps from the centre's
        # arc length): on a curve it is not simply one axle distance further along.
        s_front = self.s_m + (self.vehicle.wheelbase_m - self.vehicle.rear_axle_to_center_m)
        for _ in range(2):
            rx, ry, ryaw, _ = self.lanes.reference(*self._lane_at(s_front))
            s_front = s_front + (fx - rx) * np.cos(ryaw) + (fy - ry) * np.sin(ryaw)
        rx, ry, ryaw, _ = self.lanes.reference(*self._lane_at(s_front))
        return stanley_steer(fx, fy, yaw, state.speed_mps[rows], rx, ry, ryaw,
                             self.vehicle, self.p.stanley_gain_per_s, self.p.stanley_soft_speed_mps)

    def _lane_at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lane, s) of a point ``s`` metres along the plan, rolling over to the next lane."""
        over = (s > self.lanes.length_m[self.lane]) & (self.next_lane >= 0)
        lane = np.where(over, self.next_lane, self.lane)
        return lane, np.where(over, s - self.lanes.length_m[self.lane], s)

    # -- after the physics step --------------------------------------------------------

    def advance(self, state: BicycleState, occupied_xy_fn) -> None:
        """Project NPCs onto their plan, roll over to the next lanes, respawn at dead ends."""
        if self.n == 0:
            return
        rows = self._rows
        x, y = state.x_m[rows], state.y_m[rows]
        for _ in range(2):
            rx, ry, ryaw, _ = self.lanes.reference(self.lane, self.s_m)
            c, s = np.cos(ryaw), np.sin(ryaw)
            self.s_m = np.maximum(self.s_m + (x - rx) * c + (y - ry) * s, 0.0)
        self.lateral_offset_m = -(x - rx) * s + (y - ry) * c
        for i in np.flatnonzero(self.s_m > self.lanes.length_m[self.lane]):
            self._roll_over(int(i), state, occupied_xy_fn)

    def _roll_over(self, i: int, state: BicycleState, occupied_xy_fn) -> None:
        if self.next_lane[i] == NO_LANE:
            self._respawn(i, state, occupied_xy_fn())
            return
        self.s_m[i] -= self.lanes.length_m[self.lane[i]]
        if self.lanes.in_junction[self.lane[i]]:
            self.granted[i] = False  # left the junction: the reservation ends
        self.lane[i], self.next_lane[i] = self.next_lane[i], self.exit_lane[i]
        self.exit_lane[i] = self._pick_successor(int(self.next_lane[i]))

    def _respawn(self, i: int, state: BicycleState, occupied: list[tuple[float, float]]) -> None:
        """A vehicle at a dead end (maps that have them) reappears on a free slot."""
        slots = self._free_slots(occupied)
        if not slots:
            return  # nowhere to go: it waits at the dead end
        lane, s = slots[int(self.rng.integers(len(slots)))]
        row = self.first_row + i
        self.lane[i], self.s_m[i] = lane, s
        self.next_lane[i] = self._pick_successor(lane)
        self.exit_lane[i] = self._pick_successor(int(self.next_lane[i]))
        self.granted[i] = False
        x, y, yaw, _ = self.lanes.reference(np.array([lane]), np.array([s]))
        state.x_m[row], state.y_m[row], state.yaw_rad[row] = x[0], y[0], yaw[0]
        state.speed_mps[row] = state.steer_angle_rad[row] = 0.0
