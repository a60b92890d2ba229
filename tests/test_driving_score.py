"""Driving-score arithmetic against hand-computed CARLA Leaderboard 2.0 cases."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from drivestack.schema import EpisodeResult, EpisodeStatus, InfractionEvent, InfractionKind
from sim.driving_score import (GlobalScore, format_results_table, global_score, infraction_penalty,
                               penalty_coefficient, results_to_json, score_route)


def _event(kind: InfractionKind, value_pct: float = 0.0) -> InfractionEvent:
    return InfractionEvent(kind=kind, stamp_ns=0, x_m=0.0, y_m=0.0, value_pct=value_pct)


def _result(completion_pct: float, events: list[InfractionEvent], length_m: float = 1000.0,
            status: EpisodeStatus = EpisodeStatus.COMPLETED, scenario: str = "route") -> EpisodeResult:
    penalty, score = score_route(completion_pct, events)
    return EpisodeResult(scenario=scenario, town="Town01", seed=0, status=status, route_length_m=length_m,
                         route_completion_pct=completion_pct, infraction_penalty=penalty, driving_score=score,
                         infractions=tuple(events), duration_s=60.0, distance_driven_m=length_m * completion_pct / 100)


@pytest.mark.parametrize(("kind", "coefficient"), [
    (InfractionKind.COLLISION_PEDESTRIAN, 0.50),
    (InfractionKind.COLLISION_VEHICLE, 0.60),
    (InfractionKind.COLLISION_STATIC, 0.65),
    (InfractionKind.RED_LIGHT, 0.70),
    (InfractionKind.STOP_SIGN, 0.80),
    (InfractionKind.SCENARIO_TIMEOUT, 0.70),
    (InfractionKind.ROUTE_DEVIATION, 1.0),
    (InfractionKind.AGENT_BLOCKED, 1.0),
    (InfractionKind.ROUTE_TIMEOUT, 1.0),
])
def test_fixed_coefficients(kind: InfractionKind, coefficient: float) -> None:
    assert penalty_coefficient(_event(kind)) == coefficient


@pytest.mark.parametrize(("value_pct", "coefficient"), [(100.0, 1.0), (60.0, 0.88), (0.0, 0.7), (150.0, 1.0)])
def test_min_speed_coefficient(value_pct: float, coefficient: float) -> None:
    # 1 - 0.3 * (1 - value/100); an agent faster than traffic is never rewarded above 1.
    assert penalty_coefficient(_event(InfractionKind.MIN_SPEED, value_pct)) == pytest.approx(coefficient)


@pytest.mark.parametrize(("value_pct", "coefficient"), [(0.0, 1.0), (25.0, 0.75), (100.0, 0.0), (130.0, 0.0)])
def test_outside_route_lanes_coefficient(value_pct: float, coefficient: float) -> None:
    assert penalty_coefficient(_event(InfractionKind.OUTSIDE_ROUTE_LANES, value_pct)) == pytest.approx(coefficient)


def test_vehicle_collision_and_red_light_at_80_percent() -> None:
    events = [_event(InfractionKind.COLLISION_VEHICLE), _event(InfractionKind.RED_LIGHT)]
    penalty, score = score_route(80.0, events)
    assert penalty == pytest.approx(0.42)
    assert score == pytest.approx(33.6)


def test_penalty_compounds_per_event() -> None:
    events = [_event(InfractionKind.COLLISION_PEDESTRIAN)] * 2 + [_event(InfractionKind.MIN_SPEED, 50.0),
                                                                   _event(InfractionKind.OUTSIDE_ROUTE_LANES, 10.0)]
    assert infraction_penalty(events) == pytest.approx(0.5 * 0.5 * 0.85 * 0.9)
    assert infraction_penalty([]) == 1.0


def test_route_ending_events_cost_only_completion() -> None:
    penalty, score = score_route(42.0, [_event(InfractionKind.ROUTE_DEVIATION)])
    assert (penalty, score) == (1.0, 42.0)


def test_completion_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        score_route(100.5, [])


def test_global_driving_score_is_mean_of_route_scores() -> None:
    results = [_result(100.0, [_event(InfractionKind.COLLISION_PEDESTRIAN)]),  # DS 50, IS 0.5
               _result(50.0, [])]                                             # DS 50, IS 1.0
    score = global_score(results)
    assert score.driving_score == pytest.approx(50.0)
    assert score.route_completion_pct == pytest.approx(75.0)
    assert score.infraction_penalty == pytest.approx(0.75)
    # The product of the means would say 56.25: not the leaderboard's number.
    assert score.route_completion_pct * score.infraction_penalty == pytest.approx(56.25)


def test_infractions_per_km_use_distance_actually_driven() -> None:
    collision = _event(InfractionKind.COLLISION_VEHICLE)
    results = [_result(50.0, [collision, collision], length_m=2000.0),   # 1 km driven
               _result(100.0, [collision, _event(InfractionKind.RED_LIGHT)], length_m=1000.0)]  # 1 km
    score = global_score(results)
    assert score.km_driven == pytest.approx(2.0)
    assert score.infraction_counts[InfractionKind.COLLISION_VEHICLE] == 3
    assert score.infractions_per_km[InfractionKind.COLLISION_VEHICLE] == pytest.approx(1.5)
    assert score.infractions_per_km[InfractionKind.RED_LIGHT] == pytest.approx(0.5)
    assert score.infractions_per_km[InfractionKind.STOP_SIGN] == 0.0


def test_zero_distance_is_floored_like_the_leaderboard() -> None:
    score = global_score([_result(0.0, [_event(InfractionKind.AGENT_BLOCKED)],
                                  status=EpisodeStatus.AGENT_BLOCKED)])
    assert score.km_driven == pytest.approx(0.001)
    assert score.infractions_per_km[InfractionKind.AGENT_BLOCKED] == pytest.approx(1000.0)


def test_outside_route_lanes_km() -> None:
    results = [_result(100.0, [_event(InfractionKind.OUTSIDE_ROUTE_LANES, 10.0)], length_m=3000.0)]
    assert global_score(results).outside_route_lanes_km == pytest.approx(0.3)


def test_no_results() -> None:
    score = global_score([])
    assert (score.num_routes, score.driving_score, score.route_completion_pct) == (0, 0.0, 0.0)


def _two_results() -> list[EpisodeResult]:
    return [_result(80.0, [_event(InfractionKind.COLLISION_VEHICLE), _event(InfractionKind.RED_LIGHT)],
                    scenario="crossing"),
            _result(30.0, [_event(InfractionKind.ROUTE_DEVIATION)], status=EpisodeStatus.ROUTE_DEVIATION,
                    scenario="highway")]


def test_json_is_serialisable_with_enum_values() -> None:
    results = _two_results()
    data = results_to_json(results, global_score(results))
    text = json.dumps(data)
    assert data["routes"][0]["status"] == "Completed"
    assert data["routes"][1]["infractions"][0]["kind"] == "route_dev"
    assert data["global"]["infractions_per_km"]["collisions_vehicle"] == pytest.approx(1 / 1.1)
    assert json.loads(text)["global"]["driving_score"] == pytest.approx((33.6 + 30.0) / 2)


def test_table_has_route_rows_and_global_row() -> None:
    results = _two_results()
    summary = global_score(results)
    assert isinstance(summary, GlobalScore)
    table = format_results_table(results, summary)
    assert table.row_count == len(results) + 1
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    for expected in ("crossing", "highway", "33.60", "global (2 routes)", "veh", "red", "dev"):
        assert expected in text
