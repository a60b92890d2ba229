"""Maneuvers (scenarios as data, tests/data/maneuvers): the modular planner closes the
loop on the simulator's bicycle with scripted actors on real towns; see
tests/maneuvers.py for what stands in for perception."""

from __future__ import annotations

import pytest

from tests.maneuvers import load_maneuver, run_maneuver

EMERGENCY_DECEL_MPS2 = 7.5  # the planner's emergency limit plus the pedal model's rounding
COMFORT_TOLERANCE_MPS2 = 0.3


def _check_common(result) -> None:
    assert not result.collided, result.trace[-5:]
    assert result.max_decel_mps2 <= EMERGENCY_DECEL_MPS2
    assert result.max_comfort_violation_mps2 <= COMFORT_TOLERANCE_MPS2, \
        f"braked {result.max_comfort_violation_mps2:.2f} m/s^2 over the comfort limit without an emergency"


def test_approach_stopped_car_from_60_m():
    result = run_maneuver(load_maneuver("stopped_car"))
    _check_common(result)
    assert result.stopped
    assert 1.0 < result.min_gap_m < 8.0  # stands behind it, not far back


def test_lead_car_brakes_at_4_mps2():
    result = run_maneuver(load_maneuver("lead_brakes"))
    _check_common(result)
    assert result.stopped
    assert result.min_gap_m > 1.0


def test_pedestrian_steps_out_25_m_ahead():
    result = run_maneuver(load_maneuver("pedestrian_steps_out"))
    _check_common(result)
    assert result.stopped
    assert any(b.startswith("stop: pedestrian") for b in result.behaviours), result.behaviours


def test_red_light_at_junction_stops_at_line_then_goes():
    result = run_maneuver(load_maneuver("red_light"))
    _check_common(result)
    assert result.stopped
    line = result.facts["stop_line_s"]
    assert line - 4.0 < result.stop_front_s_m <= line + 0.5, (result.stop_front_s_m, line)
    assert result.final_s_m > line + 20.0  # went on at green


def test_yields_to_crossing_traffic_at_unsignalled_junction():
    result = run_maneuver(load_maneuver("crossing_traffic"))
    _check_common(result)
    assert any(b.startswith("stop: yield at junction") or b.startswith("slow: yield at junction")
               for b in result.behaviours), result.behaviours
    assert result.final_s_m > result.facts["stop_line_s"] + 20.0


def test_stalled_car_on_two_lane_road_changes_lane_and_passes():
    result = run_maneuver(load_maneuver("stalled_car"))
    _check_common(result)
    assert result.max_lateral_m > 2.5  # on the neighbour lane
    assert any(b.startswith("change lane") for b in result.behaviours), result.behaviours
    assert result.final_s_m > 70.0 + 15.0  # past the stalled car


@pytest.mark.parametrize("name", ["stopped_car", "red_light"])
def test_maneuvers_are_deterministic(name):
    a, b = run_maneuver(load_maneuver(name), seed=3), run_maneuver(load_maneuver(name), seed=3)
    assert a.trace == b.trace
