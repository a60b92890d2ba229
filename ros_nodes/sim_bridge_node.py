"""sim_bridge: owns a simulator backend and runs one episode through the ROS 2 graph.

Lockstep, as CARLA's synchronous mode: the bridge publishes ``/clock`` and every
sensor and ground-truth message of frame k, then waits for the control whose
``header.stamp`` is frame k's before it steps. A control that does not come within
``control_timeout_s`` (wall time) or that carries NaN is a fault: logged, counted, and
the car brakes for that step. With ``autopilot:=true`` the expert drives inside the
bridge (CARLA's autopilot) for data collection, its control published on the control
topic as an agent's would be. With ``perception:=true`` /
``lidar_obstacles:=true`` those nodes are part of the loop: the bridge waits for them at
start-up and, before it steps, for their outputs stamped with the frame
(ros_nodes.topics.perception_topics), so every frame is perceived and recorded however
slow the models are; an output missing after ``control_timeout_s`` is logged and
counted (``extra.perception_timeouts``), not a fault: the planner waits for them itself.
The route goes out latched on ``/drivestack/route`` unless ``publish_route:=false`` (the
mission node plans and publishes it then). With ``video:=FILE`` the bridge writes the
episode's MP4 (``sim.video.VideoObserver``: front camera with label overlays beside a
bird's-eye view); the camera and labels the video adds are rendered for it only, never
published, so the graph and the bag are those of the same run without a video. The
referee scores the episode; at the end its result goes out on
``/drivestack/episode/result`` and into ``out``.

Run: ``python -m ros_nodes.sim_bridge_node --ros-args -p scenario:=default -p autopilot:=true``
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from drivestack.schema import EpisodeStatus, Observation, VehicleControl
from ros_nodes import topics
from ros_nodes.convert_sensors import MessageError, msg_class, stamp_ns_of, time_msg
from ros_nodes.convert_world import control_msg, route_msg, vehicle_control
from ros_nodes.frame_messages import observation_messages
from ros_nodes.graph import Publishers, qos_profile, rclpy_class, subscribe, watch_ready
from ros_nodes.scenario_params import declare_scenario_parameters, scenario_from_params
from ros_nodes.topics import Topic
from ros_nodes.typestore import cdr_stamp_ns
from sim.episode import Referee
from sim.protocol import SimulatorError

log = logging.getLogger(__name__)

BRAKE = VehicleControl(throttle=0.0, steer=0.0, brake=1.0)


class SimBridge(Node):
    def __init__(self) -> None:
        super().__init__("sim_bridge")
        p = declare_scenario_parameters(self)
        p.update({name: self.declare_parameter(name, default).value for name, default in (
            ("autopilot", False), ("control_timeout_s", 2.0), ("max_consecutive_faults", 40),
            ("startup_timeout_s", 60.0), ("perception", False), ("lidar_obstacles", False),
            ("wait_for_nodes", [""]), ("out", ""), ("publish_route", True), ("video", ""),
            ("sim", "builtin"), ("carla_host", "127.0.0.1"), ("carla_port", 2000), ("carla_tm_port", 8000),
            ("carla_timeout_s", 10.0))})
        self.params = p
        self.scenario = scenario_from_params(p)
        self.published_sensors = self.scenario.sensors  # what the graph sees, with or without a video
        if p["video"]:
            self.scenario = _with_video_camera(self.scenario)
        self.control_timeout_s = float(p["control_timeout_s"])
        self.faults = 0
        self.consecutive_faults = 0
        self.frames_published = 0
        from sim.backends import make_simulator
        self.sim = make_simulator(p["sim"], host=p["carla_host"], port=int(p["carla_port"]),
                                  traffic_manager_port=int(p["carla_tm_port"]), timeout_s=float(p["carla_timeout_s"]))
        self.table = topics.topic_table(self.published_sensors, self.sim.dt_s)
        self.pubs = Publishers(self, [t for t in self.table if p["publish_route"] or t.name != topics.ROUTE])
        self.controls: dict[int, object] = {}
        self.ready_nodes: dict[str, tuple[str, ...]] = {}
        self.control_sub = subscribe(self, _table_topic(self.table, topics.CONTROL), self._on_control)
        self.perceived: dict[str, set[int]] = {}  # output topic -> stamps answered
        self.perception_timeouts = 0
        for topic in self._perception_outputs():
            self.perceived[topic.name] = set()
            self.create_subscription(rclpy_class(topic.msgtype), topic.name,
                                     lambda data, name=topic.name: self.perceived[name].add(cdr_stamp_ns(data)),
                                     qos_profile(topic.qos), raw=True)
        watch_ready(self, self.ready_nodes)

    def _perception_outputs(self) -> list[Topic]:
        """The outputs of the perception nodes in the loop (only the stamps are read)."""
        outputs = topics.perception_topics(self.published_sensors, self.sim.dt_s)
        chosen = []
        for node, wanted in (("perception", [t for t in outputs if t.name != topics.OBSTACLES]),
                             ("lidar_obstacles", [t for t in outputs if t.name == topics.OBSTACLES])):
            if self.params[node] and not wanted:
                raise ValueError(f"{node}:=true but the sensor suite has no "
                                 f"{'front RGB camera' if node == 'perception' else 'LiDAR'} for it")
            chosen += wanted if self.params[node] else []
        return chosen

    # -- callbacks -------------------------------------------------------------------------

    def _on_control(self, msg) -> None:
        if not self.params["autopilot"]:  # with the autopilot these are the bridge's own
            self.controls[stamp_ns_of(msg.header.stamp)] = msg

    # -- the episode -----------------------------------------------------------------------

    def run(self) -> int:
        obs = self.sim.reset(self.scenario)
        self.pubs.publish(topics.MAP, msg_class("std_msgs/msg/String")(data=self.sim.road_map.xodr_text))
        if self.params["publish_route"]:
            self.pubs.publish(topics.ROUTE, route_msg(self.sim.route, obs.stamp_ns))
        video = self._start_video()
        try:
            if not self._wait_for_graph():
                return 1
            return self._episode(obs, video)
        finally:
            if video is not None:
                video.finish()

    def _episode(self, obs: Observation, video) -> int:
        referee = Referee(self.sim, self.scenario, obs)
        if video is not None:
            video.observe(obs)
        expert = self._autopilot() if self.params["autopilot"] else None
        status = None
        while not referee.done and rclpy.ok():
            self._publish_frame(obs)
            if expert is not None:
                control = expert.run_step(obs)
                # On the control topic like an agent's, so the bag holds the demonstration.
                self.pubs.publish(topics.CONTROL, control_msg(control, obs.stamp_ns))
            else:
                control = self._await_control(obs.stamp_ns)
            self._await_perception(obs.stamp_ns)
            if self.consecutive_faults > self.params["max_consecutive_faults"]:
                self.get_logger().error(f"no valid control for {self.consecutive_faults} frames in a row: the "
                                        f"agent died or hangs; episode aborted at t={obs.stamp_ns * 1e-9:.2f} s")
                status = EpisodeStatus.AGENT_CRASHED
                break
            try:
                obs = self.sim.step(control)
            except SimulatorError as exc:
                self.get_logger().error(f"simulator failed at t={obs.stamp_ns * 1e-9:.2f} s: {exc}")
                status = EpisodeStatus.SIMULATION_ERROR
                break
            referee.update(obs)
            if video is not None:
                video.observe(obs)
        if not rclpy.ok():  # Ctrl-C or SIGTERM: the graph is going away, no result
            self.sim.close()
            return 130
        self._publish_frame(obs)
        self._await_perception(obs.stamp_ns)
        run = referee.finish(status)
        self._publish_result(run)
        self.sim.close()
        return 0

    def _start_video(self):
        if not self.params["video"]:
            return None
        from sim.video import VideoError, VideoObserver
        video = VideoObserver(self.params["video"], self.sim.dt_s)
        try:
            video.start(self.sim.road_map, self.sim.route)
        except VideoError as exc:
            raise ValueError(str(exc)) from None
        return video

    def _autopilot(self):
        from sim.expert import ExpertDriver
        return ExpertDriver(self.sim.road_map, self.sim.route, self.sim.vehicle, self.sim.dt_s)

    def _wait_for_graph(self) -> bool:
        """Wait until the named nodes are ready and every subscription is matched, so
        frame 0 reaches everyone (the recorder loses nothing)."""
        wanted = {name for name in self.params["wait_for_nodes"] if name}
        wanted |= {node for node in ("perception", "lidar_obstacles") if self.params[node]}
        deadline = time.monotonic() + float(self.params["startup_timeout_s"])
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.05)
            has_driver = self.params["autopilot"] or self.control_sub.get_publisher_count() > 0
            if wanted <= self.ready_nodes.keys() and has_driver and self.pubs.matched(self, self.ready_nodes):
                self.get_logger().info(f"graph ready ({', '.join(sorted(wanted)) or 'no other nodes'})")
                return True
        missing = sorted(wanted - self.ready_nodes.keys())
        self.get_logger().error(f"no episode: node(s) {', '.join(missing) or '(subscriptions)'} not ready after "
                                f"{self.params['startup_timeout_s']} s")
        return False

    def _publish_frame(self, obs: Observation) -> None:
        self.frames_published += 1
        clock = msg_class("rosgraph_msgs/msg/Clock")(clock=time_msg(obs.stamp_ns))
        self.pubs.publish(topics.CLOCK, clock)
        if obs.ground_truth is not None and not self.published_sensors.ground_truth:
            obs = replace(obs, ground_truth=None)  # rendered for the video's overlays only
        for topic, msg in observation_messages(obs, self.published_sensors):
            self.pubs.publish(topic, msg)

    def _await_control(self, stamp_ns: int) -> VehicleControl:
        # Frame 0 also waits for the agent to build its map: the start-up allowance.
        timeout_s = self.control_timeout_s if self.frames_published > 1 else float(self.params["startup_timeout_s"])
        deadline = time.monotonic() + timeout_s
        while stamp_ns not in self.controls:
            remaining = deadline - time.monotonic()
            if remaining <= 0.0 or not rclpy.ok():
                return self._fault(stamp_ns, f"no control within {timeout_s} s")
            rclpy.spin_once(self, timeout_sec=min(remaining, 0.1))
        msg = self.controls.pop(stamp_ns)
        for stale in [k for k in self.controls if k < stamp_ns]:
            del self.controls[stale]
        try:
            control = vehicle_control(msg)
        except MessageError as exc:
            return self._fault(stamp_ns, str(exc))
        self.consecutive_faults = 0
        return control

    def _await_perception(self, stamp_ns: int) -> None:
        """Until every perception output of the frame is in (frame 0: the start-up allowance)."""
        if not self.perceived:
            return
        timeout_s = self.control_timeout_s if self.frames_published > 1 else float(self.params["startup_timeout_s"])
        deadline = time.monotonic() + timeout_s
        while missing := [name for name, stamps in self.perceived.items() if stamp_ns not in stamps]:
            if time.monotonic() >= deadline or not rclpy.ok():
                self.perception_timeouts += 1
                self.get_logger().warning(f"no {', '.join(missing)} for t={stamp_ns * 1e-9:.2f} s within "
                                          f"{timeout_s} s; stepping on")
                break
            rclpy.spin_once(self, timeout_sec=0.05)
        for stamps in self.perceived.values():
            stamps.difference_update([k for k in stamps if k <= stamp_ns])

    def _fault(self, stamp_ns: int, reason: str) -> VehicleControl:
        self.faults += 1
        self.consecutive_faults += 1
        self.get_logger().error(f"control fault #{self.faults} at t={stamp_ns * 1e-9:.2f} s: {reason}; braking")
        return BRAKE

    def _publish_result(self, run) -> None:
        from sim.driving_score import global_score, results_to_json
        # The loop's speed: simulated steps per wall second, from the referee's real-time factor.
        steps_per_s = 1.0 / (run.real_time_factor * self.sim.dt_s)
        perceived = {"perception_timeouts": self.perception_timeouts} if self.perceived else {}
        result = replace(run.result, extra={**run.result.extra, "control_faults": self.faults,
                                            "frames_published": self.frames_published, **perceived,
                                            "steps_per_s": round(steps_per_s, 2)})
        payload = results_to_json([result], global_score([result]))
        self.pubs.publish(topics.EPISODE_RESULT, msg_class("std_msgs/msg/String")(data=json.dumps(payload)))
        self.get_logger().info(f"episode done: DS {result.driving_score:.2f}, RC {result.route_completion_pct:.1f} %, "
                               f"{len(result.infractions)} infractions, {self.faults} control faults, "
                               f"trajectory {result.trajectory_digest}")
        if self.params["out"]:
            from sim.birdseye import save_birdseye
            out = Path(self.params["out"])
            out.mkdir(parents=True, exist_ok=True)
            save_birdseye(out / f"{self.scenario.name}_seed{self.scenario.seed}.png", run.road_map, run.route,
                          run.trajectory, result)
            (out / "results.json").write_text(json.dumps(payload, indent=2))
        if not self.pubs.wait_for_all_acked(5.0):
            self.get_logger().warning("some subscribers did not acknowledge the last messages within 5 s")


def _with_video_camera(scenario):
    """The scenario with a front RGB camera (the suite's own if it has one) and labels
    for the video's overlays, as ``drivestack drive --video`` renders in-process."""
    from sim.sensors.suite import load_suite
    sensors = scenario.sensors.with_camera(load_suite("front_rgb").cameras[0])
    return replace(scenario, sensors=replace(sensors, ground_truth=True))


def _table_topic(table, name: str) -> Topic:
    return next(t for t in table if t.name == name)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = SimBridge()
    except (ValueError, OSError, SimulatorError) as exc:  # scenario, sensors, map, CARLA server: the user's input
        print(f"error: sim_bridge: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        return node.run()
    except (ValueError, SimulatorError) as exc:  # ScenarioError, MapError, CARLA: found loading the episode
        print(f"error: sim_bridge: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    except Exception:
        if rclpy.ok():
            raise
        return 130  # the signal landed inside rclpy (RCLError on the dead context)
    finally:
        node.sim.close()  # a CARLA server gets its actors destroyed and its settings back
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
