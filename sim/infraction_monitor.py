"""Per-step referee of one route: progress, infractions and the end of the episode.

A simulator-free mirror of the CARLA Leaderboard 2.0 route criteria
(scenario_runner ``srunner/scenariomanager/scenarioatomics/atomic_criteria.py`` and
``srunner/scenariomanager/timer.py``, branch leaderboard-2.0), fed typed states once
per simulator step. Where this module simplifies the leaderboard, the docstring of the
method says how.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from drivestack.schema import (ActorKind, ActorState, EgoState, EpisodeResult, EpisodeStatus,
                               InfractionEvent, InfractionKind, Route, TrafficLight,
                               TrafficLightState)
from sim import driving_score
from sim.geometry import (boxes_overlap, cumulative_arc_length, project_onto_polyline,
                          segment_crosses_line)

log = logging.getLogger(__name__)

# RouteTimeoutBehavior: 300 s to start with, plus the time to drive each metre of
# progress at 10 % of the speed limit.
ROUTE_TIMEOUT_INITIAL_S = 300.0
ROUTE_TIMEOUT_SPEED_FRACTION = 0.10
DEFAULT_SPEED_LIMIT_MPS = 30.0 / 3.6
# RouteCompletionTest: done once past 99 % of the route and near its last waypoint.
COMPLETION_THRESHOLD_PCT = 99.0
DEFAULT_COMPLETION_RADIUS_M = 10.0
# MinimumSpeedRouteTest(checkpoints=4) as RouteScenario creates it; the last checkpoint
# is closed at the end only past 95 % of the route ("routes end at around 99 %").
MIN_SPEED_CHECKPOINTS = 4
MIN_SPEED_FINAL_CHECKPOINT_FRACTION = 0.95
# Projection window ahead of the current progress: far more than one step drives, far
# less than a loop of the route, so a route through the same junction twice is safe.
PROGRESS_WINDOW_M = 50.0
# Tolerated relative mismatch between stamp increments and dt_s before warning.
STAMP_TOLERANCE = 0.01

# The leaderboard's CollisionTest filter, for a simulator's own collision events.
COLLISION_SAME_PLACE_M = 3.0
COLLISION_FORGET_DISTANCE_M = 5.0
COLLISION_SAME_ACTOR_NS = 5_000_000_000

_COLLISION_KINDS = {
    ActorKind.VEHICLE: InfractionKind.COLLISION_VEHICLE,
    ActorKind.PEDESTRIAN: InfractionKind.COLLISION_PEDESTRIAN,
    ActorKind.STATIC: InfractionKind.COLLISION_STATIC,
}
_ENDING_STATUS = {
    InfractionKind.ROUTE_DEVIATION: EpisodeStatus.ROUTE_DEVIATION,
    InfractionKind.AGENT_BLOCKED: EpisodeStatus.AGENT_BLOCKED,
    InfractionKind.ROUTE_TIMEOUT: EpisodeStatus.ROUTE_TIMEOUT,
}


def _crosses_any(lines: Sequence[tuple[tuple[float, float], tuple[float, float]]],
                 p0: tuple[float, float], p1: tuple[float, float]) -> bool:
    """Whether the step p0 -> p1 crossed one of the lines.

    A bounding-box test in plain Python rejects nearly every line before numpy runs.
    """
    x_low, x_high, y_low, y_high = min(p0[0], p1[0]), max(p0[0], p1[0]), min(p0[1], p1[1]), max(p0[1], p1[1])
    for (x0, y0), (x1, y1) in lines:
        if ((x0 < x_low and x1 < x_low) or (x0 > x_high and x1 > x_high)
                or (y0 < y_low and y1 < y_low) or (y0 > y_high and y1 > y_high)):
            continue
        if segment_crosses_line(p0, p1, (x0, y0), (x1, y1)):
            return True
    return False


def _front_centre(ego: EgoState) -> tuple[float, float]:
    half = ego.length_m / 2
    return ego.x_m + math.cos(ego.yaw_rad) * half, ego.y_m + math.sin(ego.yaw_rad) * half


class EpisodeMonitor:
    """Referee for one route; call ``update`` once per step, then ``finish`` once."""

    def __init__(self, route: Route, dt_s: float, *, deviation_limit_m: float = 30.0,
                 blocked_time_s: float = 180.0, blocked_speed_mps: float = 0.1,
                 route_timeout_s: float | None = None,
                 completion_radius_m: float = DEFAULT_COMPLETION_RADIUS_M,
                 speed_limit_mps: float = DEFAULT_SPEED_LIMIT_MPS,
                 progress_window_m: float = PROGRESS_WINDOW_M) -> None:
        """``route_timeout_s=None`` grows the time budget with progress like the leaderboard,
        using ``speed_limit_mps``; a number fixes the budget instead."""
        if dt_s <= 0.0:
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        self._route = route
        self._dt_ns = round(dt_s * 1e9)
        self._deviation_limit_m = deviation_limit_m
        self._blocked_time_ns = round(blocked_time_s * 1e9)
        self._blocked_speed_mps = blocked_speed_mps
        self._route_timeout_s = route_timeout_s
        self._completion_radius_m = completion_radius_m
        self._speed_limit_mps = speed_limit_mps
        self._progress_window_m = progress_window_m

        self._points_xy = np.array([(wp.x_m, wp.y_m) for wp in route.waypoints], dtype=float)
        self._cumulative_s = cumulative_arc_length(self._points_xy)
        self._length_m = float(self._cumulative_s[-1])
        if self._length_m <= 0.0:
            raise ValueError("the route polyline has zero length")
        if abs(self._length_m - route.length_m) > 0.01 * self._length_m:
            log.warning("Route.length_m=%.1f m but its waypoints span %.1f m; completion uses the waypoints",
                        route.length_m, self._length_m)
        self._min_speed_checkpoint_m = self._length_m / MIN_SPEED_CHECKPOINTS

        self._events: list[InfractionEvent] = []
        self._status: EpisodeStatus | None = None
        self._finished = False
        self._start_ns: int | None = None
        self._last_ns: int | None = None
        self._stamp_warned = False
        self._prev_xy: tuple[float, float] | None = None
        self._prev_front: tuple[float, float] | None = None
        self._segment_index = 0
        self._progress_m = 0.0
        self._distance_driven_m = 0.0
        self._outside_lanes_m = 0.0
        self._last_moving_ns = 0
        self._contacts: set[int] = set()
        self._collision_places: list[tuple[float, float]] = []  # reported collisions (CARLA)
        self._last_collision: tuple[int, int] | None = None  # (actor id, stamp_ns)
        # Min-speed checkpoint accumulators (sums of speeds over the sampled steps).
        self._checkpoint_start_m = 0.0
        self._ego_speed_sum = 0.0
        self._reference_speed_sum = 0.0
        self._speed_samples = 0
        self._checkpoint_values_pct: list[float] = []

    # ----------------------------------------------------------------- state
    @property
    def done(self) -> bool:
        return self._status is not None

    @property
    def status(self) -> EpisodeStatus | None:
        """How the route ended; None while it is still running."""
        return self._status

    @property
    def progress_m(self) -> float:
        return self._progress_m

    @property
    def route_completion_pct(self) -> float:
        if self._status is EpisodeStatus.COMPLETED:
            return 100.0
        return min(100.0 * self._progress_m / self._length_m, 100.0)

    @property
    def events(self) -> tuple[InfractionEvent, ...]:
        return tuple(self._events)

    @property
    def route_timeout_budget_s(self) -> float:
        if self._route_timeout_s is not None:
            return self._route_timeout_s
        return ROUTE_TIMEOUT_INITIAL_S + self._progress_m / (self._speed_limit_mps * ROUTE_TIMEOUT_SPEED_FRACTION)

    # ---------------------------------------------------------------- update
    def update(self, stamp_ns: int, ego: EgoState, actors: Sequence[ActorState],
               lights: Sequence[TrafficLight], ego_on_route_lanes: bool,
               reference_speed_mps: float | None,
               reported_collisions: Sequence[int] | None = None) -> list[InfractionEvent]:
        """Referee one simulator step; returns the events it raised (none once done).

        ``reference_speed_mps`` is the mean speed of the surrounding traffic this step
        (None when there is none, and the step is left out of the min-speed test).
        ``reported_collisions``: the simulator's own collision sensor (CARLA), the ids of
        the actors the ego started touching this step (-1 or an unknown id: the static
        layout); None = detect contacts from the actors' boxes here.
        """
        if self._status is not None:
            return []
        self._advance_clock(stamp_ns)
        self._advance_odometry(ego, ego_on_route_lanes)
        lateral_m = self._advance_progress(ego)
        events = self._min_speed_step(stamp_ns, ego, reference_speed_mps)
        events += (self._collisions(stamp_ns, ego, actors) if reported_collisions is None
                   else self._reported_collisions(stamp_ns, ego, actors, reported_collisions))
        events += self._red_lights(stamp_ns, ego, lights)
        events += self._end_conditions(stamp_ns, ego, lateral_m)
        self._events.extend(events)
        return events

    def _advance_clock(self, stamp_ns: int) -> None:
        if self._last_ns is None:
            self._start_ns = self._last_moving_ns = stamp_ns
        elif stamp_ns <= self._last_ns:
            raise ValueError(f"stamp_ns must increase: {stamp_ns} after {self._last_ns}")
        elif not self._stamp_warned and abs(stamp_ns - self._last_ns - self._dt_ns) > STAMP_TOLERANCE * self._dt_ns:
            # Timers use the stamps; a mismatch with dt_s usually means a caller bug.
            log.warning("stamp advanced %d ns, dt_s says %d ns", stamp_ns - self._last_ns, self._dt_ns)
            self._stamp_warned = True
        self._last_ns = stamp_ns

    def _advance_odometry(self, ego: EgoState, ego_on_route_lanes: bool) -> None:
        """Distance driven; what this step drove counts as outside when the ego ends it outside."""
        if self._prev_xy is not None:
            step_m = math.hypot(ego.x_m - self._prev_xy[0], ego.y_m - self._prev_xy[1])
            self._distance_driven_m += step_m
            if not ego_on_route_lanes:
                self._outside_lanes_m += step_m
        self._prev_xy = (ego.x_m, ego.y_m)

    def _advance_progress(self, ego: EgoState) -> float:
        """Project the ego forward from its last segment; returns its distance from the route.

        The leaderboard advances over discrete waypoints (a dot-product test); the
        continuous projection here gives the same completion on dense routes and a
        correct one on sparse synthetic routes.
        """
        window_end_s = self._progress_m + self._progress_window_m
        window = max(int(np.searchsorted(self._cumulative_s, window_end_s, side="right")) - self._segment_index, 1)
        s_m, lateral_m, self._segment_index = project_onto_polyline(
            self._points_xy, self._cumulative_s, (ego.x_m, ego.y_m),
            hint_index=self._segment_index, window=window)
        self._progress_m = max(self._progress_m, s_m)
        return abs(lateral_m)

    # -------------------------------------------------------------- criteria
    def _event(self, kind: InfractionKind, stamp_ns: int, xy: tuple[float, float], *,
               other_id: int = -1, value_pct: float = 0.0, detail: str = "") -> InfractionEvent:
        log.info("%s at t=%.2f s: %s", kind.value, self._elapsed_s(stamp_ns), detail)
        return InfractionEvent(kind, stamp_ns, float(xy[0]), float(xy[1]), other_id, value_pct, detail)

    def _elapsed_s(self, stamp_ns: int) -> float:
        return 0.0 if self._start_ns is None else (stamp_ns - self._start_ns) / 1e9

    def _min_speed_step(self, stamp_ns: int, ego: EgoState,
                        reference_speed_mps: float | None) -> list[InfractionEvent]:
        """MinimumSpeedRouteTest: close a checkpoint every quarter of the route, then sample."""
        events = []
        if self._progress_m - self._checkpoint_start_m > self._min_speed_checkpoint_m:
            events += self._close_min_speed_checkpoint(stamp_ns, (ego.x_m, ego.y_m))
        if reference_speed_mps is not None:
            self._ego_speed_sum += abs(ego.speed_mps)
            self._reference_speed_sum += reference_speed_mps
            self._speed_samples += 1
        return events

    def _close_min_speed_checkpoint(self, stamp_ns: int, xy: tuple[float, float]) -> list[InfractionEvent]:
        """Ego mean speed as % of the traffic's (100 when there was no traffic to compare)."""
        if self._speed_samples > 0 and self._reference_speed_sum > 0.0:
            value_pct = round(self._ego_speed_sum / self._reference_speed_sum * 100.0, 2)
        else:
            value_pct = 100.0
        self._checkpoint_values_pct.append(value_pct)
        self._checkpoint_start_m = self._progress_m
        self._ego_speed_sum = self._reference_speed_sum = 0.0
        self._speed_samples = 0
        if value_pct >= 100.0:
            return []
        return [self._event(InfractionKind.MIN_SPEED, stamp_ns, xy, value_pct=value_pct,
                            detail=f"average speed {value_pct}% of the surrounding traffic's")]

    def _collisions(self, stamp_ns: int, ego: EgoState, actors: Sequence[ActorState]) -> list[InfractionEvent]:
        """One event per actor per contact: an actor counts again only after separating.

        The leaderboard's collision sensor instead merges contacts with the same actor
        within 5 s or 5 m of the last one and ignores contacts while the ego stands.
        """
        if not actors:
            self._contacts = set()
            return []
        boxes = np.array([(a.x_m, a.y_m, a.yaw_rad, a.length_m, a.width_m) for a in actors], dtype=float)
        ego_box = (ego.x_m, ego.y_m, ego.yaw_rad, ego.length_m, ego.width_m)
        touching = [actors[i] for i in np.flatnonzero(boxes_overlap(ego_box, boxes))]
        events = [self._event(_COLLISION_KINDS[a.kind], stamp_ns, (ego.x_m, ego.y_m), other_id=a.actor_id,
                              detail=f"collided with {a.kind.value} {a.actor_id}")
                  for a in touching if a.actor_id not in self._contacts]
        self._contacts = {a.actor_id for a in touching}
        return events

    def _reported_collisions(self, stamp_ns: int, ego: EgoState, actors: Sequence[ActorState],
                             actor_ids: Sequence[int]) -> list[InfractionEvent]:
        """The simulator's collision events, filtered as the leaderboard's CollisionTest
        does: a car pushing against another touches, bounces and touches again, which is
        one collision. An event is ignored when it is with the actor of the last counted
        collision within 5 s, or within 3 m of a counted collision's place (places are
        forgotten once the ego is 5 m away)."""
        xy = (ego.x_m, ego.y_m)
        self._collision_places = [p for p in self._collision_places
                                  if math.dist(p, xy) <= COLLISION_FORGET_DISTANCE_M]
        if self._last_collision is not None and stamp_ns - self._last_collision[1] > COLLISION_SAME_ACTOR_NS:
            self._last_collision = None
        kinds = {a.actor_id: a.kind for a in actors}
        events = []
        for other in actor_ids:
            same_actor = self._last_collision is not None and self._last_collision[0] == other
            if same_actor or any(math.dist(p, xy) <= COLLISION_SAME_PLACE_M for p in self._collision_places):
                continue
            kind = kinds.get(other, ActorKind.STATIC)
            events.append(self._event(_COLLISION_KINDS[kind], stamp_ns, xy, other_id=other,
                                      detail=f"collided with {kind.value} {other}"))
            self._collision_places.append(xy)
            self._last_collision = (other, stamp_ns)
        return events

    def _red_lights(self, stamp_ns: int, ego: EgoState, lights: Sequence[TrafficLight]) -> list[InfractionEvent]:
        """The front centre crossed a red light's stop line while driving forwards.

        At most one event per light per step. The leaderboard tests the vehicle's tail
        against the lane's stop line instead, and skips a light it just counted.
        """
        front = _front_centre(ego)
        prev_front, self._prev_front = self._prev_front, front
        if prev_front is None:
            return []
        heading = (math.cos(ego.yaw_rad), math.sin(ego.yaw_rad))
        moved = (front[0] - prev_front[0], front[1] - prev_front[1])
        if moved[0] * heading[0] + moved[1] * heading[1] <= 0.0:
            return []  # standing or reversing: a line passed backwards is no infraction
        return [self._event(InfractionKind.RED_LIGHT, stamp_ns, front, other_id=light.light_id,
                            detail=f"ran red light {light.light_id}")
                for light in lights
                if light.state == TrafficLightState.RED and _crosses_any(light.stop_lines, prev_front, front)]

    def _end_conditions(self, stamp_ns: int, ego: EgoState, distance_from_route_m: float) -> list[InfractionEvent]:
        """Completion first (a finished route is not also a failure), then the failures."""
        end_x, end_y = self._points_xy[-1]
        near_end = math.hypot(ego.x_m - end_x, ego.y_m - end_y) < self._completion_radius_m
        if 100.0 * self._progress_m / self._length_m > COMPLETION_THRESHOLD_PCT and near_end:
            self._status = EpisodeStatus.COMPLETED
            return []
        if abs(ego.speed_mps) >= self._blocked_speed_mps:
            self._last_moving_ns = stamp_ns
        xy = (ego.x_m, ego.y_m)
        if distance_from_route_m > self._deviation_limit_m:
            return self._end(InfractionKind.ROUTE_DEVIATION, stamp_ns, xy,
                             f"{distance_from_route_m:.1f} m from the route")
        if stamp_ns - self._last_moving_ns > self._blocked_time_ns:
            return self._end(InfractionKind.AGENT_BLOCKED, stamp_ns, xy,
                             f"slower than {self._blocked_speed_mps} m/s for {self._blocked_time_ns / 1e9:.0f} s")
        if self._elapsed_s(stamp_ns) > self.route_timeout_budget_s:
            return self._end(InfractionKind.ROUTE_TIMEOUT, stamp_ns, xy,
                             f"time budget of {self.route_timeout_budget_s:.1f} s used up")
        return []

    def _end(self, kind: InfractionKind, stamp_ns: int, xy: tuple[float, float], detail: str) -> list[InfractionEvent]:
        self._status = _ENDING_STATUS[kind]
        return [self._event(kind, stamp_ns, xy, detail=detail)]

    # ---------------------------------------------------------------- finish
    def finish(self, stamp_ns: int, scenario: str, town: str, seed: int, trajectory_digest: str = "", *,
               abort_status: EpisodeStatus | None = None) -> EpisodeResult:
        """Close the route: end-of-episode events, completion, penalty and driving score.

        A route the caller stops before it ended gets ``abort_status`` (e.g.
        SIMULATION_ERROR) or, without one, counts as a route timeout: the agent did
        not finish in the time it was given.
        """
        if self._finished:
            raise RuntimeError("finish() was already called for this episode")
        self._finished = True
        xy = self._prev_xy or (self._route.waypoints[0].x_m, self._route.waypoints[0].y_m)
        if self._status is None:
            self._abort(stamp_ns, xy, abort_status)
        if self._progress_m / self._length_m > MIN_SPEED_FINAL_CHECKPOINT_FRACTION:
            self._events += self._close_min_speed_checkpoint(stamp_ns, xy)
        if self._outside_lanes_m > 0.0:
            value_pct = min(100.0 * self._outside_lanes_m / self._length_m, 100.0)
            self._events.append(self._event(InfractionKind.OUTSIDE_ROUTE_LANES, stamp_ns, xy, value_pct=value_pct,
                                            detail=f"{self._outside_lanes_m:.1f} m outside the route lanes"))
        completion_pct = self.route_completion_pct
        penalty, score = driving_score.score_route(completion_pct, self._events)
        return EpisodeResult(
            scenario=scenario, town=town, seed=seed, status=self._status,
            route_length_m=self._length_m, route_completion_pct=completion_pct,
            infraction_penalty=penalty, driving_score=score, infractions=tuple(self._events),
            duration_s=self._elapsed_s(stamp_ns), distance_driven_m=self._distance_driven_m,
            trajectory_digest=trajectory_digest,
            extra={"outside_route_lanes_m": self._outside_lanes_m,
                   "min_speed_checkpoints_pct": list(self._checkpoint_values_pct)})

    def _abort(self, stamp_ns: int, xy: tuple[float, float], abort_status: EpisodeStatus | None) -> None:
        if abort_status is EpisodeStatus.COMPLETED:
            raise ValueError("a route is completed by reaching its end, not by abort_status")
        if abort_status in (EpisodeStatus.SIMULATION_ERROR, EpisodeStatus.AGENT_CRASHED):
            self._status = abort_status  # the leaderboard's crash statuses: no infraction
            return
        if abort_status is None:
            log.warning("episode stopped before the route ended; counted as a route timeout")
            abort_status = EpisodeStatus.ROUTE_TIMEOUT
        kind = next(k for k, status in _ENDING_STATUS.items() if status is abort_status)
        self._events += self._end(kind, stamp_ns, xy, "stopped by the caller before the route ended")
