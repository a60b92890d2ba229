"""The privileged expert drives every benchmark route to the end without an infraction."""

import pytest

from drivestack.schema import EpisodeStatus
from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import benchmark_suite


@pytest.mark.parametrize("scenario", benchmark_suite(), ids=lambda s: s.name)
def test_expert_completes_benchmark_route_without_infraction(scenario):
    run = run_episode(BuiltinSimulator(), scenario,
                      lambda road_map, route, sim: ExpertDriver(road_map, route, sim.vehicle, sim.dt_s))
    result = run.result
    assert result.status == EpisodeStatus.COMPLETED
    assert result.route_completion_pct == 100.0
    assert result.infractions == (), [f"{e.kind.value}: {e.detail}" for e in result.infractions]
    assert result.driving_score == 100.0


@pytest.mark.parametrize("name", ["default", "bench_multilane_town_21"])
def test_expert_respects_speed_limits(name):
    from sim.scenario import load_scenario
    sim = BuiltinSimulator()
    obs = sim.reset(load_scenario(name))
    driver = ExpertDriver(sim.road_map, sim.route, sim.vehicle, sim.dt_s)
    worst_mps = 0.0
    for _ in range(2000):
        obs = sim.step(driver.run_step(obs))
        if obs.ego_lane_segment_id >= 0:
            limit = sim.road_map.lanes[obs.ego_lane_segment_id].speed_limit_mps
            worst_mps = max(worst_mps, obs.ego.speed_mps - limit)
    assert worst_mps < 0.1  # m/s above the posted limit, at most
