"""Traffic looks plausible: a 10-minute soak with 50 NPCs and 30 pedestrians per town."""

import pytest

from sim.soak import LANE_DEPARTURE_M, run_soak
from sim.towns import TOWNS


@pytest.mark.parametrize("town", sorted(TOWNS))
def test_ten_minute_soak(town):
    report = run_soak(town, duration_s=600.0, npc_vehicles=50, pedestrians=30, seed=0)
    print(report)  # the counts, for the log
    assert report.vehicle_collisions == 0, report.collision_pairs
    assert report.pedestrian_collisions == 0, report.collision_pairs
    assert report.lane_departures == 0, f"max offset {report.max_lateral_offset_m:.2f} m > {LANE_DEPARTURE_M} m"
    assert report.longest_junction_stall_s <= 60.0
    # Traffic moves: every NPC covers on average more than 1 km in 10 minutes.
    assert report.distance_driven_m / report.npc_vehicles > 1000.0
    assert report.junction_entries > 200
