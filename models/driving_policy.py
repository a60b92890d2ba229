"""The trained policy at run time: one camera image, the speed and the route command in,
one control and the predicted waypoints out. No ROS here: the in-process policy agent and
the ROS policy node share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drivestack.schema import RoadOption
from models.perception_net import normalize
from models.policy_net import POLICY_TASK, PolicyNet, build_policy, command_index
from models.weights import WEIGHTS_DIR, load_weights

DEFAULT_POLICY_WEIGHTS = WEIGHTS_DIR / "policy_cilrs.pt"  # shipped weights, once trained


@dataclass(frozen=True, eq=False)
class PolicyOutput:
    steer: float  # [-1, 1], positive = left (REP 103)
    throttle: float  # [0, 1]
    brake: float  # [0, 1]
    speed_mps: float  # the speed the net reads from the image (CILRS speed head)
    waypoints_m: np.ndarray  # (K, 2) float64: future (x forward, y left) in the current ego frame


class DrivingPolicy:
    """Runs a PolicyNet on single frames, in eval mode, without autograd."""

    def __init__(self, model: PolicyNet, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_weights(cls, path: str | Path = DEFAULT_POLICY_WEIGHTS,
                     device: str | torch.device = "cpu") -> DrivingPolicy:
        """A training checkpoint (models.engine) or shipped weights (models.weights: its
        manifest's sha256 is checked)."""
        config, state, _ = load_weights(path, POLICY_TASK)
        model = build_policy(config)
        model.load_state_dict(state)
        return cls(model, device)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in px of the images the policy takes."""
        return self.model.image_size

    def __call__(self, image: np.ndarray, speed_mps: float, command: RoadOption | int) -> PolicyOutput:
        width, height = self.image_size
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (height, width, 3):
            got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"expected a {width}x{height} uint8 RGB image of shape ({height}, {width}, 3), "
                             f"got {got}")
        speed_mps = float(speed_mps)
        if not math.isfinite(speed_mps):
            raise ValueError(f"speed_mps must be finite, got {speed_mps}")
        with torch.inference_mode():
            outputs = self.model(normalize(np.ascontiguousarray(image)).unsqueeze(0).to(self.device),
                                 torch.tensor([speed_mps], dtype=torch.float32, device=self.device),
                                 torch.tensor([command_index(command)], dtype=torch.int64, device=self.device))
            steer, throttle, brake = outputs["control"][0].tolist()
            return PolicyOutput(steer, throttle, brake, float(outputs["speed_mps"][0]),
                                outputs["waypoints_m"][0].double().cpu().numpy())
