"""The agents the in-process runner can drive with, by name, and what each needs.

- ``expert``: the privileged autopilot (``sim.expert``), reads the true world state.
- ``modular``: camera perception + LiDAR obstacles + the modular planner
  (``planning``), from sensors, map and route only.
- ``policy``: the learned behaviour-cloning policy (``models.driving_policy``) from
  the front camera, speed and route command; the planner only clamps its control and
  catches NaN (``DriveMode.POLICY``).
- ``policy+safety``: the policy, with the modular stack's perception, tracking and
  safety supervisor able to override it (``DriveMode.POLICY_SAFETY``).
- ``autopilot``: on a CARLA server, CARLA's Traffic Manager drives the ego along the
  route (data collection the CARLA way); the agent reports the control it applied.

Heavy imports (torch, Open3D) happen inside the factories, so the CLI stays quick.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

AGENT_NAMES = ("expert", "modular", "policy", "policy+safety", "autopilot")
BUILTIN_AGENT_NAMES = AGENT_NAMES[:-1]  # the autopilot is CARLA's Traffic Manager
MODULAR_SENSOR_SUITE = "drive"  # sim/config/sensors/drive.yaml: front RGB + LiDAR, no labels
POLICY_SENSOR_SUITE = "front_rgb"  # the policy alone needs only the front camera
POLICY_CAMERA = "front"
DEFAULT_LONGITUDINAL = "waypoints"  # planning.policy_proposer: the waypoints' speed, launched by the brake


def scenario_for_agent(name: str, scenario):
    """The scenario with the sensors the agent drives from: the modular agents need a
    front RGB camera and a LiDAR, and get the ``drive`` suite unless they have both;
    the policy alone gets ``front_rgb`` unless it has the camera."""
    _check_name(name)
    if name in ("expert", "autopilot"):
        return scenario
    sensors = scenario.sensors
    has_camera = any(c.name == POLICY_CAMERA and "rgb" in c.kinds for c in sensors.cameras)
    if has_camera and (sensors.lidar is not None or name == "policy"):
        return scenario
    from sim.sensors.suite import load_suite
    suite = load_suite(POLICY_SENSOR_SUITE if name == "policy" else MODULAR_SENSOR_SUITE)
    # Keep a video camera's labels if the caller asked for them (overlays only).
    return replace(scenario, sensors=replace(suite, ground_truth=sensors.ground_truth))


def agent_factory(name: str, scenario, *, perception_weights: Path | None = None, device: str = "cpu",
                  policy_weights: Path | None = None, longitudinal: str = DEFAULT_LONGITUDINAL):
    """``(road_map, route, sim) -> agent`` for one episode of ``scenario`` (already
    passed through :func:`scenario_for_agent`). Loads the weights once, here, so a
    missing file fails before any episode starts."""
    _check_name(name)
    if name == "expert":
        from sim.expert import ExpertDriver

        def make_expert(road_map, route, sim):
            return ExpertDriver(road_map, route, sim.vehicle, sim.dt_s)
        return make_expert
    if name == "autopilot":
        return _make_autopilot
    if name == "policy":
        return _policy_factory(policy_weights, device, longitudinal)
    return _modular_factory(scenario, perception_weights, device, "modular" if name == "modular" else name,
                            policy_weights, longitudinal)


class TrafficManagerAutopilot:
    """CARLA's autopilot on the ego. ``run_step`` answers each observation with the
    control the Traffic Manager applied in the tick that produced it, as CARLA's own
    data collectors record ``vehicle.get_control()`` beside the frame's sensor data; the
    simulator ignores it when stepping."""

    name = "autopilot"

    def __init__(self, sim) -> None:
        self.sim = sim

    def run_step(self, obs):
        return self.sim.applied_control


def _make_autopilot(road_map, route, sim):
    if not hasattr(sim, "engage_autopilot"):
        raise ValueError("the autopilot agent is CARLA's Traffic Manager: it needs a CARLA server (--sim carla); "
                         "on the built-in simulator the expert is the autopilot")
    sim.engage_autopilot()
    return TrafficManagerAutopilot(sim)


def policy_proposer(policy, route, sim, longitudinal: str):
    from planning.inputs import VehicleModel
    from planning.policy_proposer import make_proposer
    return make_proposer(policy, route, VehicleModel.of(sim.vehicle), sim.dt_s, longitudinal)


def load_driving_policy(policy_weights: Path | None, device: str = "cpu"):
    from models.driving_policy import DEFAULT_POLICY_WEIGHTS, DrivingPolicy
    return DrivingPolicy.from_weights(policy_weights or DEFAULT_POLICY_WEIGHTS, device=device)


def _policy_factory(policy_weights: Path | None, device: str, longitudinal: str):
    from planning.inputs import DriveMode, VehicleModel
    from planning.modular_agent import ModularAgent
    from planning.planner import ModularPlanner

    policy = load_driving_policy(policy_weights, device)

    def make_policy(road_map, route, sim):
        planner = ModularPlanner(road_map, route, VehicleModel.of(sim.vehicle), sim.dt_s, mode=DriveMode.POLICY,
                                 required_inputs=("policy",))
        agent = ModularAgent(planner, propose=policy_proposer(policy, route, sim, longitudinal),
                             policy_camera=POLICY_CAMERA)
        agent.name = "policy"
        return agent
    return make_policy


def _check_name(name: str) -> None:
    if name not in AGENT_NAMES:
        raise ValueError(f"unknown agent {name!r} (known: {', '.join(AGENT_NAMES)})")


def _modular_factory(scenario, perception_weights: Path | None, device: str, mode: str,
                     policy_weights: Path | None = None, longitudinal: str = DEFAULT_LONGITUDINAL):
    from drivestack.frames import CameraMount
    from perception.camera_pipeline import DEFAULT_WEIGHTS, CameraPerception
    from perception.lidar_obstacles import LidarObstacleDetector, SensorMount, config_for_lidar
    from planning.inputs import CameraModel, DriveMode, VehicleModel
    from planning.modular_agent import ModularAgent
    from planning.planner import ModularPlanner

    camera_config = next(c for c in scenario.sensors.cameras if c.name == "front")
    mount = CameraMount(camera_config.x_m, camera_config.y_m, camera_config.z_m, camera_config.roll_rad,
                        camera_config.pitch_rad, camera_config.yaw_rad)
    camera = CameraModel("front", camera_config.intrinsics, camera_config.width_px, camera_config.height_px, mount)
    pipeline = CameraPerception.from_weights(perception_weights or DEFAULT_WEIGHTS, camera="front",
                                             intrinsics=camera.intrinsics, mount=mount, device=device)
    lidar = scenario.sensors.lidar
    detector = LidarObstacleDetector(config_for_lidar(lidar))
    lidar_mount = SensorMount(lidar.x_m, lidar.y_m, lidar.z_m, lidar.yaw_rad)

    def perceive(image, stamp_ns):
        result = pipeline(image, stamp_ns)
        return result.detections, result.lanes

    policy = load_driving_policy(policy_weights, device) if mode != "modular" else None

    def make_modular(road_map, route, sim):
        planner = ModularPlanner(road_map, route, VehicleModel.of(sim.vehicle), sim.dt_s, mode=DriveMode(mode),
                                 required_inputs=("detections", "obstacles"))
        agent = ModularAgent(planner, camera=camera, perceive=perceive,
                             detect_obstacles=lambda points: detector.detect(points, lidar_mount),
                             propose=policy_proposer(policy, route, sim, longitudinal) if policy is not None else None,
                             policy_camera=POLICY_CAMERA)
        agent.name = mode
        return agent
    return make_modular
