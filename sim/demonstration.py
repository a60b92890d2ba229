"""Demonstrations whose executed control differs from the expert's label.

A cloned policy only sees states the expert visits, so one small mistake puts it where
it has no data (compounding error). Two cures, both here:

- **Noise injection** (CIL, Codevilla et al. 2018): for short spans the executed
  steering is pushed off by a triangular impulse, and the brake is sometimes tapped,
  while the recorded label stays the expert's corrective action; the data then holds
  recoveries from drifting off the lane and restarts from low speed (the inertia
  problem: a clone that never starts again after stopping).
- **DAgger** (Ross et al. 2011): a learned policy drives and the expert labels the
  states the policy visits.

``LabelledDriver`` runs the expert on every observation (its label) and executes what
``act`` makes of it; the bag records both (``ros_nodes.topics.EXPERT_CONTROL``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drivestack.schema import Observation, VehicleControl


@dataclass(frozen=True)
class NoiseParams:
    """CIL-style perturbations. Spans start at random (Poisson in time), never overlap,
    and are followed by ``recovery_s`` without noise."""

    steer_spans_per_s: float = 0.12  # one span about every 8 s of driving
    steer_duration_s: tuple[float, float] = (0.5, 1.5)
    steer_peak: tuple[float, float] = (0.15, 0.35)  # |steer| added at the impulse's peak
    brake_spans_per_s: float = 0.03  # one brake tap about every 30 s
    brake_duration_s: tuple[float, float] = (0.8, 2.0)
    brake: tuple[float, float] = (0.4, 0.8)
    min_speed_mps: float = 2.0  # no steering impulse when crawling: it would only scrub the tyres
    recovery_s: float = 1.0  # clean driving after each span, so the expert's recovery is recorded whole

    def __post_init__(self) -> None:
        for name in ("steer_spans_per_s", "brake_spans_per_s"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"NoiseParams.{name} must be finite and >= 0")
        for name in ("steer_duration_s", "steer_peak", "brake_duration_s", "brake"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"NoiseParams.{name}={getattr(self, name)}: need 0 <= low <= high")


class ControlNoise:
    """The perturbation of one episode, drawn from its own seeded generator."""

    def __init__(self, params: NoiseParams, dt_s: float, seed: int) -> None:
        self.p, self.dt_s = params, dt_s
        self.rng = np.random.default_rng([seed, 0x0015E])
        self._kind = ""  # "" (none), "steer" or "brake"
        self._step = self._steps = 0
        self._amplitude = 0.0
        self._quiet_steps = 0  # left of the recovery after a span
        self.active_steps = 0

    @property
    def active(self) -> bool:
        return bool(self._kind)

    def __call__(self, obs: Observation, label: VehicleControl) -> VehicleControl:
        if not self._kind:
            if self._quiet_steps > 0:
                self._quiet_steps -= 1
                return label
            self._maybe_start(obs)
        if not self._kind:
            return label
        self.active_steps += 1
        self._step += 1
        phase = (self._step - 0.5) / self._steps  # mid-step: never exactly 0 or 1
        kind = self._kind
        if self._step >= self._steps:
            self._kind = ""
            self._quiet_steps = round(self.p.recovery_s / self.dt_s)
        if kind == "steer":
            triangle = 1.0 - abs(2.0 * phase - 1.0)  # 0 -> 1 -> 0 over the span
            return VehicleControl.clamped(throttle=label.throttle, steer=label.steer + self._amplitude * triangle,
                                          brake=label.brake)
        return VehicleControl.clamped(throttle=0.0, steer=label.steer, brake=max(label.brake, self._amplitude))

    def _maybe_start(self, obs: Observation) -> None:
        p, rng = self.p, self.rng
        # Draw both every step so the sequence does not depend on which one fires.
        steer_draw, brake_draw = rng.random(), rng.random()
        if steer_draw < p.steer_spans_per_s * self.dt_s and obs.ego.speed_mps >= p.min_speed_mps:
            self._kind, duration_s = "steer", float(rng.uniform(*p.steer_duration_s))
            self._amplitude = float(rng.uniform(*p.steer_peak)) * (1.0 if rng.random() < 0.5 else -1.0)
        elif brake_draw < p.brake_spans_per_s * self.dt_s:
            self._kind, duration_s = "brake", float(rng.uniform(*p.brake_duration_s))
            self._amplitude = float(rng.uniform(*p.brake))
        else:
            return
        self._step, self._steps = 0, max(1, round(duration_s / self.dt_s))


class LabelledDriver:
    """Runs ``expert`` on every observation (its answer is the label, in ``label``) and
    executes ``act(obs, label)``."""

    def __init__(self, expert, act: Callable[[Observation, VehicleControl], VehicleControl], name: str) -> None:
        self.expert, self.act, self.name = expert, act, name
        self.label: VehicleControl | None = None

    def run_step(self, obs: Observation) -> VehicleControl:
        self.label = self.expert.run_step(obs)
        return self.act(obs, self.label)
