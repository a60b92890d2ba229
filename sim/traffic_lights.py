"""Traffic-light cycles: each signalled junction serves its approaches one at a time.

CARLA's traffic-light groups do the same (one green at a time, then yellow, then
red for all), which keeps conflicting flows apart without protected-turn phases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivestack.schema import TrafficLight, TrafficLightState
from sim.road_map import RoadMap


@dataclass(frozen=True)
class SignalTiming:
    green_s: float = 10.0
    yellow_s: float = 3.0
    all_red_s: float = 1.5

    @property
    def slot_s(self) -> float:
        return self.green_s + self.yellow_s + self.all_red_s


class TrafficLightController:
    """Deterministic cycles; every junction starts at a seeded random point of its cycle."""

    def __init__(self, road_map: RoadMap, rng: np.random.Generator, timing: SignalTiming = SignalTiming()):
        self.road_map = road_map
        self.timing = timing
        self._groups: dict[int, tuple[int, ...]] = {
            jid: j.signal_ids for jid, j in sorted(road_map.junctions.items()) if j.signal_ids}
        self._offset_s = {jid: float(rng.uniform(0.0, timing.slot_s * len(ids)))
                          for jid, ids in self._groups.items()}
        self._light_state = np.full(len(road_map.signals), TrafficLightState.GREEN, dtype=np.int64)
        self._junction_of_light = {g.light_id: g.junction_id for g in road_map.signals}
        self.time_s = 0.0
        self._snapshot_key: bytes | None = None
        self._snapshot: tuple[TrafficLight, ...] = ()
        self.update(0.0)

    def update(self, time_s: float) -> None:
        t = self.timing
        self.time_s = time_s
        for jid, ids in self._groups.items():
            phase = (time_s + self._offset_s[jid]) % (t.slot_s * len(ids))
            active, within = divmod(phase, t.slot_s)
            for k, light_id in enumerate(ids):
                if k != int(active) or within >= t.green_s + t.yellow_s:
                    state = TrafficLightState.RED
                elif within < t.green_s:
                    state = TrafficLightState.GREEN
                else:
                    state = TrafficLightState.YELLOW
                self._light_state[light_id] = state

    def state(self, light_id: int) -> TrafficLightState:
        return TrafficLightState(int(self._light_state[light_id]))

    def red_remaining_s(self, light_id: int) -> float:
        """Seconds until ``light_id`` turns green again (0 if it is not red)."""
        if self.state(light_id) != TrafficLightState.RED:
            return 0.0
        jid = self._junction_of_light[light_id]
        ids = self._groups[jid]
        cycle = self.timing.slot_s * len(ids)
        phase = (self.time_s + self._offset_s[jid]) % cycle
        green_at = ids.index(light_id) * self.timing.slot_s
        return (green_at - phase) % cycle

    def snapshot(self) -> tuple[TrafficLight, ...]:
        # Rebuilt only when a lamp changed: the observation asks for it every step.
        key = self._light_state.tobytes()
        if key != self._snapshot_key:
            self._snapshot_key = key
            self._snapshot = tuple(
                TrafficLight(g.light_id, g.x_m, g.y_m, self.state(g.light_id), g.junction_id,
                             tuple((sl.p0, sl.p1) for sl in g.stop_lines))
                for g in self.road_map.signals)
        return self._snapshot
