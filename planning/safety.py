"""The safety supervisor: the last check between the planner (or the learned policy)
and the car.

Each step it checks, in this order:

- the ego state (odometry): missing or NaN -> full brake, steer 0 (nothing else can
  be trusted);
- the proposal: NaN/inf -> a controlled stop (counted);
- the inputs the mode needs (``required_inputs``) and the ego: missing, or older than
  ``max_input_age_s`` -> a controlled stop, as do faults the caller found
  (``extra_faults``: rejected detections, an empty route);
- the time to collision with the tracks in the corridor along the path -> emergency
  braking below ``ttc_brake_s``, held until it is back above ``ttc_release_s``.

In ``policy`` mode only the ego check, the NaN check and clamping act: the policy
drives unsupervised (the caller's faults are still reported). Controls always leave
clamped. Nothing here raises on bad input: the worst case is a full brake.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivestack.config import load_params
from drivestack.schema import EgoState, VehicleControl
from drivestack.vehicle_control import pedals_for_accel
from planning.inputs import DriveMode, PlannerInputs, Track, VehicleModel

logger = logging.getLogger(__name__)

DEFAULT_SAFETY_PARAMS = Path(__file__).parent / "config" / "safety.yaml"
INPUT_NAMES = ("detections", "lanes", "obstacles", "policy")


@dataclass(frozen=True)
class SafetyParams:
    max_input_age_s: float
    ttc_brake_s: float
    ttc_release_s: float
    corridor_margin_m: float
    controlled_stop_decel_mps2: float
    emergency_decel_mps2: float
    fallback_path_length_m: float

    def __post_init__(self) -> None:
        for name in ("max_input_age_s", "ttc_brake_s", "controlled_stop_decel_mps2", "emergency_decel_mps2",
                     "fallback_path_length_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.ttc_release_s < self.ttc_brake_s:
            raise ValueError("ttc_release_s must be >= ttc_brake_s")
        if self.corridor_margin_m < 0:
            raise ValueError("corridor_margin_m must be >= 0")

    @classmethod
    def load(cls, path: str | Path = DEFAULT_SAFETY_PARAMS) -> SafetyParams:
        return load_params(cls, path)


@dataclass(frozen=True)
class SupervisorDecision:
    control: VehicleControl
    override: str  # why the proposal was overridden ("" = it was not); TTC braking starts with "TTC"
    faults: tuple[str, ...]  # inputs missing, stale or NaN this step, and the caller's faults
    ttc_s: float = math.inf  # the smallest time to collision along the path (inf = none closing)


@dataclass(frozen=True)
class _Threat:
    ttc_s: float
    track: Track


def _finite(*values) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def _kind(fault: str) -> str:
    """The counter key of a fault: its text without the parenthesised detail and numbers."""
    return re.sub(r"-?\d+(\.\d+)?", "#", fault.split(" (")[0]).strip()


def _path_frame(path: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arc length, signed lateral offset (+ = left) and path heading of each point's
    projection onto the polyline; the first and last segments extend past the ends."""
    starts, seg = path[:-1], np.diff(path, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    s_starts = np.concatenate(([0.0], np.cumsum(lengths)[:-1]))
    rel = points[:, None, :] - starts[None, :, :]  # (T, M, 2)
    t = (rel * seg[None]).sum(axis=2) / (lengths ** 2)[None]
    low, high = np.zeros(len(seg)), np.ones(len(seg))
    low[0], high[-1] = -np.inf, np.inf
    t = np.clip(t, low, high)
    dist2 = ((rel - t[..., None] * seg[None]) ** 2).sum(axis=2)
    k = np.argmin(dist2, axis=1)
    rows = np.arange(len(points))
    s = s_starts[k] + t[rows, k] * lengths[k]
    lateral = (seg[k, 0] * rel[rows, k, 1] - seg[k, 1] * rel[rows, k, 0]) / lengths[k]
    return s, lateral, np.arctan2(seg[k, 1], seg[k, 0])


class SafetySupervisor:
    def __init__(self, vehicle: VehicleModel, mode: DriveMode, required_inputs: tuple[str, ...],
                 params: SafetyParams | None = None) -> None:
        unknown = sorted(set(required_inputs) - set(INPUT_NAMES))
        if unknown:
            raise ValueError(f"unknown required input(s) {', '.join(unknown)}; known: {', '.join(INPUT_NAMES)}")
        self.vehicle, self.mode = vehicle, DriveMode(mode)
        self.required_inputs = tuple(required_inputs)
        self.params = params or SafetyParams.load()
        # Per fault kind ("fault: obstacles stale") and override kind ("override: TTC brake").
        self.counts: Counter = Counter()
        self._ttc_braking = False

    def reset(self) -> None:
        """Forget the TTC brake latch (a new episode); the counts are kept."""
        self._ttc_braking = False

    # -- one step ---------------------------------------------------------------------

    def supervise(self, inputs: PlannerInputs, proposed: tuple[float, float, float], tracks: tuple[Track, ...],
                  path_xy_m: np.ndarray, extra_faults: tuple[str, ...] = ()) -> SupervisorDecision:
        """The control that reaches the car: ``proposed`` (steer, throttle, brake) as is,
        clamped, or overridden, with the reason and the faults found."""
        try:
            return self._supervise(inputs, proposed, tracks, path_xy_m, extra_faults)
        except Exception as exc:  # the last line of defence answers with a full brake, never an exception
            logger.exception("safety supervisor failed")
            fault = f"supervisor error ({type(exc).__name__}: {exc})"
            self._count_fault(fault)
            self.counts["override: full brake"] += 1
            return SupervisorDecision(VehicleControl(brake=1.0), "supervisor error: full brake", (fault,))

    def _supervise(self, inputs, proposed, tracks, path_xy_m, extra_faults) -> SupervisorDecision:
        p = self.params
        ego = getattr(inputs, "ego", None)
        ego_fault = self._ego_fault(ego)
        if ego_fault:
            self._ttc_braking = False
            self._count_fault(ego_fault)
            self.counts["override: full brake"] += 1
            return SupervisorDecision(VehicleControl(brake=1.0), f"{ego_fault}: full brake", (ego_fault,))
        supervised = self.mode != DriveMode.POLICY
        steer, throttle, brake = self._proposal(proposed)
        faults: list[str] = []
        nan_fault = ""
        if not _finite(steer, throttle, brake):
            nan_fault = f"{'planner' if self.mode == DriveMode.MODULAR else 'policy'} output NaN"
            faults.append(nan_fault)
        if supervised:
            faults += self._input_faults(inputs, ego)
        if isinstance(extra_faults, str):
            extra_faults = (extra_faults,)
        faults += [str(f) for f in extra_faults or ()]
        faults = list(dict.fromkeys(faults))  # the caller may report what we found too
        for fault in faults:
            self._count_fault(fault)

        stop_reasons = faults if supervised else [nan_fault] * bool(nan_fault)
        threat = self._threat(ego, tracks, path_xy_m) if supervised else None
        speed = float(ego.speed_mps)
        if stop_reasons:
            steer = steer if _finite(steer) else 0.0
            throttle, brake = 0.0, max(brake if _finite(brake) else 0.0,
                                       self._brake_for(p.controlled_stop_decel_mps2, speed))
        ttc_override = ""
        if supervised and self._ttc_brake(threat):
            throttle, brake = 0.0, max(brake, self._brake_for(p.emergency_decel_mps2, speed))
            ttc_override = f"TTC {threat.ttc_s:.1f} s to {threat.track.label} track {threat.track.track_id}"
            self.counts["override: TTC brake"] += 1
        if stop_reasons:
            self.counts["override: controlled stop"] += 1
        if not (-1.0 <= steer <= 1.0 and 0.0 <= throttle <= 1.0 and 0.0 <= brake <= 1.0):
            self.counts["clamped"] += 1
        override = "; ".join(filter(None, (ttc_override, "controlled stop: " + ", ".join(stop_reasons)
                                           if stop_reasons else "")))
        control = VehicleControl.clamped(throttle=throttle, steer=steer, brake=brake)
        return SupervisorDecision(control, override, tuple(faults), threat.ttc_s if threat else math.inf)

    # -- checks -----------------------------------------------------------------------

    @staticmethod
    def _ego_fault(ego: EgoState | None) -> str:
        if ego is None:
            return "ego missing"
        if not _finite(ego.x_m, ego.y_m, ego.yaw_rad, ego.speed_mps):
            return "ego NaN"
        return ""

    @staticmethod
    def _proposal(proposed) -> tuple[float, float, float]:
        try:
            steer, throttle, brake = (float(v) for v in proposed)
            return steer, throttle, brake
        except (TypeError, ValueError):
            return math.nan, math.nan, math.nan

    def _input_faults(self, inputs: PlannerInputs, ego: EgoState) -> list[str]:
        faults = []
        for name in ("ego", *self.required_inputs):
            message = ego if name == "ego" else getattr(inputs, name, None)
            if message is None:
                faults.append(f"{name} missing")
                continue
            try:
                age_s = (int(inputs.stamp_ns) - int(message.stamp_ns)) * 1e-9
            except (TypeError, ValueError, AttributeError):
                faults.append(f"{name} without a valid stamp")
                continue
            if age_s > self.params.max_input_age_s:
                faults.append(f"{name} stale ({age_s:.2f} s old)")
        return faults

    def _count_fault(self, fault: str) -> None:
        self.counts[f"fault: {_kind(fault)}"] += 1

    def _brake_for(self, decel_mps2: float, speed_mps: float) -> float:
        """The brake pedal for ``decel_mps2`` at this speed (the pedal model less drag
        and rolling resistance), full hold at a standstill."""
        _, brake = pedals_for_accel(np.float64(-decel_mps2), np.float64(speed_mps), self.vehicle)
        return float(brake)

    # -- time to collision --------------------------------------------------------------

    def _corridor_path(self, ego: EgoState, path_xy_m) -> np.ndarray:
        try:
            path = np.asarray(path_xy_m, dtype=float)
        except (TypeError, ValueError):
            path = np.zeros((0, 2))
        path = path[:, :2] if path.ndim == 2 and path.shape[1] >= 2 else np.zeros((0, 2))
        path = path[np.isfinite(path).all(axis=1)]
        if len(path) > 1:
            path = path[np.concatenate(([True], np.hypot(*np.diff(path, axis=0).T) > 1e-6))]
        if len(path) < 2:  # no usable path: the corridor runs straight ahead
            ahead = np.array([math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)])
            path = np.array([ego.x_m, ego.y_m]) + np.outer([-self.vehicle.length_m,
                                                            self.params.fallback_path_length_m], ahead)
        return path

    def _threat(self, ego: EgoState, tracks, path_xy_m) -> _Threat | None:
        """The track in the corridor ahead with the smallest time to collision, if any
        is closing."""
        tracks = [t for t in (tracks or ()) if _finite(t.x_map_m, t.y_map_m, t.vx_map_mps, t.vy_map_mps,
                                                       t.length_m, t.width_m, t.yaw_rad)]
        if not tracks:
            return None
        path = self._corridor_path(ego, path_xy_m)
        points = np.array([[ego.x_m, ego.y_m]] + [[t.x_map_m, t.y_map_m] for t in tracks])
        s, lateral, heading = _path_frame(path, points)
        front_s = s[0] + self.vehicle.length_m / 2
        best: _Threat | None = None
        for i, track in enumerate(tracks, start=1):
            # The box's extent along and across the path at its heading relative to it.
            relative = ego.yaw_rad + track.yaw_rad - heading[i]
            cos_r, sin_r = abs(math.cos(relative)), abs(math.sin(relative))
            half_along = (track.length_m * cos_r + track.width_m * sin_r) / 2
            half_across = (track.length_m * sin_r + track.width_m * cos_r) / 2
            if s[i] <= front_s:  # behind or beside the ego
                continue
            if abs(lateral[i]) >= self.vehicle.width_m / 2 + half_across + self.params.corridor_margin_m:
                continue
            # An unclassified LiDAR box is taken as standing: its velocity is mostly the
            # slide of sparse LiDAR columns along a wall, not motion.
            along_mps = 0.0 if track.label == "unknown" else \
                track.vx_map_mps * math.cos(heading[i]) + track.vy_map_mps * math.sin(heading[i])
            closing_mps = ego.speed_mps - along_mps
            if closing_mps <= 0.0:  # standing apart, or moving away faster than the ego
                continue
            ttc = float(max(s[i] - half_along - front_s, 0.0) / closing_mps)
            if best is None or ttc < best.ttc_s:
                best = _Threat(ttc, track)
        return best

    def _ttc_brake(self, threat: _Threat | None) -> bool:
        """Brake below ``ttc_brake_s``; once braking, go on until the TTC is back above
        ``ttc_release_s`` or nothing is closing any more (hysteresis: braking raises
        the TTC, which must not release the brake at once)."""
        if threat is None or threat.ttc_s >= self.params.ttc_release_s:
            self._ttc_braking = False
        elif threat.ttc_s < self.params.ttc_brake_s:
            self._ttc_braking = True
        return self._ttc_braking
