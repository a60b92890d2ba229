"""The topic table: every topic of the graph, its type, QoS, rate and whether it is
recorded. Nodes, the recorder and the README read it from here and nowhere else.

Sensor topics use the CARLA ROS bridge's names and standard types, so the nodes run
unchanged against the official bridge: a sensor is addressed by its role name, and a
camera of the sensor suite with several passes becomes one CARLA-style sensor per pass
(camera ``front`` with rgb and depth -> ``rgb_front`` and ``depth_front``).
Topics without a standard type use the project's interface package ``drivestack_msgs``.
Ground truth (privileged: what only the simulator knows) lives under
``/drivestack/ground_truth``; an agent that drives from sensors subscribes to none of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from sim.sensors.suite import SensorSuite

EGO_NS = "/carla/ego_vehicle"
GROUND_TRUTH_NS = "/drivestack/ground_truth"

# Per camera pass: the CARLA bridge's sensor type prefix and the image encoding.
# Semantic and instance images carry ids (mono8 class ids of the schema table, int32
# instance ids), not CARLA's palette colours: lossless, and the palette is a lookup.
CAMERA_PASSES = {
    "rgb": ("rgb", "rgb8"),
    "depth": ("depth", "32FC1"),  # metres along the optical axis, as CARLA's bridge
    "semantic": ("semantic_segmentation", "mono8"),
    "instance": ("instance_segmentation", "32SC1"),
}


class Qos(enum.Enum):
    """QoS profiles (made into rclpy QoSProfile by ros_nodes.qos)."""

    SENSOR = "sensor"  # reliable, keep last 100: lockstep data the recorder must not drop
    CONTROL = "control"  # reliable, keep last 10
    LATCHED = "latched"  # reliable, transient local, keep last 1: map, route, results
    CLOCK = "clock"  # reliable, keep last 100


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str  # "package/msg/Name", as rosbag2 and rosbags spell it
    qos: Qos
    rate_hz: float | None  # None: sent on events or once
    recorded: bool = True
    privileged: bool = False  # ground truth: only the expert and label consumers read it
    stamped: bool = True  # starts with std_msgs/Header (the recorder logs its stamp)
    description: str = ""


CLOCK = "/clock"
CONTROL = f"{EGO_NS}/vehicle_control_cmd"
MAP = "/carla/map"
ROUTE = "/drivestack/route"
EPISODE_RESULT = "/drivestack/episode/result"
ODOMETRY = f"{EGO_NS}/odometry"
IMU = f"{EGO_NS}/imu"
GNSS = f"{EGO_NS}/gnss"
SPEEDOMETER = f"{EGO_NS}/speedometer"
LIDAR = f"{EGO_NS}/lidar"
COLLISION = f"{EGO_NS}/collision"
LANE_INVASION = f"{EGO_NS}/lane_invasion"
EGO_STATE = f"{GROUND_TRUTH_NS}/ego_state"
ACTORS = f"{GROUND_TRUTH_NS}/actors"
TRAFFIC_LIGHTS = f"{GROUND_TRUTH_NS}/traffic_lights"
BOXES_3D = f"{GROUND_TRUTH_NS}/boxes_3d"
LANES = f"{GROUND_TRUTH_NS}/lanes"


PERCEPTION_NS = "/drivestack/perception"
PERCEPTION_LANES = f"{PERCEPTION_NS}/lanes"
OBSTACLES = f"{PERCEPTION_NS}/obstacles"


def detections_topic(camera: str) -> str:
    return f"{PERCEPTION_NS}/{camera}/detections"


def semantic_topic(camera: str) -> str:
    return f"{PERCEPTION_NS}/{camera}/semantic"


def overlay_topic(camera: str) -> str:
    return f"{PERCEPTION_NS}/{camera}/overlay"


def camera_perception_topics(camera: str, rate_hz: float | None = None) -> tuple[Topic, ...]:
    """What the perception node publishes for ``camera``, one message each per image."""
    return (
        Topic(detections_topic(camera), "drivestack_msgs/msg/Detection2DArray", Qos.SENSOR, rate_hz,
              description=f"objects found in {camera}: class, score, box (px)"),
        Topic(semantic_topic(camera), "sensor_msgs/msg/Image", Qos.SENSOR, rate_hz,
              description="mono8 semantic class ids (schema table) predicted per pixel"),
        Topic(PERCEPTION_LANES, "drivestack_msgs/msg/LaneArray", Qos.SENSOR, rate_hz,
              description="predicted lane boundaries: base_link ground points and image pixels"),
        Topic(overlay_topic(camera), "sensor_msgs/msg/Image", Qos.SENSOR, rate_hz,
              description="rgb8 camera image with the predictions drawn on it, for viewing"),
    )


OBSTACLES_TOPIC = Topic(OBSTACLES, "drivestack_msgs/msg/ObstacleArray", Qos.SENSOR, None,
                        description="LiDAR obstacles (Open3D clusters): upright boxes in base_link")


def perception_topics(suite: SensorSuite, dt_s: float, camera: str = "front") -> tuple[Topic, ...]:
    """What the perception and lidar_obstacles nodes publish for ``suite``."""
    rate = 1.0 / dt_s
    rows: list[Topic] = []
    if any(c.name == camera and "rgb" in c.kinds for c in suite.cameras):
        rows += camera_perception_topics(camera, rate)
    if suite.lidar is not None:
        rows.append(replace(OBSTACLES_TOPIC, rate_hz=rate))
    return tuple(rows)


PLANNING_NS = "/drivestack/planning"
PLANNING_PATH = f"{PLANNING_NS}/path"
PLANNER_STATUS = f"{PLANNING_NS}/status"
PLANNING_MARKERS = f"{PLANNING_NS}/markers"
MISSION_PATH = "/drivestack/mission/path"
POLICY_CONTROL = "/drivestack/policy/control"

# A learned policy's control, which the planner arbitrates in the policy modes.
POLICY_CONTROL_TOPIC = Topic(POLICY_CONTROL, "drivestack_msgs/msg/VehicleControl", Qos.CONTROL, None,
                             description="the learned policy's proposed control; header.stamp = its frame")


EXPERT_CONTROL = "/drivestack/expert/control"

# The expert's action at a frame (the behaviour-cloning label), recorded when something
# else drove: under CIL noise injection or DAgger the executed control on
# ``vehicle_control_cmd`` differs from it. Bags without it were driven by the expert.
EXPERT_CONTROL_TOPIC = Topic(EXPERT_CONTROL, "drivestack_msgs/msg/VehicleControl", Qos.CONTROL, None,
                             privileged=True,
                             description="the expert's label for the frame when noise or a policy drove")


def planning_topics(dt_s: float) -> tuple[Topic, ...]:
    """What the mission and planner nodes publish besides the route and the control."""
    rate = 1.0 / dt_s
    return (
        Topic(PLANNING_PATH, "nav_msgs/msg/Path", Qos.SENSOR, rate,
              description="the planned path (map frame), lane changes included"),
        Topic(PLANNER_STATUS, "drivestack_msgs/msg/PlannerStatus", Qos.SENSOR, rate,
              description="behaviour, stop reason, supervisor override, input faults, target speed"),
        Topic(PLANNING_MARKERS, "visualization_msgs/msg/MarkerArray", Qos.SENSOR, rate, stamped=False,
              description="debug view: tracks coloured by label with ids, the path, the behaviour as text"),
        Topic(MISSION_PATH, "nav_msgs/msg/Path", Qos.LATCHED, None,
              description="the global route as a path (map frame), for viewers"),
    )


def camera_sensor_id(camera: str, kind: str) -> str:
    """CARLA bridge role name of one pass of a camera: ``rgb_front``."""
    return f"{CAMERA_PASSES[kind][0]}_{camera}"


def camera_image_topic(camera: str, kind: str) -> str:
    return f"{EGO_NS}/{camera_sensor_id(camera, kind)}/image"


def camera_info_topic(camera: str, kind: str) -> str:
    return f"{EGO_NS}/{camera_sensor_id(camera, kind)}/camera_info"


def boxes_2d_topic(camera: str) -> str:
    return f"{GROUND_TRUTH_NS}/{camera}/boxes_2d"


def optical_frame(camera: str) -> str:
    return f"{camera}_optical"


def topic_table(suite: SensorSuite, dt_s: float) -> tuple[Topic, ...]:
    """Every topic the simulator bridge and the control loop use for ``suite``."""
    rate = 1.0 / dt_s
    rows = [
        Topic(CLOCK, "rosgraph_msgs/msg/Clock", Qos.CLOCK, rate, stamped=False,
              description="simulation time; every node runs with use_sim_time"),
        Topic(MAP, "std_msgs/msg/String", Qos.LATCHED, None, stamped=False,
              description="the town's OpenDRIVE text, as CARLA's bridge"),
        Topic(ROUTE, "drivestack_msgs/msg/Route", Qos.LATCHED, None,
              description="the global route: waypoints with RoadOption commands (map frame)"),
        Topic(CONTROL, "drivestack_msgs/msg/VehicleControl", Qos.CONTROL, rate,
              description="the agent's command; header.stamp = the frame it answers"),
        Topic(ODOMETRY, "nav_msgs/msg/Odometry", Qos.SENSOR, rate, description="ego pose and twist, map frame"),
        Topic(SPEEDOMETER, "std_msgs/msg/Float32", Qos.SENSOR, rate, stamped=False,
              description="ego speed, m/s"),
        Topic(COLLISION, "drivestack_msgs/msg/CollisionEvent", Qos.SENSOR, None,
              description="one message per actor the ego starts touching"),
        Topic(LANE_INVASION, "drivestack_msgs/msg/LaneInvasionEvent", Qos.SENSOR, None,
              description="road markings crossed this step"),
        Topic(EGO_STATE, "drivestack_msgs/msg/EgoState", Qos.SENSOR, rate, privileged=True,
              description="exact ego state (float64)"),
        Topic(ACTORS, "drivestack_msgs/msg/ActorArray", Qos.SENSOR, rate, privileged=True,
              description="every other vehicle and pedestrian"),
        Topic(TRAFFIC_LIGHTS, "drivestack_msgs/msg/TrafficLightArray", Qos.SENSOR, rate, privileged=True,
              description="traffic light states and stop lines"),
        Topic(EPISODE_RESULT, "std_msgs/msg/String", Qos.LATCHED, None, stamped=False,
              description="the referee's result (JSON), at the end of the episode"),
    ]
    rows.append(Topic(IMU, "sensor_msgs/msg/Imu", Qos.SENSOR, rate, description="base_link"))
    rows.append(Topic(GNSS, "sensor_msgs/msg/NavSatFix", Qos.SENSOR, rate, description="WGS84"))
    if suite.lidar is not None:
        rows.append(Topic(LIDAR, "sensor_msgs/msg/PointCloud2", Qos.SENSOR, rate,
                          description="x, y, z, intensity, ObjTag (semantic class); lidar frame"))
    for camera in suite.cameras:
        for kind in camera.kinds:
            sensor = camera_sensor_id(camera.name, kind)
            rows.append(Topic(camera_image_topic(camera.name, kind), "sensor_msgs/msg/Image", Qos.SENSOR, rate,
                              description=f"{sensor}: {CAMERA_PASSES[kind][1]}"))
            rows.append(Topic(camera_info_topic(camera.name, kind), "sensor_msgs/msg/CameraInfo", Qos.SENSOR,
                              rate, description=f"{sensor} intrinsics"))
    if suite.ground_truth:
        rows.append(Topic(BOXES_3D, "drivestack_msgs/msg/LabeledBox3DArray", Qos.SENSOR, rate, privileged=True,
                          description="3D boxes in base_link"))
        rows.append(Topic(LANES, "drivestack_msgs/msg/LaneArray", Qos.SENSOR, rate, privileged=True,
                          description="lane boundaries in base_link, projected into each camera"))
        for camera in suite.cameras:
            rows.append(Topic(boxes_2d_topic(camera.name), "drivestack_msgs/msg/LabeledBox2DArray", Qos.SENSOR,
                              rate, privileged=True, description=f"2D boxes in {camera.name}"))
    return tuple(rows)


def recorded_topics(table: tuple[Topic, ...]) -> tuple[Topic, ...]:
    return tuple(t for t in table if t.recorded)


def markdown_table(table: tuple[Topic, ...]) -> str:
    """The table as README markdown (tests keep README's copy equal to this)."""
    lines = ["| topic | type | rate | QoS | recorded | ground truth | what |", "|---|---|---|---|---|---|---|"]
    for t in table:
        rate = f"{t.rate_hz:g} Hz" if t.rate_hz else "event" if t.qos != Qos.LATCHED else "once"
        lines.append(f"| `{t.name}` | {t.msgtype} | {rate} | {t.qos.value} | {'yes' if t.recorded else 'no'} | "
                     f"{'yes' if t.privileged else ''} | {t.description} |")
    return "\n".join(lines)


def readme_table() -> str:
    """The topics of the `full` sensor suite at 20 Hz, as README shows them."""
    from sim.sensors.suite import load_suite
    return markdown_table(topic_table(load_suite("full"), 0.05))


if __name__ == "__main__":
    print(readme_table())
