"""CARLA Leaderboard 2.0 driving-score arithmetic.

Mirrors ``leaderboard/utils/statistics_manager.py`` (carla-simulator/leaderboard,
branch leaderboard-2.0): a route's driving score is its route completion (%) times
its infraction penalty, the product of one coefficient per infraction; the global
driving score is the mean of the per-route scores (not mean RC x mean IS), and
infractions are reported per km actually driven.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass

import numpy as np
from rich.table import Table

from drivestack.schema import EpisodeResult, EpisodeStatus, InfractionEvent, InfractionKind

log = logging.getLogger(__name__)

# Coefficients applied once per event (statistics_manager.PENALTY_VALUE_DICT).
FIXED_PENALTIES: Mapping[InfractionKind, float] = {
    InfractionKind.COLLISION_PEDESTRIAN: 0.50,
    InfractionKind.COLLISION_VEHICLE: 0.60,
    InfractionKind.COLLISION_STATIC: 0.65,
    InfractionKind.RED_LIGHT: 0.70,
    InfractionKind.STOP_SIGN: 0.80,
    InfractionKind.SCENARIO_TIMEOUT: 0.70,
}
# MIN_SPEED costs up to 1 - 0.7 (statistics_manager.PENALTY_PERC_DICT, 'decreases').
MIN_SPEED_MAX_PENALTY = 0.3
# These end the route instead of lowering the penalty; their cost is the lost completion.
ROUTE_ENDING_KINDS = frozenset({InfractionKind.ROUTE_DEVIATION, InfractionKind.AGENT_BLOCKED,
                                InfractionKind.ROUTE_TIMEOUT})
# The leaderboard floors the distance at 1 m so a route ended at its start still divides.
MIN_KM_DRIVEN = 0.001

_SHORT_NAMES: Mapping[InfractionKind, str] = {
    InfractionKind.COLLISION_PEDESTRIAN: "ped",
    InfractionKind.COLLISION_VEHICLE: "veh",
    InfractionKind.COLLISION_STATIC: "layout",
    InfractionKind.RED_LIGHT: "red",
    InfractionKind.STOP_SIGN: "stop",
    InfractionKind.SCENARIO_TIMEOUT: "scen_to",
    InfractionKind.MIN_SPEED: "min_spd",
    InfractionKind.OUTSIDE_ROUTE_LANES: "out_lane",
    InfractionKind.ROUTE_DEVIATION: "dev",
    InfractionKind.AGENT_BLOCKED: "blocked",
    InfractionKind.ROUTE_TIMEOUT: "route_to",
}


def _clamp_unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def penalty_coefficient(event: InfractionEvent) -> float:
    """The factor one event multiplies the route's infraction penalty by.

    Percentage-based coefficients are clamped to [0, 1]: a value_pct outside
    [0, 100] would otherwise reward the agent or flip the sign of the score.
    """
    if event.kind in FIXED_PENALTIES:
        return FIXED_PENALTIES[event.kind]
    if event.kind is InfractionKind.MIN_SPEED:
        return _clamp_unit(1.0 - MIN_SPEED_MAX_PENALTY * (1.0 - event.value_pct / 100.0))
    if event.kind is InfractionKind.OUTSIDE_ROUTE_LANES:
        return _clamp_unit(1.0 - event.value_pct / 100.0)
    if event.kind in ROUTE_ENDING_KINDS:
        return 1.0
    raise ValueError(f"no penalty rule for infraction kind {event.kind}")


def infraction_penalty(events: Iterable[InfractionEvent]) -> float:
    """Product of the coefficients of all events; 1.0 for a clean route."""
    return math.prod(penalty_coefficient(event) for event in events)


def score_route(route_completion_pct: float, events: Iterable[InfractionEvent]) -> tuple[float, float]:
    """``(infraction_penalty, driving_score)`` of one route; the score is in [0, 100]."""
    if not 0.0 <= route_completion_pct <= 100.0:
        raise ValueError(f"route completion {route_completion_pct} % is outside [0, 100]")
    penalty = infraction_penalty(events)
    return penalty, max(route_completion_pct * penalty, 0.0)


@dataclass(frozen=True)
class GlobalScore:
    """Aggregate over routes, as the leaderboard's global record reports it."""

    num_routes: int
    driving_score: float          # mean of per-route DS
    route_completion_pct: float   # mean RC
    infraction_penalty: float     # mean IS
    km_driven: float              # sum of route length x RC, floored at MIN_KM_DRIVEN
    infraction_counts: Mapping[InfractionKind, int]
    infractions_per_km: Mapping[InfractionKind, float]
    # The leaderboard's "Off-road infractions" figure: km driven outside route lanes.
    outside_route_lanes_km: float


def _outside_lanes_km(result: EpisodeResult) -> float:
    """Distance outside route lanes; the monitor reports it as % of the route length."""
    return sum(event.value_pct / 100.0 * result.route_length_m / 1000.0
               for event in result.infractions if event.kind is InfractionKind.OUTSIDE_ROUTE_LANES)


def global_score(results: Sequence[EpisodeResult]) -> GlobalScore:
    """Mean DS, RC and IS over routes and infractions per km driven."""
    counts = {kind: 0 for kind in InfractionKind}
    for result in results:
        for event in result.infractions:
            counts[event.kind] += 1
    km_driven = max(sum(r.route_length_m * r.route_completion_pct / 100.0 for r in results) / 1000.0,
                    MIN_KM_DRIVEN)

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    return GlobalScore(
        num_routes=len(results),
        driving_score=mean([r.driving_score for r in results]),
        route_completion_pct=mean([r.route_completion_pct for r in results]),
        infraction_penalty=mean([r.infraction_penalty for r in results]),
        km_driven=km_driven,
        infraction_counts=counts,
        infractions_per_km={kind: count / km_driven for kind, count in counts.items()},
        outside_route_lanes_km=sum(_outside_lanes_km(r) for r in results),
    )


def _kind_counts(result: EpisodeResult) -> dict[InfractionKind, int]:
    counts: dict[InfractionKind, int] = {}
    for event in result.infractions:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts


def format_results_table(results: Sequence[EpisodeResult], global_result: GlobalScore) -> Table:
    """One row per route and a final global row (infraction columns there are per km).

    Only the infraction kinds that occurred get a column, which keeps the table
    readable in a terminal.
    """
    kinds = [kind for kind in InfractionKind if global_result.infraction_counts.get(kind, 0) > 0]
    table = Table(title="Driving score (CARLA Leaderboard 2.0)")
    for name in ("scenario", "town", "status"):
        table.add_column(name)
    for name in ("DS", "RC %", "IS"):
        table.add_column(name, justify="right")
    for kind in kinds:
        table.add_column(_SHORT_NAMES[kind], justify="right")
    for result in results:
        counts = _kind_counts(result)
        table.add_row(result.scenario, result.town, result.status.value,
                      f"{result.driving_score:.2f}", f"{result.route_completion_pct:.2f}",
                      f"{result.infraction_penalty:.3f}", *(str(counts.get(kind, 0)) for kind in kinds))
    table.add_section()
    table.add_row(f"global ({global_result.num_routes} routes)", "",
                  f"{global_result.km_driven:.3f} km driven",
                  f"{global_result.driving_score:.2f}", f"{global_result.route_completion_pct:.2f}",
                  f"{global_result.infraction_penalty:.3f}",
                  *(f"{global_result.infractions_per_km[kind]:.3f}/km" for kind in kinds))
    return table


def _jsonable(value: object) -> object:
    """Plain JSON types: enums become their values, numpy values plain numbers."""
    if isinstance(value, enum.Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(_jsonable(key)): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def results_to_json(results: Sequence[EpisodeResult], global_result: GlobalScore) -> dict:
    """``{"global": ..., "routes": [...]}`` ready for ``json.dumps``."""
    return {"global": _jsonable(global_result), "routes": [_jsonable(result) for result in results]}


def results_from_json(payload: Mapping) -> list[EpisodeResult]:
    """The routes of a ``results_to_json`` payload back as EpisodeResults (results.json
    written by another process, e.g. the ROS 2 bridge)."""
    results = []
    for route in payload["routes"]:
        events = tuple(InfractionEvent(**{**e, "kind": InfractionKind(e["kind"])}) for e in route["infractions"])
        results.append(EpisodeResult(**{**route, "status": EpisodeStatus(route["status"]), "infractions": events}))
    return results
