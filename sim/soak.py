"""Traffic soak: run NPC traffic for a long time and count what a viewer would flag.

Counts NPC-NPC and NPC-pedestrian box overlaps, NPCs off their lane centre, and junction
stalls (vehicles waiting at a junction that nobody has entered for a long time). The
ego is driven by the expert on a long random route, so traffic also meets an agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.builtin import BuiltinSimulator
from sim.expert import ExpertDriver
from sim.scenario import Scenario

LANE_DEPARTURE_M = 1.0  # centre of an NPC this far off its lane centre line


@dataclass
class SoakReport:
    town: str
    steps: int
    sim_time_s: float
    npc_vehicles: int
    pedestrians: int
    vehicle_collisions: int = 0
    pedestrian_collisions: int = 0
    lane_departures: int = 0
    max_lateral_offset_m: float = 0.0
    longest_junction_stall_s: float = 0.0
    junction_entries: int = 0
    distance_driven_m: float = 0.0
    collision_pairs: list[tuple[int, int]] = field(default_factory=list)


def run_soak(town: str, duration_s: float = 600.0, npc_vehicles: int = 50, pedestrians: int = 30,
             seed: int = 0) -> SoakReport:
    sim = BuiltinSimulator()
    scenario = Scenario(name=f"soak_{town}", town=town, route_length_m=8000.0, npc_vehicles=npc_vehicles,
                        pedestrians=pedestrians, seed=seed)
    obs = sim.reset(scenario)
    expert = ExpertDriver(sim.road_map, sim.route, sim.vehicle, sim.dt_s)
    traffic = sim.traffic
    steps = int(round(duration_s / sim.dt_s))
    report = SoakReport(town, steps, steps * sim.dt_s, npc_vehicles, pedestrians)
    n_vehicles = 1 + npc_vehicles
    in_contact: set[tuple[int, int]] = set()
    last_entry_s = {jid: 0.0 for jid in sim.road_map.junctions}
    prev_lane = traffic.lane.copy()
    for _ in range(steps):
        obs = sim.step(expert.run_step(obs))
        t = sim.time_s
        report.distance_driven_m += float(np.abs(sim.state.speed_mps[1:]).sum() * sim.dt_s)
        pairs = {p for p in sim.overlapping_pairs() if p[0] < n_vehicles}
        for a, b in pairs - in_contact:  # count each contact once
            if b < n_vehicles:
                report.vehicle_collisions += 1
            else:
                report.pedestrian_collisions += 1
            report.collision_pairs.append((a, b))
        in_contact = pairs
        offset = np.abs(traffic.lateral_offset_m)
        report.lane_departures += int((offset > LANE_DEPARTURE_M).sum())
        report.max_lateral_offset_m = max(report.max_lateral_offset_m, float(offset.max(initial=0.0)))
        entered = (traffic.lane != prev_lane) & sim.lanes.in_junction[traffic.lane]
        for lane in traffic.lane[entered]:
            last_entry_s[sim.road_map.lanes[lane].junction_id] = t
        report.junction_entries += int(entered.sum())
        prev_lane = traffic.lane.copy()
        waiting = {sim.road_map.lanes[c].junction_id for c in traffic.waiting_at_junction if c >= 0}
        for jid in waiting:
            report.longest_junction_stall_s = max(report.longest_junction_stall_s, t - last_entry_s[jid])
        for jid in set(last_entry_s) - waiting:
            last_entry_s[jid] = t  # nobody waiting: no stall running
    sim.close()
    return report
