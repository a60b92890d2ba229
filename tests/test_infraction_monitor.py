"""EpisodeMonitor on synthetic straight routes: completion, endings and infractions."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from drivestack.schema import (ActorKind, ActorState, EgoState, EpisodeResult, EpisodeStatus, InfractionKind,
                               RoadOption, Route, RouteWaypoint, TrafficLight, TrafficLightState)
from sim.infraction_monitor import EpisodeMonitor

DT_S = 0.05
DT_NS = 50_000_000


def _route(points: list[tuple[float, float]]) -> Route:
    waypoints = tuple(RouteWaypoint(x, y, 0.0, RoadOption.LANEFOLLOW) for x, y in points)
    length = sum(math.dist(a, b) for a, b in zip(points, points[1:]))
    return Route(waypoints=waypoints, length_m=length)


def _straight(length_m: float = 200.0, spacing_m: float = 1.0) -> Route:
    count = round(length_m / spacing_m)
    return _route([(i * spacing_m, 0.0) for i in range(count + 1)])


def _ego(step: int, x: float, y: float = 0.0, speed: float = 10.0, yaw: float = 0.0) -> EgoState:
    return EgoState(stamp_ns=step * DT_NS, x_m=x, y_m=y, yaw_rad=yaw, speed_mps=speed)


def _drive(monitor: EpisodeMonitor, steps: int, x_of: Callable[[int], float], *,
           y_of: Callable[[int], float] = lambda _: 0.0, speed: float = 10.0,
           actors_of: Callable[[int], list[ActorState]] = lambda _: [],
           lights_of: Callable[[int], list[TrafficLight]] = lambda _: [],
           on_lanes_of: Callable[[int], bool] = lambda _: True,
           reference_of: Callable[[int], float | None] = lambda _: None, first_step: int = 0) -> int:
    """Feed steps until the monitor is done; returns the last step fed."""
    step = first_step
    for step in range(first_step, first_step + steps):
        monitor.update(step * DT_NS, _ego(step, x_of(step), y_of(step), speed), actors_of(step), lights_of(step),
                       on_lanes_of(step), reference_of(step))
        if monitor.done:
            break
    return step


def _finish(monitor: EpisodeMonitor, step: int) -> EpisodeResult:
    return monitor.finish(step * DT_NS, "test", "Town01", 0, "digest")


def _kinds(result: EpisodeResult) -> list[InfractionKind]:
    return [event.kind for event in result.infractions]


def test_clean_drive_completes_the_route() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    last = _drive(monitor, 1000, lambda k: 0.5 * k)  # 10 m/s
    assert monitor.done and monitor.status is EpisodeStatus.COMPLETED
    assert 0.5 * last > 198.0  # past 99 % of 200 m and within 10 m of the end
    result = _finish(monitor, last)
    assert (result.route_completion_pct, result.infraction_penalty, result.driving_score) == (100.0, 1.0, 100.0)
    assert result.infractions == ()
    assert result.distance_driven_m == pytest.approx(0.5 * last)
    assert result.duration_s == pytest.approx(last * DT_S)


def test_sparse_route_of_two_waypoints_completes_too() -> None:
    monitor = EpisodeMonitor(_route([(0.0, 0.0), (200.0, 0.0)]), DT_S)
    _drive(monitor, 1000, lambda k: 0.5 * k)
    assert monitor.status is EpisodeStatus.COMPLETED


def test_progress_never_decreases() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    _drive(monitor, 100, lambda k: 0.5 * k)
    progress = monitor.progress_m
    _drive(monitor, 20, lambda k: 49.5 - 0.5 * (k - 100), first_step=100)  # reverses 10 m
    assert monitor.progress_m == progress
    assert monitor.route_completion_pct == pytest.approx(100.0 * progress / 200.0)


def test_route_through_the_same_place_twice() -> None:
    # Out along y=0, back along y=4: on the way out the ego must not snap to the way back.
    monitor = EpisodeMonitor(_route([(0.0, 0.0), (100.0, 0.0), (100.0, 4.0), (0.0, 4.0)]), DT_S)
    _drive(monitor, 100, lambda k: 0.5 * k, y_of=lambda _: 2.2)  # nearer the return leg
    assert monitor.progress_m == pytest.approx(49.5)
    assert not monitor.done


def test_deviation_ends_the_route_beyond_30_m() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    _drive(monitor, 1, lambda _: 50.0, y_of=lambda _: 29.9, first_step=0)
    assert not monitor.done
    _drive(monitor, 1, lambda _: 50.0, y_of=lambda _: 30.1, first_step=1)
    assert monitor.status is EpisodeStatus.ROUTE_DEVIATION
    result = _finish(monitor, 1)
    assert _kinds(result) == [InfractionKind.ROUTE_DEVIATION]
    assert result.status is EpisodeStatus.ROUTE_DEVIATION
    assert result.route_completion_pct == pytest.approx(25.0)
    assert result.driving_score == pytest.approx(25.0)  # no penalty, only the lost completion


def test_blocked_after_180_s_standing() -> None:
    monitor = EpisodeMonitor(_straight(), 0.5)
    step_ns = 500_000_000
    for step in range(361):  # 0 .. 180.0 s
        monitor.update(step * step_ns, _ego(0, 20.0, speed=0.05), [], [], True, None)
    assert not monitor.done  # exactly 180 s is still allowed
    monitor.update(361 * step_ns, _ego(0, 20.0, speed=0.0), [], [], True, None)
    assert monitor.status is EpisodeStatus.AGENT_BLOCKED
    assert [e.kind for e in monitor.events] == [InfractionKind.AGENT_BLOCKED]


def test_moving_again_resets_the_blocked_timer() -> None:
    monitor = EpisodeMonitor(_straight(), 0.5)
    step_ns = 500_000_000
    for step in range(500):  # 250 s, of which never more than 180 s standing in a row
        speed = 1.0 if step == 300 else 0.0  # one moving step at 150 s
        monitor.update(step * step_ns, _ego(0, 20.0, speed=speed), [], [], True, None)
    assert not monitor.done


def test_route_timeout_fixed_and_progress_based() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S, route_timeout_s=5.0)
    last = _drive(monitor, 1000, lambda k: 0.05 * k, speed=1.0)
    assert monitor.status is EpisodeStatus.ROUTE_TIMEOUT
    assert last * DT_S == pytest.approx(5.05)
    assert _kinds(_finish(monitor, last)) == [InfractionKind.ROUTE_TIMEOUT]

    growing = EpisodeMonitor(_straight(), DT_S, speed_limit_mps=10.0)
    _drive(growing, 101, lambda k: 0.5 * k)
    # 300 s plus 50 m at 10 % of 10 m/s.
    assert growing.route_timeout_budget_s == pytest.approx(300.0 + 50.0 / 1.0)


def test_finish_before_the_end_counts_as_timeout_or_given_status() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    last = _drive(monitor, 10, lambda k: 0.5 * k)
    result = _finish(monitor, last)
    assert result.status is EpisodeStatus.ROUTE_TIMEOUT
    assert _kinds(result) == [InfractionKind.ROUTE_TIMEOUT]
    with pytest.raises(RuntimeError):
        _finish(monitor, last)

    crashed = EpisodeMonitor(_straight(), DT_S)
    _drive(crashed, 10, lambda k: 0.5 * k)
    result = crashed.finish(9 * DT_NS, "test", "Town01", 0, abort_status=EpisodeStatus.SIMULATION_ERROR)
    assert result.status is EpisodeStatus.SIMULATION_ERROR and result.infractions == ()


def _parked(actor_id: int, x: float, kind: ActorKind = ActorKind.VEHICLE, y: float = 0.0) -> ActorState:
    return ActorState(actor_id=actor_id, kind=kind, x_m=x, y_m=y, yaw_rad=0.0, speed_mps=0.0,
                      length_m=4.5, width_m=1.9)


def test_collision_counted_once_per_contact() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    # The ego drives through a parked car (contact over many steps), then a pedestrian.
    actors = lambda _: [_parked(7, 30.0), _parked(8, 80.0, ActorKind.PEDESTRIAN)]  # noqa: E731
    last = _drive(monitor, 220, lambda k: 0.5 * k, actors_of=actors)
    kinds = [e.kind for e in monitor.events]
    assert kinds == [InfractionKind.COLLISION_VEHICLE, InfractionKind.COLLISION_PEDESTRIAN]
    assert [e.other_actor_id for e in monitor.events] == [7, 8]

    # The same car again after separating: a second contact.
    moved = lambda k: [_parked(7, 0.5 * k + 2.0)] if k < 240 else [_parked(7, 0.5 * k + 10.0)]  # noqa: E731
    _drive(monitor, 30, lambda k: 0.5 * k, actors_of=moved, first_step=last + 1)
    assert [e.other_actor_id for e in monitor.events] == [7, 8, 7]
    assert _finish(monitor, 250).infraction_penalty == pytest.approx(0.6 * 0.5 * 0.6)


def test_static_collision_kind() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    _drive(monitor, 100, lambda k: 0.5 * k, actors_of=lambda _: [_parked(3, 20.0, ActorKind.STATIC, y=1.5)])
    assert [e.kind for e in monitor.events] == [InfractionKind.COLLISION_STATIC]


def _light(state: TrafficLightState) -> TrafficLight:
    return TrafficLight(light_id=5, x_m=52.0, y_m=3.0, state=state, junction_id=1,
                        stop_lines=(((50.0, -2.0), (50.0, 2.0)), ((50.0, 2.0), (50.0, 6.0))))


@pytest.mark.parametrize(("state", "expected"), [(TrafficLightState.RED, 1), (TrafficLightState.GREEN, 0),
                                                 (TrafficLightState.YELLOW, 0)])
def test_red_light_counted_only_when_red(state: TrafficLightState, expected: int) -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    # Front centre = x + 2.25 m; it steps onto the line exactly (x = 47.75) and beyond.
    _drive(monitor, 200, lambda k: 0.25 * k, lights_of=lambda _: [_light(state)])
    events = [e for e in monitor.events if e.kind is InfractionKind.RED_LIGHT]
    assert len(events) == expected
    if expected:
        assert events[0].other_actor_id == 5 and events[0].x_m == pytest.approx(50.0)


def test_red_light_not_counted_when_reversing_over_the_line() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    light = lambda _: [_light(TrafficLightState.RED)]  # noqa: E731
    _drive(monitor, 40, lambda k: 50.0 - 0.25 * k, lights_of=light)  # front 52.25 -> 42.5, backwards
    assert monitor.events == ()


def test_outside_route_lanes_percentage() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    # Off the route lanes for x in (50, 70]: 20 m of a 200 m route.
    last = _drive(monitor, 1000, lambda k: 0.5 * k, on_lanes_of=lambda k: not 50.0 < 0.5 * k <= 70.0)
    result = _finish(monitor, last)
    assert _kinds(result) == [InfractionKind.OUTSIDE_ROUTE_LANES]
    assert result.infractions[0].value_pct == pytest.approx(10.0)
    assert result.driving_score == pytest.approx(90.0)
    assert result.extra["outside_route_lanes_m"] == pytest.approx(20.0)


def test_min_speed_checkpoints_against_traffic() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    last = _drive(monitor, 1000, lambda k: 0.5 * k, reference_of=lambda _: 20.0)  # ego 10 m/s
    result = _finish(monitor, last)
    values = [e.value_pct for e in result.infractions if e.kind is InfractionKind.MIN_SPEED]
    assert values == [50.0] * 4  # three quarters while driving, the last one at the end
    assert result.infraction_penalty == pytest.approx((1 - 0.3 * 0.5) ** 4)


def test_min_speed_skipped_without_traffic_and_passed_when_as_fast() -> None:
    for reference in (None, 10.0, 5.0):
        monitor = EpisodeMonitor(_straight(), DT_S)
        last = _drive(monitor, 1000, lambda k: 0.5 * k, reference_of=lambda _, r=reference: r)
        assert _finish(monitor, last).infractions == ()


def test_stamps_must_increase() -> None:
    monitor = EpisodeMonitor(_straight(), DT_S)
    monitor.update(DT_NS, _ego(1, 0.0), [], [], True, None)
    with pytest.raises(ValueError):
        monitor.update(DT_NS, _ego(1, 0.0), [], [], True, None)
